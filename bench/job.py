#!/usr/bin/env python3
"""bench/job.py: where a whole job's time and memory go at a real model size, for `make bench`
(issue 16: every phase of a job, not only stage 1, within stage 1's memory and time).

Runs one W4A4 job with the job spec's defaults (both baselines, ONNX Runtime on the held-out
images) through a real gplqd with one worker on 127.0.0.1, the way a user runs one:
  - the model: DeiT-S shapes (224 px, patch 16, dim 384, depth 12, 6 heads, MLP 1536) with 10
    classes, random weights in timm's names (timm's init: normal 0.02 for matrices and
    positions, unit norms, zero biases), uploaded as a safetensors file;
  - the data: an image folder of IMAGES random-noise 224 px RGB PNGs in 10 classes, a quarter
    held out for evaluation (train/ and val/), uploaded as a tar.gz;
  - stage 1 at batch 16 (the paper's per-GPU batch), which is what issue 16's report used.
The images are noise, so the accuracies mean nothing; the work per image is a real job's.

Prints report.json's seconds and peak RSS for every phase (timings_s, peak_rss_mb_by_phase:
the worker's resident peak in each) beside the whole job's, and writes BUILD/bench/job.json.
Stage 1's own table (bench_stage1) gives FP32 training of the same model and batch to hold
those peaks against. The exit status is 0 unless the job failed or something crashed.

Usage: /usr/bin/python3 bench/job.py [BUILD] [--images N]   (default 400; numpy needed)
"""
import io
import json
import os
import struct
import sys
import tarfile
import tempfile
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
args = [a for a in sys.argv[1:]]
IMAGES = 400
if "--images" in args:
    i = args.index("--images")
    IMAGES = int(args[i + 1])
    del args[i:i + 2]
BUILD = os.path.abspath(args[0] if args else os.path.join(ROOT, "build"))
os.environ["GPLQ_BUILD"] = BUILD
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from gplqd_harness import Daemon  # noqa: E402
from vitfile import vit_shapes, write_vit  # noqa: E402

# report.json's phases in the order a job runs them (its keys are sorted)
PHASES = ["eval_fp32", "minmax_baseline", "ptq_baseline", "stage1_prep", "stage1_train",
          "eval_stage1", "stage2", "eval_stage2_noqwt", "eval_gplq", "artifacts", "onnx"]
CLASSES = 10
IMG = 224
BATCH = 16


def write_deit_s(path, seed=0):
    """DeiT-S shapes with CLASSES classes and timm's initialization, random."""
    rng = np.random.default_rng(seed)

    def fill(name, shape):
        if name.endswith("norm.weight") or ".norm1.weight" in name or ".norm2.weight" in name:
            a = np.ones(shape, np.float32)
        elif name.endswith(".bias") or name == "cls_token":
            a = np.zeros(shape, np.float32)
        else:
            a = (0.02 * rng.standard_normal(shape)).astype(np.float32)
        return a.astype("<f4").tobytes()
    return write_vit(path, vit_shapes(classes=CLASSES), {"num_heads": "6"}, fill)


def png_rgb(pixels, w, h):
    """An 8-bit RGB PNG of pixels (h, w, 3), written by hand."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = pixels.reshape(h, w * 3)
    raw = b"".join(b"\0" + rows[y].tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def noise_tar(n, seed=1):
    """A tar.gz image folder of n random 224 px PNGs in CLASSES classes, a quarter in val/."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for i in range(n):
            split = "val" if i % 4 == 3 else "train"
            data = png_rgb(rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8), IMG, IMG)
            info = tarfile.TarInfo("noise/%s/c%d/%05d.png" % (split, i % CLASSES, i))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main():
    tmp = tempfile.mkdtemp(prefix="gplq-bench-job-")
    model = os.path.join(tmp, "deit-s.safetensors")
    write_deit_s(model)
    data = noise_tar(IMAGES)
    print("bench/job.py: DeiT-S shapes, %d classes, %d noise images of %d px (%d held out), "
          "stage-1 batch %d" % (CLASSES, IMAGES, IMG, IMAGES // 4, BATCH), file=sys.stderr)
    with Daemon(workers=1) as d:
        r = d.upload_model(model, name="deit-s")
        assert r.status in (200, 201), r
        m = r.json()
        r = d.upload("/v1/datasets", data, {"name": "noise"})
        assert r.status == 201, r
        ds = r.json()
        t0 = time.time()
        r = d.create_job(m["id"], dataset_id=ds["id"], batch_size=BATCH)
        assert r.status == 201, r
        job = d.wait_for_state(r.json()["id"], ["succeeded", "failed"], timeout=4 * 3600, poll=2)
        wall = time.time() - t0
        if job["state"] != "succeeded":
            print("bench/job.py: the job failed: %s" % job.get("error"), file=sys.stderr)
            return 1
        rep = d.get("/v1/jobs/%s/artifacts/report.json" % job["id"]).json()
    times, peaks = rep["timings_s"], rep.get("peak_rss_mb_by_phase") or {}
    print("%-20s %9s %8s" % ("phase", "seconds", "peak MB"))
    for ph in PHASES + sorted(set(times) - set(PHASES) - {"total"}):
        if ph in times:
            print("%-20s %9.1f %8s" % (ph, times[ph], peaks.get(ph, "-")))
    print("%-20s %9.1f %8s" % ("job (report total)", times["total"], rep["peak_rss_mb"]))
    print("submit to succeeded: %.1f s (queue, dataset inspection and caching included)" % wall)
    out = {"model": "deit-s shapes", "classes": CLASSES, "images": IMAGES, "img_size": IMG,
           "batch": BATCH, "timings_s": times, "peak_rss_mb_by_phase": peaks,
           "peak_rss_mb": rep["peak_rss_mb"], "wall_s": wall, "config": rep.get("config")}
    os.makedirs(os.path.join(BUILD, "bench"), exist_ok=True)
    path = os.path.join(BUILD, "bench", "job.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("written: %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
