#!/usr/bin/env python3
"""bench/service.py: how fast gplqd answers, for `make bench` (issue 4's targets).

Measures, against a real gplqd on 127.0.0.1 with a temporary data directory:
  1. GET /v1/jobs/{id} throughput with wrk (2 threads, 32 connections, 5 s), idle (no worker)
     and while a worker trains a job on the same 2 cores. Target: 20,000 requests/s idle.
  2. Upload throughput of a 100 MB model (a valid ViT checkpoint of zeros: the daemon hashes,
     stores and inspects it like any other), the median of 3, against the same bytes written
     to the same disk with dd and fsync in the same run. Target: at disk speed (a ratio near 1).
  3. Claim latency, submit to running, with an idle worker: the job's started_at minus its
     created_at (both stamped by the server), over 15 jobs, each canceled once it runs.
     Target: under 50 ms.
  4. The same on PostgreSQL beside SQLite, in the same run (issue 13): GET /v1/jobs/{id}
     throughput idle and claim latency with one node of each backend, then on PostgreSQL the
     cluster's own case, a job submitted to a node without workers and claimed by another
     node's worker (woken by NOTIFY), and the database connections one node holds. The server
     is a real PostgreSQL 15 started for the run (tests/integration/pg_harness.py) with its
     durable settings but synchronous_commit off, which matches SQLite's synchronous=NORMAL (a
     crash may lose the last commits, never corrupts).
Prints a table and writes BUILD/bench/service.json. A MISS is a finding: the exit status is 0
unless something crashed.

Usage: bench/service.py [BUILD]
"""
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
os.environ["GPLQ_BUILD"] = BUILD
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from gplqd_harness import DEMO_MODEL, Daemon  # noqa: E402
import pg_harness  # noqa: E402
from vitfile import vit_shapes, write_vit  # noqa: E402

LONG_JOB = dict(train_subset=60000, eval_subset=1000, baselines=False, lr=1e-4)


def wrk(url, seconds=5, headers=()):
    cmd = ["wrk", "-t2", "-c32", "-d%ds" % seconds, "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests_per_s": rps, "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else None,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def auth_headers(d):
    """The daemon's token header, if it has one (issue 5 adds tokens)."""
    tok = getattr(d, "token", None)
    return ["Authorization: Bearer " + tok] if tok else []


def write_zero_vit(path, dim=384, depth=14, mlp=1536, classes=1000, img=224, patch=16):
    """A timm-named ViT checkpoint of zeros (about 100 MB with the defaults)."""
    return write_vit(path, vit_shapes(dim, depth, mlp, classes, img, patch), {"num_heads": "6"})


def disk_write_mb_s(path, size):
    t0 = time.time()
    subprocess.run(["dd", "if=/dev/zero", "of=" + path, "bs=1M", "count=%d" % (size >> 20),
                    "conv=fsync", "status=none"], check=True)
    dt = time.time() - t0
    os.unlink(path)
    return (size >> 20) / dt


def iso_ms(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() * 1000


def upload_times(d, big, size, n=3):
    """n uploads of the file big to d, in seconds. Each model is deleted after, so every upload
    writes its blob anew. The client sends 1 MB blocks (http.client's 8 KB default made the
    client part of what was measured)."""
    times = []
    for i in range(n):
        c = http.client.HTTPConnection(d.host, d.port, timeout=120, blocksize=1 << 20)
        with open(big, "rb") as f:
            t0 = time.time()
            c.request("POST", "/v1/models?name=big%d&num_heads=6" % i, body=f,
                      headers={"Authorization": "Bearer " + d.token,
                               "Content-Type": "application/octet-stream",
                               "Content-Length": str(size)})
            r = c.getresponse()
            body = r.read()
            times.append(time.time() - t0)
        c.close()
        assert r.status == 201, (r.status, body[:300])
        assert d.delete("/v1/models/" + json.loads(body)["id"]).status == 204
    return times


def claim_latency(submit_to, watch, m, n=15):
    """Submit to running over n jobs (server stamps), each canceled once it runs; in ms."""
    lat = []
    for i in range(n):
        j = submit_to.create_job(m, **LONG_JOB).json()["id"]
        job = watch.wait_for_state(j, ["running", "failed"], timeout=30, poll=0.01)
        lat.append(iso_ms(job["started_at"]) - iso_ms(job["created_at"]))
        watch.post("/v1/jobs/%s/cancel" % j)
        watch.wait_for_state(j, ["canceled", "failed", "succeeded"], timeout=60, poll=0.05)
    return {"median": statistics.median(lat), "max": max(lat), "n": len(lat)}


def backends(res):
    """4: SQLite and PostgreSQL side by side, and a two-node cluster on PostgreSQL."""
    pg = pg_harness.Postgres(fast=False).start()
    out = {}
    try:
        for name, db in (("sqlite", None), ("postgresql", pg.new_database("bench"))):
            row = {}
            with Daemon(workers=0, db=db) as d:
                token = d.token  # the database's admin token, for the next daemon on it
                m = d.upload_model(DEMO_MODEL).json()["id"]
                j = d.create_job(m, **LONG_JOB).json()["id"]
                url = d.url + "/v1/jobs/" + j
                wrk(url, 2, auth_headers(d))  # warm-up
                row["get_job_idle"] = wrk(url, 5, auth_headers(d))
            with Daemon(workers=1, db=db) as d:
                d.token = d.token or token
                m = d.upload_model(DEMO_MODEL).json()["id"]
                d.wait_for(lambda: d.get("/v1/health").json()["workers_alive"] == 1, timeout=30,
                           what="a worker")
                time.sleep(1)
                row["claim_latency_ms"] = claim_latency(d, d, m)
                if db:  # what one node with one worker holds open
                    dbname = db.rsplit("/", 1)[1]
                    row["connections_per_node"] = int(pg.psql(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s'" % dbname))
            out[name] = row
            print("%-10s GET /v1/jobs/{id} idle %8.0f req/s (p99 %.2f ms); claim latency %6.1f ms "
                  "median, %.1f ms max" % (name, row["get_job_idle"]["requests_per_s"],
                                           row["get_job_idle"]["p99_ms"],
                                           row["claim_latency_ms"]["median"],
                                           row["claim_latency_ms"]["max"]), file=sys.stderr)
        # the cluster: node a (no workers) takes the submit, node b's worker claims it
        db = pg.new_database("bench_cluster")
        blobs = tempfile.mkdtemp(prefix="gplq-bench-blobs-")
        try:
            with Daemon(workers=0, db=db, args=["--blob-dir", blobs, "--node-name", "a"]) as a:
                with Daemon(workers=1, db=db, args=["--blob-dir", blobs, "--node-name", "b"]) as b:
                    b.token = a.token
                    m = a.upload_model(DEMO_MODEL).json()["id"]
                    b.wait_for(lambda: b.get("/v1/health").json()["workers_alive"] == 1,
                               timeout=30, what="a worker")
                    time.sleep(1)
                    out["postgresql"]["cross_node_claim_latency_ms"] = claim_latency(a, a, m)
                    dbname = db.rsplit("/", 1)[1]
                    out["postgresql"]["connections_two_nodes"] = int(pg.psql(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s'" % dbname))
                    # an upload into the shared blob dir (here a local folder: the figure to
                    # compare is the ratio, which a network file system's speed then scales)
                    big = os.path.join(blobs, "vit-100mb.safetensors")
                    size = write_zero_vit(big)
                    disk = disk_write_mb_s(os.path.join(blobs, "dd.tmp"), size)
                    dt = statistics.median(upload_times(a, big, size))
                    os.unlink(big)
                    out["postgresql"]["upload"] = {"mb_per_s": size / 2**20 / dt,
                                                   "disk_mb_per_s": disk,
                                                   "ratio_to_disk": size / 2**20 / dt / disk}
        finally:
            shutil.rmtree(blobs, ignore_errors=True)
        u = out["postgresql"]["upload"]
        print("postgresql upload of 100 MB into the shared blob dir: %.1f MB/s (dd with fsync "
              "there %.1f MB/s, ratio %.2f)" % (u["mb_per_s"], u["disk_mb_per_s"],
                                                u["ratio_to_disk"]), file=sys.stderr)
        x = out["postgresql"]["cross_node_claim_latency_ms"]
        print("postgresql cross-node claim latency (submit on a, worker on b, NOTIFY): %.1f ms "
              "median, %.1f ms max; connections: %d for a node with 1 worker idle, %d for two "
              "nodes" % (x["median"], x["max"], out["postgresql"]["connections_per_node"],
                         out["postgresql"]["connections_two_nodes"]), file=sys.stderr)
    finally:
        pg.stop()
    res["backends"] = out


def main():
    if not shutil.which("wrk"):
        print("bench/service.py: wrk is missing (scripts/install-deps.sh --bench)", file=sys.stderr)
        return 1
    res = {}
    tmp = tempfile.mkdtemp(prefix="gplq-bench-")
    try:
        # 1. throughput, idle
        with Daemon(workers=0) as d:
            m = d.upload_model(DEMO_MODEL).json()["id"]
            j = d.create_job(m, **LONG_JOB).json()["id"]
            url = d.url + "/v1/jobs/" + j
            wrk(url, 2, auth_headers(d))  # warm-up
            res["get_job_idle"] = wrk(url, 5, auth_headers(d))
            print("GET /v1/jobs/{id}, idle:           %8.0f req/s (p99 %.2f ms)" %
                  (res["get_job_idle"]["requests_per_s"], res["get_job_idle"]["p99_ms"]), file=sys.stderr)

            # 2. upload throughput
            big = os.path.join(tmp, "vit-100mb.safetensors")
            size = write_zero_vit(big)
            disk = disk_write_mb_s(os.path.join(d.data_dir, "dd.tmp"), size)
            times = upload_times(d, big, size)
            dt = statistics.median(times)
            res["upload"] = {"bytes": size, "seconds": dt, "mb_per_s": size / 2**20 / dt,
                             "runs_mb_per_s": [size / 2**20 / t for t in times],
                             "disk_mb_per_s": disk, "ratio_to_disk": size / 2**20 / dt / disk}
            print("upload of %d MB:                  %8.1f MB/s (disk with fsync %.1f MB/s, ratio %.2f)" %
                  (size >> 20, res["upload"]["mb_per_s"], disk, res["upload"]["ratio_to_disk"]), file=sys.stderr)

        # 3. claim latency, then throughput while a job trains
        with Daemon(workers=1) as d:
            m = d.upload_model(DEMO_MODEL).json()["id"]
            d.wait_for(lambda: d.get("/v1/health").json()["workers_alive"] == 1, timeout=30, what="a worker")
            time.sleep(1)
            lat = []
            for i in range(15):
                j = d.create_job(m, **LONG_JOB).json()["id"]
                job = d.wait_for_state(j, ["running", "failed"], timeout=30, poll=0.01)
                lat.append(iso_ms(job["started_at"]) - iso_ms(job["created_at"]))
                d.post("/v1/jobs/%s/cancel" % j)
                d.wait_for_state(j, ["canceled", "failed", "succeeded"], timeout=60, poll=0.05)
            res["claim_latency_ms"] = {"median": statistics.median(lat), "max": max(lat), "n": len(lat)}
            print("claim latency, submit to running: %8.1f ms median, %.1f ms max (%d jobs)" %
                  (statistics.median(lat), max(lat), len(lat)), file=sys.stderr)

            j = d.create_job(m, **LONG_JOB).json()["id"]
            d.wait_for(lambda: (d.job(j).get("progress") or {}).get("stage") == "stage1",
                       timeout=300, what="stage 1")
            res["get_job_training"] = wrk(d.url + "/v1/jobs/" + j, 5, auth_headers(d))
            print("GET /v1/jobs/{id}, while training: %8.0f req/s (p99 %.2f ms)" %
                  (res["get_job_training"]["requests_per_s"], res["get_job_training"]["p99_ms"]), file=sys.stderr)
            d.post("/v1/jobs/%s/cancel" % j)

        # 4. SQLite and PostgreSQL in the same run
        backends(res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    t = [("GET /v1/jobs/{id} idle >= 20000 req/s", res["get_job_idle"]["requests_per_s"] >= 20000),
         ("upload at disk speed (ratio >= 0.8)", res["upload"]["ratio_to_disk"] >= 0.8),
         ("claim latency median < 50 ms", res["claim_latency_ms"]["median"] < 50)]
    print("\n".join("%-42s %s" % (n, "PASS" if ok else "MISS") for n, ok in t))
    res["targets"] = {n: ok for n, ok in t}
    os.makedirs(os.path.join(BUILD, "bench"), exist_ok=True)
    with open(os.path.join(BUILD, "bench", "service.json"), "w") as f:
        json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
