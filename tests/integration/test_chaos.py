"""Chaos: processes killed at random moments, and many clients at once, against a real gplqd.

  - SIGKILLs of the worker that runs one job, at random moments spread over every phase of the
    job (FP32 evaluation, the baselines when the job has them, stage 1, stage 2, the
    evaluations, artifact writing): the job ends succeeded with the artifacts of an
    uninterrupted run of the same spec, bit for bit (tensors, and the metadata and report
    except what names the job or measures time).
  - SIGKILLs of gplqd while jobs are queued or running, restarted each time on the same data
    dir: every job ends succeeded, and succeeded exactly once (its events say so).
  - Many keep-alive clients (wrk) on a mix of routes: no error of any kind, p50 and p99, and
    gplqd's RSS before, right after and 10 s after.

Short by default, for CI: 6 worker kills over a small job, 3 gplqd kills over 6 jobs, 200
clients for 5 s. GPLQ_CHAOS=long (make chaos): 20 worker kills over a default job on a 2048-image
training subset, 10 gplqd kills over 20 jobs, 1000 clients for 30 s.

The kill moments come from a seeded generator: the seed is printed first, and GPLQ_CHAOS_SEED=N
replays the same plan (the moments are relative to the phases, so a replay on a machine of
another speed kills at the same points of the job). Each kill is printed with where it landed.
(The single kills these repeat: test_durability.py.)
"""
import calendar
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import Daemon, run_tests  # noqa: E402
from jobs_common import TINY, claims, tensor_bytes, upload_demo  # noqa: E402

LONG = os.environ.get("GPLQ_CHAOS", "") == "long"
SEED = int(os.environ.get("GPLQ_CHAOS_SEED") or int.from_bytes(os.urandom(4), "little"))
print("chaos: %s variant, seed %d (replay: GPLQ_CHAOS_SEED=%d)"
      % ("long" if LONG else "short", SEED, SEED), flush=True)

if LONG:
    # A default job (baselines and all) on a training subset: 16 stage-1 steps of 128 images,
    # a checkpoint every 4 so that stage-1 kills resume from one.
    KILL_JOB = dict(train_subset=2048, eval_subset=1000, ckpt_every=4)
    WORKER_KILLS, DAEMON_KILLS, DAEMON_JOBS = 20, 10, 20
    LOAD_CONNECTIONS, LOAD_SECONDS = 1000, 30
else:
    # One kill in each of the five phases (no baselines here), every phase long enough to be
    # hit on 2 idle cores: 24 stage-1 steps, 1000 test images for each evaluation, 512 images
    # for stage 2. The ONNX files are written (and killed in) but not run by ONNX Runtime,
    # which would double the export's time; the long run does.
    KILL_JOB = dict(TINY, train_subset=1536, eval_subset=1000, pca_samples=256, calib_images=128,
                    qwt_images=512, ckpt_every=4, ort=False)
    WORKER_KILLS, DAEMON_KILLS, DAEMON_JOBS = 5, 3, 6
    LOAD_CONNECTIONS, LOAD_SECONDS = 200, 5
KILL_JOB["max_attempts"] = WORKER_KILLS + 10
# The gplqd-kill jobs: 8 stage-1 steps each with a checkpoint every 2.
SMALL_JOB = dict(TINY, train_subset=512, ckpt_every=2, ort=False)

# The parts of a job in the order it runs them: (stage, part) as its progress shows them.
SEGMENTS = [("calibrate", "load"), ("evaluate", "fp32"),
            ("calibrate", "minmax_baseline"), ("evaluate", "minmax_baseline"),
            ("calibrate", "ptq_baseline"), ("evaluate", "ptq_baseline"),
            ("stage1", "stage1"), ("evaluate", "stage1"), ("stage2", "stage2"),
            ("evaluate", "stage2_noqwt"), ("evaluate", "gplq"), ("export", "artifacts"),
            ("export", "onnx")]
STAGE1 = SEGMENTS.index(("stage1", "stage1"))
# Which phase gets a kill that does not divide evenly, first to last.
EXTRA_ORDER = ["stage1", "export", "evaluation", "stage2", "fp32", "baselines"]
TERMINAL = ("succeeded", "failed", "canceled")


def phase_of(seg):
    stage, part = seg
    if seg == ("calibrate", "load"):
        return "load"
    if part.endswith("_baseline"):
        return "baselines"
    if stage == "evaluate":
        return "fp32" if part == "fp32" else "evaluation"
    return stage  # stage1, stage2, export


def segment(progress):
    """The index in SEGMENTS of a job's progress (None if it has none)."""
    if not progress or "stage" not in progress:
        return None
    seg = (progress["stage"], progress.get("part"))
    assert seg in SEGMENTS, "a part this test does not know: %s" % (seg,)
    return SEGMENTS.index(seg)


def pid_dead(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def wait_dead(pid, timeout=30):
    deadline = time.time() + timeout
    while not pid_dead(pid):
        assert time.time() < deadline, "pid %d still alive %d s after SIGKILL" % (pid, timeout)
        time.sleep(0.005)


# ---------------------------------------------------------------- worker kills

def timeline(d, job_id, timeout):
    """Follows a job to its end; returns (job, ref) with ref: seconds each segment took
    (SEGMENTS index -> s) and, for stage 1, the seconds before its first step (prelude), of its
    steps (train) and their number (steps)."""
    first, t_step1, steps = {}, None, 0
    deadline = time.time() + timeout
    while True:
        j = d.job(job_id)
        now = time.time()
        i = segment(j.get("progress"))
        if i is not None and i not in first:
            first[i] = now
        if i == STAGE1 and j["progress"].get("step", 0) > 0 and t_step1 is None:
            t_step1 = now
            steps = j["progress"]["total"]
        if j["state"] in TERMINAL:
            break
        assert now < deadline, "job %s did not end within %d s" % (job_id, timeout)
        time.sleep(0.02)
    order = sorted(first, key=first.get)
    ends = [first[k] for k in order[1:]] + [now]
    ref = {"seconds": {k: e - first[k] for k, e in zip(order, ends)}}
    if STAGE1 in first and t_step1:
        ref["prelude"] = t_step1 - first[STAGE1]
        ref["train"] = ref["seconds"][STAGE1] - ref["prelude"]
        ref["steps"] = steps
    return j, ref


def plan_kills(rng, n, ref):
    """n kills, spread evenly over the phases the reference run went through (the load does not
    count), each at a random point of a random part of its phase (weighted by the part's time),
    in the order the job reaches them. A kill: (segment index, u in [0, 1))."""
    secs = ref["seconds"]
    phases = []
    for i in sorted(secs):
        ph = phase_of(SEGMENTS[i])
        if ph != "load" and ph not in phases:
            phases.append(ph)
    quota = {ph: n // len(phases) for ph in phases}
    for ph in [p for p in EXTRA_ORDER if p in phases][:n - sum(quota.values())]:
        quota[ph] += 1
    kills = []
    for ph in phases:
        segs = [i for i in sorted(secs) if phase_of(SEGMENTS[i]) == ph]
        for _ in range(quota[ph]):
            i = rng.choices(segs, weights=[max(secs[s], 1e-3) for s in segs])[0]
            # Stage 1 is aimed by its steps (kill_at), the other parts by a share of their
            # reference seconds, which an attempt can beat: a 3.0 s evaluation aimed at 0.78
            # was over in 2.3 s and the kill landed in stage 1. At most half leaves room.
            kills.append((i, rng.uniform(0.05, 0.8 if i == STAGE1 else 0.5)))
    kills.sort()
    return kills


def job_worker_pid(d, job_id, attempt):
    """The pid of the worker running the job's attempt-th attempt (from its "claimed" line)."""
    def find():
        names = [l["worker"] for l in d.log_lines() if l.get("source") == "worker"
                 and l.get("job") == job_id and str(l.get("msg", "")).startswith("claimed")]
        if len(names) < attempt:
            return None
        for w in d.get("/v1/health").json()["workers"]:
            if w["name"] == names[attempt - 1] and w["alive"]:
                return w["pid"]
        return None
    return d.wait_for(find, timeout=60, poll=0.02, what="the worker of attempt %d" % attempt)


def kill_at(d, job_id, attempt, stale, kill, ref):
    """Waits for attempt `attempt` of the job to reach the kill's part, waits the kill's share of
    the part's reference time (stage 1: of its prelude and steps, in steps once they run), and
    SIGKILLs the job's worker. Returns (the progress the kill found, what the next attempt's
    must differ from, seconds waited in the part)."""
    seg, u = kill
    pid = None
    while True:
        j = d.job(job_id)
        assert j["state"] in ("queued", "running"), \
            "job %s ended (%s) before kill %s: %s" % (job_id, j["state"], kill, j["error"])
        p = j.get("progress")
        # the attempt's own progress: the row keeps the killed attempt's until the next writes
        if j["attempts"] == attempt and j["state"] == "running" and p and p != stale:
            if pid is None:
                pid = job_worker_pid(d, job_id, attempt)
            if segment(p) >= seg:
                break
        time.sleep(0.02)
    t0 = time.time()
    if segment(p) == seg and seg == STAGE1 and "steps" in ref:
        x = u * (ref["prelude"] + ref["train"])
        if x < ref["prelude"]:
            time.sleep(x)
        else:  # the step that point falls in (a resumed attempt may already be past it)
            step = max(1, math.ceil((x - ref["prelude"]) / ref["train"] * ref["steps"]))
            while True:
                p = d.job(job_id).get("progress") or {}
                if segment(p) != STAGE1 or p.get("step", 0) >= step:
                    break
                time.sleep(0.02)
    elif segment(p) == seg:
        time.sleep(u * ref["seconds"][seg])
    before = d.job(job_id).get("progress")
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)
    waited = time.time() - t0
    # The dead worker writes no more: the row is its last word, unless the other worker has
    # already claimed the job and written its first part (the load), a few ms after the kill.
    after = d.job(job_id).get("progress")
    if segment(after) not in (None, 0):
        return after, after, waited
    return before, {"none": "the next attempt has begun"}, waited


def artifact_files(d, job_id):
    names = sorted(a["name"] for a in d.get("/v1/jobs/%s/artifacts" % job_id).json()["artifacts"])
    return {n: d.get("/v1/jobs/%s/artifacts/%s" % (job_id, n)).body for n in names}


def without_job(obj):
    """A report or a gplq_config without what names the job or measures time or memory."""
    obj = json.loads(json.dumps(obj))
    for k in ("timings_s", "peak_rss_mb", "peak_rss_mb_by_phase"):
        obj.pop(k, None)
    cfg = obj.get("config", obj)
    cfg.pop("job_id", None)
    return obj


def safetensors_comparable(blob):
    header, data = tensor_bytes(blob)
    meta = header.get("__metadata__", {})
    if "gplq_config" in meta:
        meta["gplq_config"] = without_job(json.loads(meta["gplq_config"]))
    return header, data


def assert_same_artifacts(d, ref_id, job_id):
    a, b = artifact_files(d, ref_id), artifact_files(d, job_id)
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    for name in a:
        if name.endswith(".safetensors"):
            (ha, ta), (hb, tb) = safetensors_comparable(a[name]), safetensors_comparable(b[name])
            assert ta == tb, "%s: the tensors differ from the uninterrupted run's" % name
            assert ha == hb, "%s: the header differs: %s\n%s" % (name, ha, hb)
        elif name.endswith(".json"):
            ra, rb = without_job(json.loads(a[name])), without_job(json.loads(b[name]))
            assert ra == rb, "%s differs:\n%s\n%s" % (name, ra, rb)
        else:
            assert a[name] == b[name], name
    return sorted(a)


def test_worker_killed_in_every_phase_ends_with_the_same_artifacts():
    rng = random.Random(SEED)
    # Two workers: the one not killed takes the job at once, so the supervisor's restart
    # backoff of the killed one rarely holds it up. Both with the same threads, for the same
    # numbers in either.
    with Daemon(workers=2, args=["--worker-threads", "2"]) as d:
        mid = upload_demo(d)
        t0 = time.time()
        ref_job, ref = timeline(d, d.create_job(mid, **KILL_JOB).json()["id"], 3600)
        assert ref_job["state"] == "succeeded", ref_job
        print("  reference run: %.0f s; parts %s" % (time.time() - t0, ", ".join(
            "%s/%s %.1f s" % (SEGMENTS[i] + (s,)) for i, s in sorted(ref["seconds"].items()))),
            flush=True)
        plan = plan_kills(rng, WORKER_KILLS, ref)
        j = d.create_job(mid, **KILL_JOB).json()
        t0 = time.time()
        stale, landed = None, {}
        for k, kill in enumerate(plan):
            found, stale, waited = kill_at(d, j["id"], k + 1, stale, kill, ref)
            seg = SEGMENTS[segment(found)]
            ph = phase_of(seg)
            landed[ph] = landed.get(ph, 0) + 1
            print("  kill %2d: aimed at %s/%s (u %.2f), landed in %s/%s step %s/%s after %.2f s"
                  % (k + 1, SEGMENTS[kill[0]][0], SEGMENTS[kill[0]][1], kill[1], seg[0], seg[1],
                     found.get("step"), found.get("total"), waited), flush=True)
        job = d.wait_for_state(j["id"], TERMINAL, timeout=3600)
        print("  the killed job: %s after %d attempts, %.0f s; kills per phase: %s"
              % (job["state"], job["attempts"], time.time() - t0, landed), flush=True)
        assert job["state"] == "succeeded", job
        assert job["attempts"] == WORKER_KILLS + 1, job["attempts"]
        wanted = {phase_of(SEGMENTS[i]) for i in ref["seconds"]} - {"load"}
        assert wanted <= set(landed), "phases without a kill: %s" % (wanted - set(landed))
        assert claims(d)[j["id"]] == WORKER_KILLS + 1, claims(d)
        resumed = [l for l in d.log_lines() if l.get("job") == j["id"]
                   and "resuming stage 1" in str(l.get("msg"))]
        assert resumed, "no attempt resumed stage 1 from its checkpoint"
        assert job["metrics"] == ref_job["metrics"], (job["metrics"], ref_job["metrics"])
        names = assert_same_artifacts(d, ref_job["id"], j["id"])
        tmp = [f for f in d.files_under(os.path.join("jobs", j["id"])) if ".tmp" in f]
        print("  identical: %s (report.json without timings_s, the peaks and the job id); "
              "%d attempts resumed stage 1; temp files left by the kills: %d"
              % (", ".join(names), len(resumed), len(tmp)), flush=True)


# ---------------------------------------------------------------- gplqd kills

def worker_pids_of(data_dir):
    """Every gplq-worker process working in data_dir (whoever its parent)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"gplq-worker") and data_dir.encode() in argv \
                and not pid_dead(int(pid)):
            out.append(int(pid))
    return out


def iso_s(t):
    """Seconds since the epoch of an API time ("2026-01-02T03:04:05.678Z")."""
    return calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + t[19:-1])


def test_gplqd_killed_again_and_again_every_job_succeeds_once():
    rng = random.Random(SEED + 1)
    with Daemon(workers=2) as d:
        mid = upload_demo(d)
        ids = [d.create_job(mid, seed=i, **SMALL_JOB).json()["id"] for i in range(DAEMON_JOBS)]
        t0 = time.time()
        kills = 0
        for k in range(DAEMON_KILLS):
            # Spread over the whole run: kill k once k/K of the jobs (but two) have succeeded,
            # at a random point of a job's time after one runs in this incarnation.
            due = round(k * (DAEMON_JOBS - 2) / DAEMON_KILLS)
            d.wait_for(lambda: (lambda js: sum(j["state"] == "succeeded" for j in js) >= due and
                                any(j["state"] == "running" and j.get("progress") for j in js))(
                d.get("/v1/jobs?limit=100").json()["jobs"]), timeout=1800, poll=0.05,
                what="%d jobs done and one running" % due)
            done = [j for j in d.get("/v1/jobs?state=succeeded&limit=100").json()["jobs"]]
            took = [iso_s(j["finished_at"]) - iso_s(j["started_at"]) for j in done]
            # A random point of a job's time, but never past the last live job: on a loaded
            # machine the last ones can all end within the wait (CI saw it), and a kill after
            # the end tests nothing.
            end = time.time() + rng.uniform(0.1, 0.8) * (sum(took) / len(took) if took else 5.0)
            while True:
                js = d.get("/v1/jobs?limit=100").json()["jobs"]
                states = [j["state"] for j in js]
                left = sum(s not in TERMINAL for s in states)
                if time.time() >= end or left <= 1:
                    break
                time.sleep(0.05)
            if not left:
                print("  every job ended before gplqd kill %d: no more kills" % (k + 1), flush=True)
                break
            d.kill()
            kills += 1
            print("  gplqd kill %2d at %5.1f s: %d running (%s), %d queued, %d succeeded"
                  % (k + 1, time.time() - t0, states.count("running"),
                     ", ".join("%s/%s" % ((j.get("progress") or {}).get("stage"),
                                          (j.get("progress") or {}).get("part"))
                               for j in js if j["state"] == "running"),
                     states.count("queued"), states.count("succeeded")), flush=True)
            d.restart(workers=2)
        assert kills >= 1, "no gplqd kill found a job still live"
        jobs = [d.wait_for_state(i, TERMINAL, timeout=3600) for i in ids]
        bad = [(j["id"], j["state"], j["error"]) for j in jobs if j["state"] != "succeeded"]
        assert not bad, bad
        ran = {}
        for i in ids:
            events, ended, _ = d.events(i)
            assert ended
            states = [e["data"]["data"]["state"] for e in events if e["event"] == "state"]
            ran[i] = (states.count("running"), states.count("succeeded"))
        assert all(s == 1 for _, s in ran.values()), \
            "jobs that succeeded other than once: %s" % {i: s for i, (_, s) in ran.items() if s != 1}
        # the killed daemons' workers are all gone: only the running daemon's are left
        current = {w["pid"] for w in d.get("/v1/health").json()["workers"] if w["alive"]}
        left = set(worker_pids_of(d.data_dir)) - current
        assert not left, "workers of killed daemons still running: %s" % left
        print("  %d jobs succeeded, each once, in %.0f s with %d gplqd kills; %d claims in all "
              "(attempts %s)" % (len(ids), time.time() - t0, kills,
                                 sum(r for r, _ in ran.values()),
                                 sorted(j["attempts"] for j in jobs)), flush=True)


# ---------------------------------------------------------------- load

WRK_SCRIPT = r"""
-- Each connection cycles through the routes from a random start; statuses are counted per
-- thread and summed by done().
local paths = {%(paths)s}
local threads = {}
local i = 0
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  i = math.random(#paths)
  ok, bad = 0, 0
end
function request()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    b = b + t:get("bad")
  end
  io.write(string.format("STATUS ok=%%d bad=%%d\n", o, b))
end
"""


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return None


def ms(value, unit):
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def test_many_keep_alive_clients_no_errors():
    if not shutil.which("wrk"):
        raise AssertionError("wrk is missing (scripts/install-deps.sh --test)")
    # Each connection is a descriptor here (wrk) and in gplqd: the soft limit up to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cap = str(2 * LOAD_CONNECTIONS + 64)
    with Daemon(workers=0, args=["--max-connections", cap, "--max-connections-per-ip", cap]) as d:
        mid = upload_demo(d)
        jobs = [d.create_job(mid, seed=i, **TINY).json()["id"] for i in range(5)]
        paths = ["/v1/health", "/v1/jobs", "/v1/jobs/" + jobs[0], "/v1/jobs/" + jobs[-1],
                 "/metrics", "/v1/models"]
        tmp = tempfile.mkdtemp(prefix="gplq-chaos-")
        try:
            script = os.path.join(tmp, "mix.lua")
            with open(script, "w") as f:
                f.write(WRK_SCRIPT % {"paths": ", ".join('"%s"' % p for p in paths)})
            cmd = ["wrk", "-t2", "-c%d" % LOAD_CONNECTIONS, "-d%ds" % LOAD_SECONDS, "--latency",
                   "--timeout", "10s", "-s", script, "-H", "Authorization: Bearer " + d.token,
                   d.url]
            subprocess.run(cmd[:1] + ["-t1", "-c4", "-d1s"] + cmd[4:], capture_output=True,
                           timeout=60)  # warm-up
            pid = d.proc.pid
            before = rss_mb(pid)
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=LOAD_SECONDS + 120)
            after = rss_mb(pid)
            time.sleep(10)
            settled = rss_mb(pid)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        text = out.stdout + out.stderr
        assert out.returncode == 0, text
        n = int(re.search(r"(\d+) requests in", text).group(1))
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                           text)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        status = re.search(r"STATUS ok=(\d+) bad=(\d+)", text)
        lat = {q: ms(v, u) for q, v, u in re.findall(r"\n\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\b", text)}
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        print("  %d connections, %d s: %d requests (%.0f/s), p50 %.2f ms, p99 %.2f ms; errors %s, "
              "non-2xx %s, statuses %s; gplqd RSS %.1f MB before, %.1f right after, %.1f 10 s after"
              % (LOAD_CONNECTIONS, LOAD_SECONDS, n, rps, lat.get("50", -1), lat.get("99", -1),
                 errors.groups() if errors else "none", non2xx.group(1) if non2xx else 0,
                 status.groups() if status else "?", before, after, settled), flush=True)
        assert n > 0 and status and int(status.group(1)) > 0, text
        assert not errors, "socket errors: " + errors.group(0)
        assert not non2xx, non2xx.group(0)
        assert int(status.group(2)) == 0, status.group(0)
        # every connection was served (none refused, none closed by the deadline guard)
        assert d.get("/v1/health").status == 200
        # flat: what the connections took is given back, not kept growing
        assert settled <= after + 1, (before, after, settled)
        assert settled <= before + 64, (before, after, settled)


if __name__ == "__main__":
    run_tests(globals())
