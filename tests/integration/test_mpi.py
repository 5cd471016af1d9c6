"""Stage 1 across processes (MPI, train/dist.h; worker/mpijob.h), on loopback with 2 ranks.

- `mpirun -np 2 gplq quantize` (2 ranks x 1 thread) ends stage 1 within 0.2 point of one
  process (and stage 2 within a point), and its artifacts (written by rank 0) reload to
  the accuracy measured across the ranks;
- gplqd with mpi_launch runs a job that asks for "mpi" through the launcher; a rank killed with
  SIGKILL mid stage 1 fails the attempt, and the retry resumes from the last checkpoint and
  succeeds; a cancel stops every rank; without mpi_launch such a job fails and says why.
The equivalence of one step's gradients and the resume across rank counts are
tests/test_dist.c's.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import BUILD, DEMO_MODEL, Daemon, run_tests  # noqa: E402
from jobs_common import ARTIFACTS, RESUMABLE, TINY, upload_demo, wait_stage1_step  # noqa: E402

GPLQ = os.path.join(BUILD, "gplq")
# As root mpirun refuses to start without --allow-run-as-root; 2 ranks on a machine of fewer
# free cores need --oversubscribe. One thread per rank. Under make san, Open MPI's allocations
# that outlive MPI_Finalize are not the ranks' leaks.
MPIRUN = (["mpirun"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
          + ["--oversubscribe", "-x", "OMP_NUM_THREADS=1", "-x", "ASAN_OPTIONS=detect_leaks=0"])
LAUNCH = " ".join(MPIRUN + ["-np", "2"])

# A short stage 1: 8 steps of 128 on 1024 images, the accuracies on 2000 test images.
QUANT = ["--train-subset", "1024", "--eval-subset", "2000", "--batch-size", "128",
         "--pca-samples", "1024", "--calib-images", "128", "--qwt-images", "128",
         "--no-baselines", "--no-ort", "--json"]


def quantize(prefix, threads, out):
    cmd = prefix + [GPLQ, "quantize", "--model", DEMO_MODEL, "--threads", str(threads),
                    "--out", out] + QUANT
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=1800)
    assert p.returncode == 0, (cmd, p.stderr.decode()[-3000:])
    return json.loads(p.stdout.decode()), time.time() - t0


def test_quantize_two_ranks_within_0_2_point_of_one_process():
    with tempfile.TemporaryDirectory() as tmp:
        # one thread each way: the accuracy does not depend on it, and on a busy machine two
        # spinning OpenMP threads of one process can take many times as long
        one, t1 = quantize([], 1, os.path.join(tmp, "one"))
        two, t2 = quantize(MPIRUN + ["-np", "2"], 1, os.path.join(tmp, "two"))
        a1, a2 = one["accuracy"], two["accuracy"]
        print("  1 process x 1 thread (%.0f s): %s" % (t1, json.dumps(a1, sort_keys=True)))
        print("  2 ranks x 1 thread    (%.0f s): %s" % (t2, json.dumps(a2, sort_keys=True)))
        assert a1["fp32"] == a2["fp32"], (a1, a2)  # no training: the same images, the same count
        # stage 1, what runs data-parallel: within 0.2 point (measured: 89.90% vs 89.80%)
        assert abs(a1["stage1"] - a2["stage1"]) <= 0.002 + 1e-9, (a1, a2)
        # stage 2 rounds the weights to 4 bits and fits QwT on 128 images: it carries stage
        # 1's last-bit differences further (measured: 89.75/89.60% without QwT, 88.90/89.30%
        # with), so a point, not 0.2
        for k in ("stage2_noqwt", "gplq"):
            assert abs(a1[k] - a2[k]) <= 0.01 + 1e-9, (k, a1[k], a2[k])
        # rank 0 wrote the artifacts, and they reload to what the ranks measured together
        for name in ("model.q.safetensors", "model.fakequant.safetensors", "report.json"):
            assert os.path.getsize(os.path.join(tmp, "two", name)) > 0, name
        with open(os.path.join(tmp, "two", "report.json")) as f:
            assert json.load(f)["accuracy"]["gplq"] == a2["gplq"]


def rank_pids(job_id):
    """{rank: pid} of the `gplq-worker mpi-rank` processes of the job (their run file is in
    the job's folder; the rank from the environment mpirun gave them)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            if b"mpi-rank" not in argv or not any(job_id.encode() in a for a in argv):
                continue
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
            if b"OMPI_COMM_WORLD_RANK" in env:  # not mpirun itself, whose argv is the same
                out[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
        except (OSError, ValueError):
            continue
    return out


def test_service_rank_killed_mid_stage1_retries_and_completes():
    # a lease long enough that a busy machine does not lose it on top of the kill (the
    # worker gives the job back itself when the launcher ends)
    with Daemon(workers=1, args=["--lease-ms", "15000", "--mpi-launch", LAUNCH]) as d:
        mid = upload_demo(d)
        j = d.create_job(mid, mpi=True, **RESUMABLE).json()
        assert j["spec"]["mpi"] is True, j
        wait_stage1_step(d, j["id"], 6, timeout=600)  # past the checkpoint at step 4
        ranks = d.wait_for(lambda: rank_pids(j["id"]) if len(rank_pids(j["id"])) == 2 else None,
                           timeout=30, what="two ranks")
        os.kill(ranks[1], signal.SIGKILL)
        job = d.wait_for_state(j["id"], ["succeeded", "failed", "canceled"], timeout=1800)
        assert job["state"] == "succeeded", job
        # 2; a third only if the lease expired under load (seen once at a load average of 38)
        assert job["attempts"] >= 2, job
        lines = [l for l in d.log_lines() if l.get("job") == j["id"]]
        msgs = [str(l.get("msg")) for l in lines]
        assert any("MPI run died" in m for m in msgs), msgs
        assert any("resuming stage 1" in m for m in msgs), msgs
        assert sum("stage 1 across processes" in m for m in msgs) == 2, msgs
        for k in ("fp32", "stage1", "stage2_noqwt", "gplq"):
            assert 0 < job["metrics"][k] <= 1, job["metrics"]
        arts = d.get("/v1/jobs/%s/artifacts" % j["id"]).json()["artifacts"]
        assert sorted(a["name"] for a in arts) == sorted(ARTIFACTS), arts
        assert not os.path.exists(os.path.join(d.data_dir, "jobs", j["id"], "stage1.state"))
        assert not rank_pids(j["id"])


def test_service_cancel_stops_every_rank():
    with Daemon(workers=1, args=["--mpi-launch", LAUNCH]) as d:
        mid = upload_demo(d)
        j = d.create_job(mid, mpi=True, **RESUMABLE).json()
        wait_stage1_step(d, j["id"], 2, timeout=600)
        assert d.post("/v1/jobs/%s/cancel" % j["id"]).status == 200
        t0 = time.time()
        job = d.wait_for_state(j["id"], ["canceled", "succeeded", "failed"], timeout=60)
        assert job["state"] == "canceled", job
        print("  canceled %.1f s after the request" % (time.time() - t0))
        d.wait_for(lambda: not rank_pids(j["id"]), timeout=30, what="the ranks to end")


def test_service_mpi_job_without_launcher_fails_and_says_why():
    with Daemon(workers=1) as d:
        mid = upload_demo(d)
        j = d.create_job(mid, mpi=True, **TINY).json()
        job = d.wait_for_state(j["id"], ["succeeded", "failed"], timeout=120)
        assert job["state"] == "failed" and "mpi_launch" in job["error"], job


if __name__ == "__main__":
    run_tests(globals())
