#!/usr/bin/env bash
# bench/dist.sh: `make bench`'s data-parallel part: stage 1 on 1 process x 2 threads against
# 2 MPI ranks x 1 thread (mpirun on this machine), on the demo and DeiT-S shapes, with the
# allreduce's share of a step. BUILD/bench_dist does the measuring (see its header); this runs
# it both ways, one after the other, and prints the table, also written as JSON to
# BUILD/bench/dist.json (raw lines in BUILD/bench/dist.jsonl).
#
# Usage: bench/dist.sh [BUILD] [options for bench_dist, e.g. --steps 3]
#   BENCH_DIST_MODELS="demo deit-s" (default) picks the shapes.
set -uo pipefail

build=${1:-build}
shift || true
extra=("$@")
out=$build/bench
mkdir -p "$out"
[ -x "$build/bench_dist" ] || { echo "bench: $build/bench_dist is missing (make $build/bench_dist)" >&2; exit 1; }
mpirun=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && mpirun+=(--allow-run-as-root)
raw=$out/dist.jsonl
: >"$raw"
crashed=0
for model in ${BENCH_DIST_MODELS:-demo deit-s}; do
  echo "== $model: 1 process x 2 threads" >&2
  OMP_NUM_THREADS=2 "$build/bench_dist" --model "$model" --threads 2 "${extra[@]}" >>"$raw" || crashed=1
  echo "== $model: 2 ranks x 1 thread (mpirun -np 2)" >&2
  "${mpirun[@]}" -x OMP_NUM_THREADS=1 -np 2 "$build/bench_dist" --model "$model" --threads 1 \
    "${extra[@]}" >>"$raw" || crashed=1
done

/usr/bin/python3 - "$raw" "$out/dist.json" <<'EOF' || crashed=1
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
with open(sys.argv[2], "w") as f:
    json.dump(rows, f, indent=1)
    f.write("\n")
head = ("model", "ranks x threads", "batch", "step s", "img/s", "vs 1x2", "allreduce in step",
        "share", "allreduce alone", "MB")
print("%-7s %15s %5s %8s %8s %7s %17s %6s %15s %6s" % head)
base = {}
for r in rows:
    if r["ranks"] == 1:
        base[r["model"]] = r["images_per_s"]
    ratio = r["images_per_s"] / base[r["model"]] if r["model"] in base else float("nan")
    print("%-7s %15s %5d %8.3f %8.1f %6.2fx %15.1f ms %5.1f%% %12.1f ms %6.1f" % (
        r["model"], "%d x %d" % (r["ranks"], r["threads_per_rank"]), r["batch"], r["step_s"],
        r["images_per_s"], ratio, 1e3 * r["allreduce_in_step_s"], 100 * r["allreduce_share"],
        1e3 * r["allreduce_alone_s"], 4 * r["allreduce_floats"] / 1e6))
EOF
exit $crashed
