"""jobs_common: what the job tests share (test_jobs.py, test_durability.py): job specs small
enough for CI, and helpers that wait on a real gplqd's jobs and workers."""
import json

from gplqd_harness import DEMO_MODEL

# A job small enough for CI: 4 stage-1 steps, a few hundred test images.
TINY = dict(train_subset=256, eval_subset=200, pca_samples=128, calib_images=64, qwt_images=64,
            batch_size=64, lr=1e-4, baselines=False)
# Long enough in stage 1 to be killed in it: 24 steps (about 6 s on 2 idle cores; progress
# is written every second), a checkpoint every 4. The tests that kill and resume it compare
# models, not ONNX Runtime's top-1: its two passes (a few seconds a job) are skipped.
RESUMABLE = dict(TINY, train_subset=1536, ckpt_every=4, ort=False)
# The jobs of the tests that run many at once to count claims: as small as a job gets.
MANY_SMALL = dict(TINY, train_subset=64, eval_subset=64, batch_size=32, pca_samples=64,
                  calib_images=32, qwt_images=32, ort=False)
ACC_KEYS = ["fp32", "stage1", "stage2_noqwt", "gplq", "ptq_baseline", "minmax_baseline"]
# ONNX Runtime's top-1 of model.onnx and model.w4.onnx (make test-deps installs the runtime)
ORT_KEYS = ["ort_onnx", "ort_w4"]
ARTIFACTS = ["model.q.safetensors", "model.fakequant.safetensors", "report.json", "model.onnx",
             "model.w4.onnx"]


def upload_demo(d):
    r = d.upload_model(DEMO_MODEL, name="demo")
    assert r.status in (200, 201), r
    return r.json()["id"]


def worker_pid(d, index=0):
    def ready():
        h = d.get("/v1/health").json()
        w = h["workers"][index]
        return w["pid"] if w["alive"] and w.get("blas_core") else None
    return d.wait_for(ready, timeout=30, what="a ready worker")


def wait_stage1_step(d, job_id, step, timeout=300):
    """Waits until the job is in stage 1 at or past step; returns the job."""
    def past():
        j = d.job(job_id)
        assert j["state"] in ("queued", "running"), j
        p = j.get("progress") or {}
        return j if p.get("stage") == "stage1" and p.get("step", 0) >= step else None
    return d.wait_for(past, timeout=timeout, poll=0.05, what="stage 1 step %d" % step)


def tensor_bytes(blob):
    """A safetensors file's tensor data (everything after the header): equal for equal
    tensors, whatever the metadata (which names the job) says."""
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def claims(d):
    """{job id: times claimed}, from the workers' log lines."""
    out = {}
    for l in d.log_lines():
        if l.get("source") == "worker" and str(l.get("msg", "")).startswith("claimed"):
            out[l["job"]] = out.get(l["job"], 0) + 1
    return out
