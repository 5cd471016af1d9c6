#!/usr/bin/env bash
# Runs the libFuzzer harnesses of tests/fuzz/ (built by `make fuzz-build` into build/fuzz/).
# For each target (one at a time, or -j at once: each harness runs on one core):
#   1. replay: the committed corpus, tests/fuzz/corpus/<target>/, and the reproducers of crashes
#      found before, tests/fuzz/crashes/<target>/, each input run once (a regression test);
#   2. fuzz for SECONDS, or until RUNS executions if sooner (skipped with -s 0), starting from
#      a scratch copy of the corpus, so
#      that what the fuzzer adds never lands in the tree; a crash's input is saved under
#      BUILD/crashes/<target>/ and printed.
# Prints one line per target (executions, executions per second, corpus growth) and a last
# line "fuzz: N passed, N failed"; exits 1 if any harness crashed.
# Usage: tests/fuzz/run.sh [-s SECONDS] [-r RUNS] [-j JOBS] [-b BUILD] [-k] [TARGET...]
#   -s SECONDS  fuzzing time per harness (default 60; 0: replay only)
#   -r RUNS     stop a harness after RUNS executions (default: no limit); the long campaign
#               (make fuzz-campaign) is 1 hour or 10 million executions per harness
#   -j JOBS     harnesses fuzzing at once (default 1)
#   -b BUILD    where the harnesses are (default build/fuzz)
#   -k          keep the scratch corpora (their path is printed), e.g. to minimize them into
#               new seeds by hand
#   TARGET      the harnesses to run (default all): safetensors, api, ...
set -u
here=$(cd "$(dirname "$0")" && pwd)
seconds=60; runs=-1; jobs=1; build=build/fuzz; keep=0
while getopts "s:r:j:b:k" o; do
  case $o in
    s) seconds=$OPTARG ;;
    r) runs=$OPTARG ;;
    j) jobs=$OPTARG ;;
    b) build=$OPTARG ;;
    k) keep=1 ;;
    *) sed -n '2,22p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$here"/fuzz_*.c; do t=${f##*/fuzz_}; targets+=("${t%.c}"); done
fi

scratch_root=$(mktemp -d "${TMPDIR:-/tmp}/gplq-fuzz-run.XXXXXX")
# One harness: its lines on stdout, "pass" or "fail" in $scratch_root/$t.result.
one() {
  local t=$1 bin=$build/fuzz_$1 log work art n0 n1 rc execs rate t0 bad input f
  local -a opts inputs existing
  if [ ! -x "$bin" ]; then
    echo "fuzz $t: $bin is missing (make fuzz-build)"
    echo fail >"$scratch_root/$t.result"; return
  fi
  log=$scratch_root/$t.log
  # The fuzzer's options for both steps: a run that takes over 25 s or 2 GB is a finding too.
  opts=(-timeout=25 -rss_limit_mb=2048 -print_final_stats=1)
  # what of a crash's report to print: the sanitizer's verdict and our frames of the stack
  ours='ERROR|SUMMARY|^fuzz:|^    #[0-9]+ .* in .*(tests/fuzz|io|api|config|storage|engine|util)/'
  [ -f "$here/$t.dict" ] && opts+=("-dict=$here/$t.dict")

  # 1. replay
  inputs=("$here"/corpus/"$t"/* "$here"/crashes/"$t"/*)
  existing=()
  for f in "${inputs[@]}"; do [ -f "$f" ] && existing+=("$f"); done
  if ! "$bin" "${opts[@]}" "${existing[@]}" >"$log" 2>&1; then
    bad=$(grep -E '^Running: ' "$log" | tail -n 1 | sed 's/^Running: //')
    echo "fuzz $t: CRASH replaying ${bad:-the corpus} (log: $log)"
    grep -E "$ours" "$log" | head -n 25
    echo fail >"$scratch_root/$t.result"; return
  fi
  if [ "$seconds" = 0 ]; then
    echo "fuzz $t: replayed ${#existing[@]} inputs, no crash"
    echo pass >"$scratch_root/$t.result"; return
  fi

  # 2. fuzz
  work=$scratch_root/$t; art=$build/crashes/$t
  mkdir -p "$work" "$art"
  cp "$here"/corpus/"$t"/* "$work"/
  n0=$(ls "$work" | wc -l)
  t0=$SECONDS
  "$bin" "${opts[@]}" -max_total_time="$seconds" -runs="$runs" -artifact_prefix="$art/" \
    "$work" >"$log" 2>&1
  rc=$?
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
  rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -n 1)
  n1=$(ls "$work" | wc -l)
  if [ $rc -ne 0 ]; then
    input=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -n 1)
    echo "fuzz $t: CRASH after ${execs:-?} executions; input: ${input:-?} (log: $log)"
    grep -E "$ours" "$log" | head -n 25
    echo fail >"$scratch_root/$t.result"
  else
    echo "fuzz $t: ${execs:-?} executions in $((SECONDS - t0)) s (${rate:-?}/s)," \
         "corpus $n0 -> $n1 inputs, no crash"
    echo pass >"$scratch_root/$t.result"
  fi
}

# at most $jobs at once; each one's lines printed whole, in the order of the targets
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  one "$t" >"$scratch_root/$t.out" 2>&1 &
done
wait
passed=0; failed=0; crashed=()
for t in "${targets[@]}"; do
  cat "$scratch_root/$t.out"
  if [ "$(cat "$scratch_root/$t.result" 2>/dev/null)" = pass ]; then passed=$((passed + 1))
  else failed=$((failed + 1)); crashed+=("$t"); fi
done
if [ $keep = 1 ]; then echo "fuzz: scratch corpora and logs kept in $scratch_root"
elif [ ${#crashed[@]} -eq 0 ]; then rm -rf "$scratch_root"
else echo "fuzz: logs kept in $scratch_root"; fi
[ ${#crashed[@]} -gt 0 ] && printf 'fuzz: crashed: %s\n' "${crashed[*]}"
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
