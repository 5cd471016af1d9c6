#!/usr/bin/env python3
"""bench/service_ab.py: two or more gplqd programs against each other in one run.

bench/service.py measures the gplqd that is built; deciding a change to the service (a
libmicrohttpd pool size, a different upload path) needs the same measures of two builds side
by side, alternated so that the machine's drift falls on both. For each round and each gplqd in
turn: GET /v1/jobs/{id} throughput (wrk, as service.py), GET /v1/jobs?limit=50 over 20 queued
jobs (the dashboard's list), the median of 3 uploads of a 97 MB model and dd with fsync of the
same size into the same data dir, one line each.

Usage: bench/service_ab.py GPLQD[,GPLQD...] [ROUNDS]   (ROUNDS default 3)
  GPLQD: the path of a gplqd program; the worker and the rest come from $GPLQ_BUILD (build/).
  A variant: edit, `make build/gplqd`, copy build/gplqd aside; then restore and rebuild.
"""
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ARGV = sys.argv[:]
# service.py reads its build folder from argv[1] when imported
sys.argv = [ARGV[0], os.environ.get("GPLQ_BUILD") or os.path.join(os.path.dirname(HERE), "build")]
sys.path.insert(0, HERE)
import service as S  # noqa: E402  (its imports set up the test harness)
import gplqd_harness  # noqa: E402


def main():
    if len(ARGV) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    programs = [os.path.abspath(p) for p in ARGV[1].split(",")]
    rounds = int(ARGV[2]) if len(ARGV) > 2 else 3
    tmp = tempfile.mkdtemp(prefix="gplq-ab-")
    big = os.path.join(tmp, "big.safetensors")
    size = S.write_zero_vit(big)
    for r in range(rounds):
        for prog in programs:
            gplqd_harness.GPLQD = prog
            # the worker (the upload inspector) is the build's, wherever the gplqd is
            with S.Daemon(workers=0, args=["--worker-bin", gplqd_harness.WORKER]) as d:
                m = d.upload_model(S.DEMO_MODEL).json()["id"]
                url = d.url + "/v1/jobs/" + d.create_job(m, **S.LONG_JOB).json()["id"]
                S.wrk(url, 2, S.auth_headers(d))  # warm-up
                get = S.wrk(url, 5, S.auth_headers(d))["requests_per_s"]
                for _ in range(19):
                    d.create_job(m, **S.LONG_JOB)
                lst = S.wrk(d.url + "/v1/jobs?limit=50", 5, S.auth_headers(d))["requests_per_s"]
                dd = S.disk_write_mb_s(os.path.join(d.data_dir, "dd.tmp"), size)
                up = size / statistics.median(S.upload_times(d, big, size)) / (1 << 20)
            print("round %d  %-40s GET %7.0f req/s  list %6.0f req/s  upload %5.0f MB/s  dd %5.0f "
                  "MB/s  ratio %.2f" % (r + 1, prog, get, lst, up, dd, up / dd), flush=True)
    os.unlink(big)
    os.rmdir(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
