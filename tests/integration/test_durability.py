"""What happens to jobs when processes die, done for real against gplqd and its workers.

Every job here runs the real GPLQ pipeline on the committed demo model and Fashion-MNIST, on
training subsets small enough for CI: SIGKILL a worker in the middle of stage 1 (the job must
resume from its checkpoint and end with the very same model as an uninterrupted run), run out
of attempts, twenty jobs on two workers (each runs once), SIGKILL the daemon while a job runs.
(The jobs themselves, end to end: test_jobs.py.)
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import Daemon, run_tests  # noqa: E402
from jobs_common import MANY_SMALL, RESUMABLE, claims, tensor_bytes, upload_demo, wait_stage1_step, worker_pid  # noqa: E402

def test_worker_killed_mid_stage1_resumes_to_the_same_model():
    with Daemon(workers=1, args=["--lease-ms", "3000"]) as d:
        mid = upload_demo(d)
        # the reference: the same spec, uninterrupted
        ref = d.wait_for_state(d.create_job(mid, **RESUMABLE).json()["id"], ["succeeded", "failed"])
        assert ref["state"] == "succeeded", ref

        j = d.create_job(mid, **RESUMABLE).json()
        wait_stage1_step(d, j["id"], 6)  # past the checkpoint at step 4
        os.kill(worker_pid(d), signal.SIGKILL)
        job = d.wait_for_state(j["id"], ["succeeded", "failed"], timeout=600)
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 2, job
        resumed = [l for l in d.log_lines() if l.get("job") == j["id"]
                   and "resuming stage 1" in str(l.get("msg"))]
        assert resumed, "the second attempt did not resume from the checkpoint"
        assert job["metrics"] == ref["metrics"], (job["metrics"], ref["metrics"])
        a = d.get("/v1/jobs/%s/artifacts/model.q.safetensors" % ref["id"]).body
        b = d.get("/v1/jobs/%s/artifacts/model.q.safetensors" % j["id"]).body
        ha, ta = tensor_bytes(a)
        hb, tb = tensor_bytes(b)
        assert ta == tb, "the resumed job's quantized model differs from the uninterrupted one"
        assert not os.path.exists(os.path.join(d.data_dir, "jobs", j["id"], "stage1.state"))


def test_a_job_whose_worker_keeps_dying_fails_after_max_attempts():
    with Daemon(workers=1, args=["--lease-ms", "3000"]) as d:
        mid = upload_demo(d)
        j = d.create_job(mid, max_attempts=2, **RESUMABLE).json()
        for attempt in (1, 2):
            wait_stage1_step(d, j["id"], 2)
            assert d.job(j["id"])["attempts"] == attempt
            os.kill(worker_pid(d), signal.SIGKILL)
            if attempt == 1:  # wait until the next incarnation has taken it again
                d.wait_for(lambda: d.job(j["id"])["attempts"] == 2, timeout=60, what="the retry")
        job = d.wait_for_state(j["id"], ["failed", "succeeded"], timeout=60)
        assert job["state"] == "failed", job
        assert "2 attempts" in job["error"], job["error"]


def test_twenty_jobs_two_workers_each_runs_once():
    with Daemon(workers=2) as d:
        mid = upload_demo(d)
        ids = [d.create_job(mid, seed=i, **MANY_SMALL).json()["id"] for i in range(20)]
        jobs = [d.wait_for_state(i, ["succeeded", "failed", "canceled"], timeout=900) for i in ids]
        assert all(j["state"] == "succeeded" and j["attempts"] == 1 for j in jobs), \
            [(j["id"], j["state"], j["attempts"], j["error"]) for j in jobs]
        c = claims(d)
        assert all(c.get(i) == 1 for i in ids), c
        # both workers took part
        workers = {l["worker"] for l in d.log_lines()
                   if l.get("source") == "worker" and str(l.get("msg", "")).startswith("claimed")}
        assert len(workers) == 2, workers


def test_daemon_killed_while_a_job_runs_then_restarted():
    with Daemon(workers=1) as d:
        mid = upload_demo(d)
        j = d.create_job(mid, **RESUMABLE).json()
        wait_stage1_step(d, j["id"], 6)
        pid = worker_pid(d)
        d.kill()  # SIGKILL: no goodbye; the worker hears of it (parent-death signal)
        deadline = time.time() + 30
        while os.path.exists("/proc/%d" % pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not os.path.exists("/proc/%d" % pid), "the orphaned worker kept running"
        d.restart(workers=1)
        job = d.wait_for_state(j["id"], ["succeeded", "failed"], timeout=600)
        assert job["state"] == "succeeded", job
        assert any("resuming stage 1" in str(l.get("msg")) for l in d.log_lines()
                   if l.get("job") == j["id"]), "did not resume from the checkpoint"


if __name__ == "__main__":
    run_tests(globals())
