"""The dashboard in a real browser against a real gplqd.

tests/browser/dashboard.mjs drives Debian's chromium (headless, through playwright-core, no
browser download) the way a user would; this file starts gplqd, runs it, and holds what the
browser saw to what the API says: the accuracy chart's numbers are the job's metrics, the
downloaded file is the artifact (SHA-256), the progress bar moved and reached 100, a canceled
and deleted job is gone from the API too. Screenshots go to $GPLQ_BUILD/test-output/dashboard/.

`make test` installs chromium (scripts/install-deps.sh --test) and playwright-core
(npm ci in tests/browser, from the committed package-lock.json) first.
"""
import hashlib
import json
import os
import shutil
import subprocess

from gplqd_harness import BUILD, DEMO_MODEL, ROOT, Daemon, run_tests
from jobs_common import ACC_KEYS, ORT_KEYS, upload_demo

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
OUT = os.path.join(BUILD, "test-output", "dashboard")


def browse(scenario, d, *args, timeout=420):
    """Runs one scenario of dashboard.mjs; returns what it saw (fails with its problems)."""
    assert os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")), \
        "playwright-core is not installed: make test runs npm ci in tests/browser"
    assert os.path.exists("/usr/bin/chromium"), "no /usr/bin/chromium: scripts/install-deps.sh --test"
    p = subprocess.run(["node", "dashboard.mjs", scenario, d.url + "/", d.token, OUT] + list(args),
                       cwd=BROWSER_DIR, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    out = json.loads(lines[-1]) if lines else {}
    assert p.returncode == 0 and out, "browser scenario %s failed (exit %d):\n%s\n%s" % (
        scenario, p.returncode, "\n".join(out.get("problems", [])), p.stderr[-3000:])
    return out["result"]


def streamed(d, job):
    """How many times the browser read the job's event stream to its end (gplqd's request log:
    one line per finished request): the live updates came through SSE, not only polling."""
    n = 0
    for line in d.log_text().splitlines():
        if '"route":"jobs.events"' in line and '"path":"/v1/jobs/%s/events"' % job in line \
                and '"status":200' in line:
            n += 1
    return n


def pngs(prefix):
    return sorted(f for f in os.listdir(OUT) if f.startswith(prefix) and f.endswith(".png"))


def test_a_job_from_upload_to_download_in_the_browser():
    shutil.rmtree(OUT, ignore_errors=True)
    # Both cores for the one job (the harness defaults to 1 thread): the test waits on it.
    with Daemon(workers=1, env={"OMP_NUM_THREADS": "2"}) as d:
        seen = browse("job", d, DEMO_MODEL)
        assert seen["state"] == "succeeded", seen
        job = d.job(seen["job"])
        assert job["state"] == "succeeded"
        spec = job["spec"]
        # What the form sent: the user's choices, the server's defaults for the rest.
        assert (spec["train_subset"], spec["eval_subset"], spec["batch_size"]) == (1024, 500, 64), spec
        assert (spec["wbits"], spec["abits"], spec["baselines"]) == (4, 4, True), spec

        # The bar moved while the job ran (several values, never backwards) and reached 100.
        prog = seen["progress"]
        assert len(prog) >= 4 and prog[-1] == 100, prog
        assert all(a <= b for a, b in zip(prog, prog[1:])), prog

        # The chart shows the job's measured accuracies, each to two decimals of a percent.
        want = {k: "%.2f%%" % (job["metrics"][k] * 100) for k in ACC_KEYS + ORT_KEYS}
        assert seen["accuracy"] == want, (seen["accuracy"], want)
        assert "GPLQ W4A4 %s" % want["gplq"] in seen["accuracy_label"], seen["accuracy_label"]

        # Stage-1 loss curve from the event stream, QwT rows from report.json, a full timeline.
        assert seen["loss_points"] >= 2, seen
        report = d.get("/v1/jobs/%s/artifacts/report.json" % seen["job"]).json()
        assert seen["qwt_rows"] == len(report["diagnostics"]["blocks"]) == 6, seen
        # every phase the report timed (export's included), in the order they ran
        phases = sorted(k for k in report["timings_s"] if k != "total")
        assert sorted(seen["phases"]) == phases and "stage1_train" in phases, seen
        assert seen["phases"][0] == "eval_fp32" and seen["phases"][-2:] == ["artifacts", "onnx"], seen
        # each model file's size against the uploaded FP32 checkpoint's
        arts = {a["name"]: a for a in d.get("/v1/jobs/%s/artifacts" % seen["job"]).json()["artifacts"]}
        fp32 = d.get("/v1/models/" + job["model_id"]).json()["bytes"]
        want = {n: "%.1f%% of FP32" % (100.0 * a["bytes"] / fp32) for n, a in arts.items()
                if n != "report.json"}
        assert seen["size_share"] == want, (seen["size_share"], want)
        assert seen["timeline"] == ["done"] * 5, seen["timeline"]
        assert seen["table_state"] == "succeeded"
        # (the log line is written once the stream has closed, which may trail the browser a little)
        d.wait_for(lambda: streamed(d, seen["job"]) >= 1, timeout=10,
                   what="the job page to have read the event stream")

        # The download is the artifact, byte for byte.
        arts = {a["name"]: a for a in d.get("/v1/jobs/%s/artifacts" % seen["job"]).json()["artifacts"]}
        with open(seen["download"], "rb") as f:
            data = f.read()
        assert len(data) == arts["model.q.safetensors"]["bytes"]
        assert hashlib.sha256(data).hexdigest() == arts["model.q.safetensors"]["sha256"]
        # ... and came through a download link (streamed to disk), not a fetch() into memory
        gets = [l for l in d.log_lines() if l.get("route") == "artifacts.get"
                and l.get("path", "").endswith("/model.q.safetensors")]
        assert gets and all(l.get("token") == "link" for l in gets), gets

    shots = pngs("job-")
    for name in ("wrong-token", "new-job", "job-running", "job-done", "jobs-after"):
        assert any(name in s for s in shots), (name, shots)
    for s in shots:
        with open(os.path.join(OUT, s), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", s


def test_older_jobs_pages_through_the_whole_list():
    with Daemon(workers=0) as d:  # queued jobs, nothing runs
        model = upload_demo(d)
        ids = [d.create_job(model, seed=i).json()["id"] for i in range(120)]
        seen = browse("paging", d)
        # 50 newest, then 50 more, then the last 20, and no button left
        assert seen["rows"] == [50, 100, 120], seen["rows"]
        assert seen["ids"] == ids[::-1], "the table is not the jobs, newest first, each once"
        assert seen["signed_out"] == "Signed out.", seen["signed_out"]


def test_cancel_and_delete_from_the_jobs_table():
    with Daemon(workers=1) as d:
        model = upload_demo(d)
        # Long enough to be running while the browser looks at it: all 60,000 training images.
        r = d.create_job(model, eval_subset=200, baselines=False, pca_samples=256)
        assert r.status == 201, r
        job = r.json()["id"]
        seen = browse("cancel", d, job)
        assert seen["progress_before_cancel"] > 0 and seen["deleted"], seen
        assert seen["left_running_view"] and seen["state"] == "canceled", seen
        # the table followed the job from its newest event, not replaying its history from 0
        starts = [e["from"] for e in seen["event_streams"] if e["job"] == job]
        assert starts and all(n > 0 for n in starts), seen["event_streams"]
        d.wait_for(lambda: streamed(d, job) >= 1, timeout=10,
                   what="the jobs table to have read the event stream")
        assert d.get("/v1/jobs/" + job).status == 404
        assert d.get("/v1/jobs").json()["jobs"] == []
    assert pngs("cancel-"), os.listdir(OUT)


def test_a_failed_job_says_why_and_what_to_do():
    import signal
    from jobs_common import RESUMABLE, wait_stage1_step, worker_pid
    with Daemon(workers=1, args=["--lease-ms", "3000"]) as d:
        model = upload_demo(d)
        job = d.create_job(model, max_attempts=1, **RESUMABLE).json()["id"]
        wait_stage1_step(d, job, 1)
        os.kill(worker_pid(d), signal.SIGKILL)  # its only attempt dies with its worker
        j = d.wait_for_state(job, ["failed", "succeeded"], timeout=60)
        assert j["state"] == "failed", j
        seen = browse("failed", d, job)
        assert seen["state"] == "failed" and seen["failed_phase"] == "Stage 1", seen
        assert j["error"] in seen["error"], (seen, j["error"])
        assert "stopped before it finished" in seen["advice"] and "Submit the job again" in seen["advice"], seen


def test_a_retried_jobs_loss_curve_goes_forward():
    import signal
    from jobs_common import RESUMABLE, wait_stage1_step, worker_pid
    with Daemon(workers=1, args=["--lease-ms", "3000"]) as d:
        model = upload_demo(d)
        # 24 steps, a checkpoint at 12; killed at 18 or so, the second attempt resumes at 12
        # and reports steps the first one had reported already
        job = d.create_job(model, max_attempts=2, **dict(RESUMABLE, ckpt_every=12)).json()["id"]
        wait_stage1_step(d, job, 18)
        os.kill(worker_pid(d), signal.SIGKILL)
        j = d.wait_for_state(job, ["failed", "succeeded"], timeout=300)
        assert j["state"] == "succeeded" and j["attempts"] == 2, j
        steps = [e["data"]["data"]["step"] for e in d.events(job)[0] if e["event"] == "progress"
                 and e["data"]["data"].get("stage") == "stage1" and e["data"]["data"].get("losses")]
        assert any(b <= a for a, b in zip(steps, steps[1:])), ("no step was reported twice", steps)
        seen = browse("curve", d, job, str(steps[-1]))
        assert seen["state"] == "succeeded" and len(seen["xs"]) == 2, seen
        # one point per step still standing once the second attempt's replaced the first's
        want = []
        for s in steps:
            want = [w for w in want if w < s] + [s]
        for xs in seen["xs"]:
            assert len(xs) == len(want) and all(a < b for a, b in zip(xs, xs[1:])), (xs, want)


def test_a_dataset_uploaded_through_the_form():
    from test_jobs import CLASSES, fmnist_tar
    os.makedirs(OUT, exist_ok=True)
    bad, good = os.path.join(OUT, "not-images.tar.gz"), os.path.join(OUT, "fmnist-pngs.tar.gz")
    with open(bad, "wb") as f:
        f.write(b"this is not an archive" * 64)
    with open(good, "wb") as f:
        f.write(fmnist_tar(20, 10))
    with Daemon(workers=0) as d:  # no worker: the job stays queued, what is checked is its record
        model = upload_demo(d)
        seen = browse("dataset", d, model, bad, good)
        # the inspector's reason, as the API gave it (422), in the form
        assert "the uploaded file is not an archive of an image folder" in seen["refusal"], seen
        assert "/tmp" not in seen["refusal"] and "blob-" not in seen["refusal"], seen
        job = d.job(seen["job"])
        assert job["model_id"] == model and job["spec"]["pca_samples"] == 128, job
        assert job["spec"]["train_subset"] == 0 and job["spec"]["batch_size"] == 64, job
        # the uploads page listed the dataset the job was recorded with: its name, the 10
        # classes (folder names), 20 training and 10 test images of each
        assert job["dataset_id"] == seen["dataset_id"] and job["dataset_id"] != "fashion-mnist", seen
        name, ident, classes, train, test = seen["dataset_row"][:5]
        assert (name, ident, train, test) == ("fmnist-pngs.tar.gz", job["dataset_id"], "200", "100"), seen
        assert classes.startswith("10: " + ", ".join(sorted(CLASSES)[:4])), classes
        # deleting it while the job waited was refused with the server's reason (409); then the
        # job was canceled from the table, and the dataset and the model deleted from the page
        assert "is used by job " + seen["job"] in seen["refused_delete"], seen
        assert seen["deleted"] and d.job(seen["job"])["state"] == "canceled"
        assert d.get("/v1/datasets/" + seen["dataset_id"]).status == 404
        assert d.get("/v1/models/" + model).status == 404
        assert [x["id"] for x in d.get("/v1/datasets").json()["datasets"]] == ["fashion-mnist"]


def test_a_swin_upload_shows_its_architecture():
    hf = os.path.join(ROOT, "tests", "fixtures", "swin_tiny_hf.safetensors")  # no image size in it
    with Daemon(workers=0) as d:  # no worker: what is checked is the upload and the job's record
        seen = browse("swin", d, hf)
        assert "does not say its image size" in seen["refusal"], seen
        m = d.get("/v1/models/" + seen["model_id"]).json()
        assert m["config"]["img_size"] == 16 and m["config"]["arch"] == "swin", m
        # the row says what the API says: family, depths, heads, window
        assert seen["model_row"][2] == m["config"]["description"] + " (huggingface)", seen
        assert "Swin: img 16, patch 2, 3 channels, embed 16, depths 2-2, heads 2-4, window 4" \
            in seen["model_row"][2], seen
        assert seen["job_arch"] == m["config"]["description"], seen
        assert d.job(seen["job"])["spec"]["model_input"]["img_size"] == 16


def test_the_forms_defaults_are_the_option_tables():
    """The new-job form shows the defaults of /v1/openapi.json; they must be the ones the
    worker uses, which `gplq quantize --help` prints from the same option table."""
    import re
    helptext = subprocess.run([os.path.join(BUILD, "gplq"), "quantize", "--help"], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
    with Daemon(workers=0) as d:
        props = d.get("/v1/openapi.json", token=None).json()["components"]["schemas"]["JobCreate"]["properties"]
    checked = 0
    for m in re.finditer(r"^\s+--([a-z-]+) (N|X)\s+.*\(default ([^)]+)\)\s*$", helptext, re.M):
        name = m.group(1).replace("-", "_")
        if name not in props:
            continue
        assert float(props[name]["default"]) == float(m.group(3)), (name, props[name], m.group(3))
        checked += 1
    for flag in ("baselines", "qwt", "hflip", "percentile_init"):
        line = [l for l in helptext.splitlines() if l.strip().startswith("--" + flag.replace("_", "-") + " ")]
        assert line, flag
        on = "--no-" in line[0] or "to skip" in line[0]
        assert props[flag]["default"] == on, (flag, props[flag], line[0])
    assert checked >= 15, checked


if __name__ == "__main__":
    run_tests(globals())
