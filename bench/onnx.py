"""bench/onnx.py: `make bench`'s ONNX table: ONNX Runtime (onnxruntime-node, CPU, 2 intra-op
threads) latency and throughput at batch 1 and 64 of model.fp32.onnx, model.onnx (QDQ W4A4) and
model.w4.onnx (MatMulNBits W4A32), for the demo ViT and DeiT-S shapes, beside gplq's own FP32
forward rate and every file's size.

BUILD/bench_onnx writes the files (bench/bench_onnx.c says how) and times gplq; each ORT run is
tools/onnx/ort_eval.mjs --bench in a process of its own, one after the other. The table is
printed and written as JSON to BUILD/bench/onnx.json.

Usage: bench/onnx.py [BUILD] [--models demo,deit-s]   BENCH_THREADS=N (default 2)
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORT_EVAL = os.path.join(ROOT, "tools", "onnx", "ort_eval.mjs")
FILES = ["model.fp32.onnx", "model.onnx", "model.w4.onnx"]
SHAPES = {"demo": "64,1,28,28", "deit-s": "64,3,224,224"}


def main():
    args = sys.argv[1:]
    build = args.pop(0) if args and not args[0].startswith("--") else "build"
    models = "demo,deit-s"
    if "--models" in args:
        models = args[args.index("--models") + 1]
    threads = os.environ.get("BENCH_THREADS", "2")
    out = os.path.join(build, "bench")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    p = subprocess.run([os.path.join(build, "bench_onnx"), out, "--models", models],
                       stdout=subprocess.PIPE, env=env, check=True)
    results = []
    for line in p.stdout.decode().splitlines():
        m = json.loads(line)
        m["ort"] = {}
        for f in FILES:
            path = os.path.join(m["dir"], f)
            r = subprocess.run(["node", ORT_EVAL, path, "--bench", "--threads", threads,
                                "--shape", SHAPES[m["model"]]],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if r.returncode:
                m["ort"][f] = {"error": r.stderr.decode()[-500:]}
                continue
            m["ort"][f] = json.loads(r.stdout)
        results.append(m)

    print("\nONNX Runtime %s threads (onnxruntime-node, CPU) against gplq's FP32 forward"
          % threads)
    print("%-7s %-22s %10s %12s %12s %14s" % ("model", "file", "MB", "batch 1 ms", "b1 img/s",
                                               "batch 64 img/s"))
    for m in results:
        b = m["bytes"]
        g = m["gplq_fp32_images_per_s"]
        print("%-7s %-22s %10.2f %12.2f %12.1f %14.1f" % (
            m["model"], "gplq FP32 (engine)", b["model.fp32.safetensors"] / 1e6,
            1000 / g["batch1"] if g["batch1"] > 0 else float("nan"), g["batch1"], g["batch64"]))
        print("%-7s %-22s %10.2f" % (m["model"], "model.q.safetensors", b["model.q.safetensors"] / 1e6))
        for f in FILES:
            o = m["ort"][f]
            if "error" in o:
                print("%-7s %-22s %10.2f  ORT failed: %s" % (m["model"], f, b[f] / 1e6, o["error"]))
                continue
            print("%-7s %-22s %10.2f %12.2f %12.1f %14.1f" % (
                m["model"], f, b[f] / 1e6, o["batch1"]["ms_per_batch"], o["batch1"]["images_per_s"],
                o["batch64"]["images_per_s"]))
    with open(os.path.join(out, "onnx.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    print("(%s)" % os.path.join(out, "onnx.json"))


if __name__ == "__main__":
    main()
