#!/usr/bin/env bash
# The main job on embedded defaults, through the service, as a user would run it: start gplqd
# (or reuse the one already serving our data dir), upload the committed demo model, quantize it
# W4A4 on the built-in Fashion-MNIST with `gplq submit --wait`, download the artifacts, print
# the accuracy table and where the dashboard and the artifacts are. gplqd keeps running after.
#
# Usage: scripts/demo.sh [BUILD]     (what `make demo` runs, after `make deps` and `make all`)
#        scripts/demo.sh --stop      (what `make stop` runs: SIGTERM the demo's gplqd, wait for it)
#
# Environment:
#   GPLQ_DEMO_LISTEN  address:port gplqd serves (default 127.0.0.1:8080)
#   GPLQ_DEMO_DATA    gplqd's data dir (default var): gplq.db, blobs, jobs, and the demo's own
#                     gplqd.log, gplqd.pid and demo.token
#   GPLQ_DEMO_OUT     where the artifacts are downloaded (default out/demo)
#   GPLQ_DEMO_ARGS    extra `gplq submit` options, split on spaces. The defaults (W4A4, all
#                     60,000 training images, the 10,000 test images, baselines on) take ~15 min
#                     on 2 cores; a quick try: GPLQ_DEMO_ARGS="--train-subset 2048 --eval-subset 1000"
#   (relative paths are taken from the repository's root, where this script runs)
set -euo pipefail

# Paths below (models/, build/, var/) are the repository's, wherever make was called from.
cd "$(dirname "$0")/.."

LISTEN=${GPLQ_DEMO_LISTEN:-127.0.0.1:8080}
DATA=${GPLQ_DEMO_DATA:-var}
OUT=${GPLQ_DEMO_OUT:-out/demo}
MODEL=models/vit-fmnist.safetensors
LOG=$DATA/gplqd.log
PIDFILE=$DATA/gplqd.pid
TOKENFILE=$DATA/demo.token

# make stop honors GPLQ_DEMO_DATA too.
STOP="make stop"
[ "$DATA" = var ] || STOP="GPLQ_DEMO_DATA=$DATA make stop"

say() { printf 'demo: %s\n' "$*" >&2; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# The pid in the pid file, if that process is still a gplqd (a stale file's pid may have been
# reused by anything since).
running_pid() {
  local pid
  [ -s "$PIDFILE" ] || return 1
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = gplqd ] || return 1
  echo "$pid"
}

# ---------------------------------------------------------------- make stop
if [ "${1:-}" = --stop ]; then
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE"
    say "no demo gplqd is running (data dir $DATA)"
    exit 0
  fi
  say "stopping gplqd (pid $pid); it lets its workers checkpoint first"
  kill -TERM "$pid"
  # gplqd drains on SIGTERM: workers get --shutdown-grace-s (30 s) to checkpoint and give their
  # job back to the queue, then it exits; it is not our child, so poll rather than wait.
  for _ in $(seq 1 450); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; say "stopped"; exit 0; }
    sleep 0.1
  done
  die "gplqd (pid $pid) is still running after 45 s; see $LOG"
fi

BUILD=${1:-build}
for p in gplqd gplq-worker gplq; do
  [ -x "$BUILD/$p" ] || die "$BUILD/$p is missing: run 'make demo' (or 'make BUILD=$BUILD all') first"
done
[ -f "$MODEL" ] || die "$MODEL is missing (it is committed: is this a full clone?)"

# gplqd serves ADDR:PORT; a wildcard address is reached through the loopback.
host=${LISTEN%:*}
port=${LISTEN##*:}
[[ $port =~ ^[0-9]+$ && $port != 0 && -n $host && $host != "$LISTEN" ]] ||
  die "GPLQ_DEMO_LISTEN=$LISTEN: expected ADDRESS:PORT with a fixed port, e.g. 127.0.0.1:8080"
case $host in 0.0.0.0 | '*') host=127.0.0.1 ;; '[::]' | '::') host='[::1]' ;; esac
URL=http://$host:$port

# What answers $URL/v1/health: "none" (nothing listens), "gplqd N" (a gplqd, N workers alive)
# or "other". python3 rather than curl: it is one of the deps, curl (the program) is not.
probe() {
  python3 - "$URL/v1/health" <<'EOF'
import json, socket, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        body = r.read()
except urllib.error.HTTPError as e:          # a gplqd whose database is stuck answers 503
    body = e.read()
except urllib.error.URLError as e:
    print("none" if isinstance(e.reason, ConnectionRefusedError) else "other")
    sys.exit(0)
except (OSError, socket.timeout):
    print("other")
    sys.exit(0)
try:
    h = json.loads(body)
    print("gplqd %d" % h["workers_alive"] if "blas_core" in h and "workers_alive" in h else "other")
except Exception:
    print("other")
EOF
}

# Whether the server accepts the token: tokens live (hashed) in gplq.db, so only a gplqd on our
# data dir knows ours. That is what "this gplqd is ours" means here.
token_ok() { [ -n "$token" ] && GPLQ_TOKEN=$token "$BUILD/gplq" jobs --server "$URL" --limit 1 >/dev/null 2>&1; }

# A new admin token for the demo, recorded in gplq.db directly; SQLite (WAL) lets this run
# beside a running gplqd, which sees the token on its next request. stdout is the token alone.
new_token() { "$BUILD/gplqd" token create --name demo --admin --data-dir "$DATA" 2>/dev/null; }

# Kept for the next run and for the dashboard's sign-in; only the owner may read it.
save_token() { (umask 077 && printf '%s\n' "$token" >"$TOKENFILE"); }

token=
[ -s "$TOKENFILE" ] && token=$(<"$TOKENFILE")

state=$(probe)
case $state in
  gplqd*)
    # A gplqd answers. Ours if it takes our token; a data dir that had a gplqd but no demo token
    # yet (someone ran build/gplqd by hand) gets one first.
    if ! token_ok && [ -e "$DATA/gplq.db" ]; then
      token=$(new_token) || die "cannot create a token in $DATA (gplqd token create failed)"
    fi
    token_ok || die "$URL is served by another gplqd (not on the data dir $DATA). Set GPLQ_DEMO_LISTEN to a free address:port (e.g. GPLQ_DEMO_LISTEN=127.0.0.1:8090 make demo), or GPLQ_DEMO_DATA to that gplqd's data dir."
    save_token
    [ "${state#gplqd }" -gt 0 ] ||
      die "the gplqd at $URL (data dir $DATA) has no live worker (started with --workers 0?), so the job would never run; restart it with workers, or stop it and run make demo again"
    if pid=$(running_pid); then
      say "reusing the gplqd already serving $URL (pid $pid, data dir $DATA)"
      # A rebuild since it started replaced the program under it: it keeps serving the old code.
      exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
      if [ -n "$exe" ] && [ "$exe" != "$(readlink -f "$BUILD/gplqd")" ]; then
        say "note: it runs an older build ($exe); '$STOP' then this again to run the new one"
      fi
    else
      pid=
      say "reusing the gplqd already serving $URL (data dir $DATA; not started by the demo)"
    fi
    ;;
  other)
    die "$URL is taken by something that is not gplqd. Set GPLQ_DEMO_LISTEN to a free address:port, e.g. GPLQ_DEMO_LISTEN=127.0.0.1:8090 make demo"
    ;;
  none)
    # Nothing answers there, but a gplqd may hold the data dir while serving another address
    # (one daemon per data dir: gplqd flocks gplqd.lock); a second would only fail to start.
    if pid=$(running_pid); then
      die "the demo's gplqd (pid $pid) runs on $DATA but does not answer at $URL: stop it ($STOP) or set GPLQ_DEMO_LISTEN to its address"
    fi
    if [ -e "$DATA/gplqd.lock" ] && command -v flock >/dev/null && ! flock -n "$DATA/gplqd.lock" true; then
      die "another gplqd is using the data dir $DATA (serving elsewhere than $URL): stop it, or set GPLQ_DEMO_LISTEN to its address or GPLQ_DEMO_DATA to another dir"
    fi
    mkdir -p "$DATA"
    fresh=1
    [ -e "$DATA/gplq.db" ] && fresh=0
    # A data dir that was used before but has no demo token: make one now (works whether or not a
    # gplqd runs). A fresh one gets the admin token gplqd prints on its first start instead.
    if [ $fresh = 0 ] && [ -z "$token" ]; then
      token=$(new_token) || die "cannot create a token in $DATA (gplqd token create failed)"
    fi
    # One worker: the demo is one job, and with --worker-threads 0 (cores / workers) a single
    # worker gets every core, where gplqd's default of 2 workers would leave one idle.
    # setsid: its own session, so a Ctrl-C on make (or closing the terminal) does not reach it;
    # nohup for the SIGHUP anyway. The log is appended to, so a restart keeps the earlier runs';
    # `off` is where this start's lines begin. The pid is the exec'd shell's, i.e. gplqd's.
    off=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
    rm -f "$PIDFILE"  # a stale one would read as "it died" below
    say "starting gplqd on $URL (data dir $DATA, 1 worker; log $LOG)"
    # shellcheck disable=SC2016  # $$ and $@ are the inner shell's
    setsid bash -c 'echo $$ >"$0"; exec nohup "$@"' "$PIDFILE" \
      "$BUILD/gplqd" --listen "$LISTEN" --data-dir "$DATA" --workers 1 --worker-threads 0 \
      </dev/null >>"$LOG" 2>&1 &
    # Up when it prints {"event":"listening"} (after the first start's token line).
    up=0
    for _ in $(seq 1 300); do
      if tail -c +$((off + 1)) "$LOG" 2>/dev/null | grep -q '"event":"listening"'; then up=1; break; fi
      if [ -s "$PIDFILE" ] && ! kill -0 "$(<"$PIDFILE")" 2>/dev/null; then break; fi
      sleep 0.1
    done
    if [ $up = 0 ]; then
      if [ -s "$PIDFILE" ] && kill -0 "$(<"$PIDFILE")" 2>/dev/null; then
        say "gplqd did not start listening within 30 s; the end of $LOG:"
      else
        say "gplqd exited at start; the end of $LOG:"
      fi
      tail -c +$((off + 1)) "$LOG" | tail -n 20 >&2
      if pid=$(running_pid); then kill -TERM "$pid"; fi
      rm -f "$PIDFILE"
      exit 1
    fi
    pid=$(<"$PIDFILE")
    if ! token_ok; then
      # gplqd's first start on a data dir prints an admin token once, on stdout (so in the log).
      token=$(tail -c +$((off + 1)) "$LOG" | grep -o '"event":"token".*"token":"gplq_[^"]*"' |
              grep -o 'gplq_[^"]*' | head -n 1 || true)
      token_ok || token=$(new_token) || die "cannot create a token in $DATA"
      token_ok || die "gplqd at $URL does not accept the demo's token; see $LOG"
    fi
    ;;
  *) die "cannot probe $URL (python3 failed)" ;;
esac
save_token

# How to stop it, for the last lines.
stop_hint="stop it: $STOP"
[ -n "${pid:-}" ] || stop_hint="it was not started by the demo: stop it where it was started"

# gplq submit prints the job id on stderr and keeps stderr a terminal for its progress bar, so
# it is not piped here; the job id comes from report.json (or, on failure, the job list).
since=$(date -u +%Y-%m-%dT%H:%M:%S)
read -r -a extra <<<"${GPLQ_DEMO_ARGS:-}"
if [ ${#extra[@]} = 0 ]; then
  say "quantizing $MODEL W4A4 on Fashion-MNIST through $URL (~15 min on 2 cores)"
else
  say "quantizing $MODEL on Fashion-MNIST through $URL, with ${extra[*]}"
fi
say "watch it live at $URL/ (sign in with the token in $TOKENFILE)"
rc=0
# The token through the environment rather than --token: not on the command line, so not in ps.
GPLQ_TOKEN=$token "$BUILD/gplq" submit --server "$URL" --model "$MODEL" --wait --out "$OUT" \
  ${extra[@]+"${extra[@]}"} || rc=$?

# The newest job created since `since`, as "ID STATE ERROR" (the demo's: one user, one job).
recent_job() {
  GPLQ_TOKEN=$token "$BUILD/gplq" jobs --server "$URL" --json --limit 20 2>/dev/null |
    python3 -c '
import json, sys
since = sys.argv[1]
jobs = [j for j in json.load(sys.stdin).get("jobs", []) if (j.get("created_at") or "") >= since]
if jobs:
    j = max(jobs, key=lambda j: j["created_at"])
    print(j["id"], j.get("state") or "", j.get("error") or "")
' "$since" || true
}

if [ $rc != 0 ]; then
  echo >&2
  read -r jid jstate jerr <<<"$(recent_job)" || true
  if [ -n "${jid:-}" ]; then
    say "the job $jid is ${jstate:-?}${jerr:+: $jerr}"
  else
    say "gplq submit failed (its error is just above)"
  fi
  say "gplqd's log: $LOG; gplqd keeps running ($stop_hint)"
  exit $rc
fi

jid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["job_id"])' \
      "$OUT/report.json" 2>/dev/null || true)
[ -n "$jid" ] || read -r jid _ <<<"$(recent_job)" || true

cat <<EOF

  done: the quantized model and its report are in $OUT/
    model.q.safetensors          the 4-bit model (packed weights and quantizer steps)
    model.fakequant.safetensors  the same, dequantized to FP32 (loads where any ViT loads)
    model.onnx                   the same as ONNX (INT4 + QDQ), for ONNX Runtime and others
    model.w4.onnx                4-bit weights as MatMulNBits, float activations (fast in ORT)
    report.json                  every accuracy above, the options, the timings
  job          ${jid:-?}
  dashboard    $URL/
  token        $token
               (for the dashboard's sign-in and the API; also in $TOKENFILE)
  gplqd        keeps running in the background${pid:+ (pid $pid)}, log $LOG; $stop_hint
EOF
