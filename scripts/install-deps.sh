#!/usr/bin/env bash
# Installs every Debian package gplq needs to build, test and benchmark.
# Idempotent and quick when all is present: apt-get runs only for what is missing.
# Usage: scripts/install-deps.sh [--test] [--bench] [--fuzz]
#   --test   adds what `make test` needs beyond the build: Debian's chromium for the dashboard's
#            browser test, Node.js with npm (for playwright-core, tests/browser) if absent, and
#            wrk for the load part of tests/integration/test_chaos.py (and `make chaos`), and
#            PostgreSQL's server, which the tests start themselves (tests/integration/pg_harness.py)
#   --bench  adds PyTorch and wrk, only used by `make bench` and by tests/ref/*.py, which
#            regenerate the committed reference fixtures
#   --fuzz   adds clang and its fuzzer and sanitizer runtimes, for `make fuzz` and the fuzz
#            regression test (tests/fuzz/)
set -euo pipefail

want_node=0
pkgs=(
  build-essential pkg-config
  libopenblas-openmp-dev     # sgemm and LAPACK, the OpenMP build (see the Makefile)
  libjansson-dev             # JSON: safetensors headers, configs, --json output
  zlib1g-dev                 # gzip IDX files of Fashion-MNIST
  libarchive-dev             # uploaded datasets: tar, tar.gz
  libjpeg62-turbo-dev libpng-dev  # their images
  libsqlite3-dev             # gplqd's job queue and records
  libpq-dev                  # the same in PostgreSQL, for a cluster of gplqd nodes (--db postgresql://)
  libmicrohttpd-dev          # gplqd's HTTP server
  libuv1-dev                 # gplqd's event loop: worker supervision, timers, signals
  libcurl4-openssl-dev       # webhooks and the `gplq submit` client
  libssl-dev                 # libcrypto's SHA-256 (SHA-NI): uploads are hashed at disk speed
  openmpi-bin libopenmpi-dev # stage 1 across processes and machines: mpirun, mpicc, mpi.h
                             # (train/dist.h); as root mpirun needs --allow-run-as-root, and
                             # more ranks than cores --oversubscribe
  python3                    # the integration tests (standard library only) and bench scripts
  dataset-fashion-mnist      # the built-in dataset
  protobuf-c-compiler libprotobuf-c-dev libonnx-dev  # model.onnx: protobuf-c code for onnx.proto
)
for arg in "$@"; do
  case $arg in
    --test)
      want_node=1
      pkgs+=(chromium wrk postgresql)
      # Node.js may come from Debian (nodejs + npm) or from NodeSource (one nodejs package
      # that has npm inside, and conflicts with Debian's npm): ask for Debian's only if absent.
      command -v node >/dev/null || pkgs+=(nodejs)
      command -v npm >/dev/null || pkgs+=(npm)
      ;;
    --bench) pkgs+=(python3-torch wrk) ;;
    --fuzz) pkgs+=(clang libclang-rt-14-dev) ;;  # Debian 12's clang is 14: libFuzzer, ASan, UBSan
    *) echo "install-deps: unknown option $arg (use --test, --bench, --fuzz)" >&2; exit 2 ;;
  esac
done

# After the install (below, or at once when nothing is missing): the browser test's
# playwright-core needs Node.js 20 or newer, which Debian 12's own nodejs (18) is not.
check_node() {
  [ "$want_node" = 1 ] || return 0
  local major
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$major" -lt 20 ]; then
    echo "install-deps: the browser test needs Node.js 20 or newer; this machine has $(node --version 2>/dev/null || echo none) (Debian 12's nodejs is 18): install Node.js 20+ (e.g. from NodeSource) and run again" >&2
    exit 1
  fi
}

missing=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$st" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then check_node; exit 0; fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
check_node
