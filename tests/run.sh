#!/usr/bin/env bash
# Runs every test program in BUILD/tests and every tests/integration/test_*.py, each in its own
# process with a time limit; prints each one's time ("== NAME: N s", to keep the suite within
# its budget) and the sum as the last line: "tests: N passed, N failed (N s)".
set -u
build=${1:-build}
passed=0; failed=0; broken=()
# The integration tests (Python, standard library only) start the real gplqd of $build.
export GPLQ_BUILD=$build
run_one() { # the test program or script $1, its counts added to the sums
  local t=$1 cmd out rc line p f
  case $t in
    *.py) [ -x "$build/gplqd" ] || return 0; cmd=(/usr/bin/python3 "$t") ;;
    *) [ -x "$t" ] || return 0; cmd=("$t") ;;
  esac
  local t0=$SECONDS
  out=$(timeout 1500 "${cmd[@]}" 2>&1); rc=$?
  printf '%s\n' "$out"
  printf '== %s%s: %d s\n' "${t##*/}" "${GPLQ_TEST_DB:+ (GPLQ_TEST_DB=$GPLQ_TEST_DB)}" $((SECONDS - t0))
  line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -n 1)
  p=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line"); f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  if [ $rc -ne 0 ] && [ "${f:-0}" = 0 ]; then failed=$((failed + 1)); broken+=("$t${GPLQ_TEST_DB:+ (GPLQ_TEST_DB=$GPLQ_TEST_DB)} (exit $rc)"); fi
}
for t in "$build"/tests/test_* "$(dirname "$0")"/integration/test_*.py; do
  run_one "$t"
done
# The service tests that exercise the store, again on PostgreSQL (a server they start
# themselves): gplqd's own (uploads, jobs, artifacts, restarts) and the teams' (tokens, owners,
# limits, live events, webhooks). The job pipeline on PostgreSQL: test_cluster.py, above.
for t in test_gplqd.py test_teams.py; do
  GPLQ_TEST_DB=pg run_one "$(dirname "$0")/integration/$t"
done
[ ${#broken[@]} -gt 0 ] && printf 'crashed or timed out: %s\n' "${broken[@]}"
echo "tests: $passed passed, $failed failed ($SECONDS s)"
[ $failed -eq 0 ]
