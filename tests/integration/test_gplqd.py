#!/usr/bin/env python3
"""test_gplqd: the real gplqd over HTTP on 127.0.0.1: start and stop, health, request ids and
the log, model uploads through the real inspector (build/gplq-worker inspect-model) with the
committed demo model, refused, cut-off and too-large uploads leaving nothing behind, jobs with
no workers, artifacts with ETag and Range over the wire, a SIGKILL and restart keeping the
state, graceful SIGTERM, and the worker supervisor (ready line, restart after a crash).

Run: /usr/bin/python3 tests/integration/test_gplqd.py [name-filter]   (GPLQ_BUILD=build)
"""
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import (DEMO_MODEL, GPLQD, WORKER, Daemon, read_http_response,  # noqa: E402
                           run_tests)

MB = 1 << 20


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MB), b""):
            h.update(chunk)
    return h.hexdigest()


def upload_demo(d, **query):
    r = d.upload_model(**query)
    assert r.status in (200, 201), r
    return r.json()


# ---------------------------------------------------------------- the binary

def test_daemon_links_no_blas():
    out = subprocess.run(["ldd", GPLQD], capture_output=True, text=True, check=True).stdout
    assert "libmicrohttpd" in out, out
    low = out.lower()
    assert "blas" not in low and "gomp" not in low, "gplqd must not link the math:\n" + out


def test_version_and_help():
    r = subprocess.run([GPLQD, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("gplqd "), r
    r = subprocess.run([GPLQD, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--listen" in r.stdout and "--max-model-bytes" in r.stdout
    r = subprocess.run([GPLQD, "--workers", "500"], capture_output=True, text=True)
    assert r.returncode != 0 and "workers" in r.stderr, r


# ---------------------------------------------------------------- basics

def test_start_health_stop():
    with Daemon(workers=0) as d:
        r = d.get("/v1/health")
        assert r.status == 200, r
        h = r.json()
        assert h["status"] == "ok" and h["version"] and h["workers_alive"] == 0, h
        assert h["workers"] == [] and h["queue_depth"] == 0 and h["blas_core"] is None, h
        assert set(h["jobs"]) >= {"queued", "running", "succeeded", "failed", "canceled"}, h
        assert r.headers["content-type"] == "application/json"
        assert r.headers.get("x-request-id")
        r = d.get("/v1/health", headers={"X-Request-Id": "trace-42.a"})
        assert r.headers["x-request-id"] == "trace-42.a"
        r = d.get("/v1/health", headers={"X-Request-Id": "not sane\x7f"})
        assert r.headers["x-request-id"] != "not sane\x7f"

        r = d.get("/v1/nope")
        assert r.status == 404 and r.error()["code"] == "not_found", r
        r = d.request("PATCH", "/v1/jobs")
        assert r.status == 405 and "GET" in r.headers["allow"] and "POST" in r.headers["allow"], r
        r = d.request("HEAD", "/v1/health")
        assert r.status == 200 and r.body == b"", r

        r = d.get("/v1/datasets")
        ids = [x["id"] for x in r.json()["datasets"]]
        assert ids.count("fashion-mnist") == 1, ids

        assert d.stop(signal.SIGTERM) == 0
        lines = d.log_lines()
        access = [l for l in lines if l.get("request_id") == "trace-42.a"]
        assert access and access[0]["status"] == 200 and access[0]["path"] == "/v1/health", access
        for k in ("ts", "level", "method", "bytes", "ms"):
            assert k in access[0], (k, access[0])


def test_concurrent_requests():
    with Daemon(workers=0, args=["--http-threads", "4"]) as d:
        errors = []

        def hammer():
            try:
                for _ in range(40):
                    r = d.get("/v1/jobs?limit=5")
                    if r.status != 200:
                        errors.append(r)
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)
        ts = [threading.Thread(target=hammer) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors[:3]


def test_dashboard_page_and_files():
    """GET / and /web/* over the wire: the embedded bytes of web/, their types, no token
    needed, the CSP on the page, an ETag round trip to 304, HEAD, and /metrics counting them."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with Daemon(workers=0) as d:
        r = d.get("/", token=None)
        assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8", r
        with open(os.path.join(root, "web", "index.html"), "rb") as f:
            assert r.body == f.read(), "web/index.html changed since gplqd was built"
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
        assert r.headers["x-content-type-options"] == "nosniff", r.headers
        assert r.headers["referrer-policy"] == "no-referrer", r.headers
        assert r.headers["cache-control"] == "no-cache" and r.headers.get("x-request-id"), r.headers
        etag = r.headers["etag"]
        r = d.get("/", token=None, headers={"If-None-Match": etag})
        assert r.status == 304 and r.body == b"" and r.headers["etag"] == etag, r

        r = d.get("/web/style.css", token=None)
        assert r.status == 200 and r.headers["content-type"] == "text/css; charset=utf-8", r
        with open(os.path.join(root, "web", "style.css"), "rb") as f:
            assert r.body == f.read()
        assert "content-security-policy" not in r.headers, r.headers
        tag = r.headers["etag"]
        assert tag != etag or r.body == d.get("/", token=None).body
        r = d.get("/web/style.css", token=None, headers={"If-None-Match": tag})
        assert r.status == 304 and r.body == b"", r
        r = d.request("HEAD", "/web/app.js", token=None)
        assert r.status == 200 and r.body == b"", r
        assert r.headers["content-type"] == "text/javascript; charset=utf-8", r.headers
        assert r.headers["content-length"] == str(os.path.getsize(os.path.join(root, "web", "app.js")))
        r = d.get("/web/nope", token=None)
        assert r.status == 404 and r.error()["code"] == "not_found", r
        assert d.get("/v1/jobs", token=None).status == 401  # the API still wants a token

        m = d.get("/metrics", token=None).body.decode()
        for want in ('gplq_http_requests_total{route="web.index",code="200"} 1',
                     'gplq_http_requests_total{route="web.index",code="304"} 1',
                     'gplq_http_requests_total{route="web.asset",code="404"} 1'):
            assert want in m, (want, m)


def test_dashboard_loads_when_the_database_cannot_be_opened():
    """The page needs no database: with gplq.db gone (a folder in its place) before any HTTP
    thread has opened it, / still loads, and the API answers 503 with the reason the page shows."""
    with Daemon(workers=0, args=["--http-threads", "8"]) as d:
        if d.sqlite_only("a database file moved away"):
            return
        db = os.path.join(d.data_dir, "gplq.db")
        os.rename(db, db + ".moved")
        os.mkdir(db)
        try:
            codes = set()
            for _ in range(16):
                assert d.get("/", token=None).status == 200
                assert d.get("/web/app.js", token=None).status == 200
                r = d.get("/v1/jobs")
                codes.add(r.status)
                if r.status == 503:
                    assert r.error()["message"] == "the database cannot be opened", r
            assert 503 in codes, codes
        finally:
            os.rmdir(db)
            os.rename(db + ".moved", db)


# ---------------------------------------------------------------- uploads

def test_model_upload_same_bytes_same_model():
    with Daemon(workers=0) as d:
        r = d.upload_model(name="demo")
        assert r.status == 201, r
        m = r.json()
        assert m["name"] == "demo" and m["sha256"] == sha256_file(DEMO_MODEL), m
        assert m["bytes"] == os.path.getsize(DEMO_MODEL)
        assert m["config"]["num_heads"] == 3 and m["config"]["depth"] == 6, m["config"]
        assert r.headers["location"] == "/v1/models/" + m["id"]
        blob = os.path.join(d.data_dir, "blobs", m["sha256"][:2], m["sha256"])
        assert os.path.getsize(blob) == m["bytes"], blob

        r = d.upload_model(name="again")
        assert r.status == 200 and r.json()["id"] == m["id"], r
        assert d.get("/v1/models/" + m["id"]).json()["sha256"] == m["sha256"]
        assert len(d.get("/v1/models").json()["models"]) == 1
        assert d.files_under("tmp") == [] and len(d.files_under("blobs")) == 1


def test_bad_uploads_are_refused_with_a_reason():
    with Daemon(workers=0) as d:
        junk = os.urandom(64 * 1024)
        r = d.upload("/v1/models", junk)
        assert r.status == 422 and r.error()["code"] == "invalid_model", r
        assert len(r.error()["message"]) > 10, r
        # the reason speaks of "the uploaded file", never of the server's temporary path
        assert "the uploaded file" in r.error()["message"] and d.data_dir not in r.body.decode(), r
        r = d.upload("/v1/datasets", junk)
        assert r.status == 422 and r.error()["code"] == "invalid_dataset", r
        assert "the uploaded file is not an archive" in r.error()["message"], r
        assert d.data_dir not in r.body.decode(), r
        r = d.upload("/v1/models", b"")
        assert r.status == 400, r
        r = d.upload("/v1/models", junk, {"num_heads": "lots"})
        assert r.status == 400 and r.error()["field"] == "num_heads", r
        r = d.request("POST", "/v1/models", body=b"--x\r\n",
                      headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert r.status == 415, r
        assert d.files_under("tmp") == [] and d.files_under("blobs") == []
        assert d.get("/v1/models").json()["models"] == []


def test_upload_cut_off_leaves_nothing():
    with Daemon(workers=0) as d:
        with open(DEMO_MODEL, "rb") as f:
            first_mb = f.read(MB)
        s = d.raw_socket()
        s.sendall(b"POST /v1/models?name=cut HTTP/1.1\r\nHost: t\r\n" + d.auth_header() +
                  b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % (5 * MB))
        s.sendall(first_mb)
        # streamed to disk as it arrives: the temp file is there while the upload runs
        d.wait_for(lambda: d.files_under("tmp"), what="the upload's temp file")
        s.close()
        d.wait_for(lambda: not d.files_under("tmp"), what="the temp file to go")
        assert d.files_under("blobs") == []
        assert d.get("/v1/models").json()["models"] == []
        # headers only, then gone
        s = d.raw_socket()
        s.sendall(b"POST /v1/datasets HTTP/1.1\r\nHost: t\r\n" + d.auth_header() +
                  b"Content-Length: 1000\r\n\r\n")
        time.sleep(0.2)
        s.close()
        d.wait_for(lambda: not d.files_under("tmp"), what="the temp file to go")
        assert d.get("/v1/health").status == 200  # and the daemon is fine
        d.stop()
        assert any(l.get("aborted") and l.get("path") == "/v1/models" for l in d.log_lines())


def test_too_large_uploads_413():
    # the limits from a config file, byte sizes as JSON numbers
    with Daemon(workers=0, config={"max_model_bytes": MB, "max_json_bytes": 1024}) as d:
        # declared too large: refused on the headers, before any body is sent
        s = d.raw_socket()
        s.sendall(b"POST /v1/models HTTP/1.1\r\nHost: t\r\n" + d.auth_header() + b"Content-Length: %d\r\n"
                  b"Expect: 100-continue\r\n\r\n" % (10 * MB))
        status, headers, body = read_http_response(s)
        s.close()
        assert status == 413 and b"too_large" in body, (status, body)
        assert "x-request-id" in headers

        # chunked, so the size is only known as it arrives: stopped past the limit
        s = d.raw_socket()
        s.sendall(b"POST /v1/models HTTP/1.1\r\nHost: t\r\n" + d.auth_header() +
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = os.urandom(64 * 1024)
        try:
            for _ in range(40):  # 2.5 MB
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            s.sendall(b"0\r\n\r\n")
            status, _, body = read_http_response(s)
            assert status == 413, (status, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closing on the client is also a refusal; what matters is below
        s.close()
        d.wait_for(lambda: not d.files_under("tmp"), what="the temp file to go")
        assert d.files_under("blobs") == []

        r = d.post("/v1/jobs", {"model_id": "m", "dataset_id": "fashion-mnist", "pad": 1,
                                "x" * 2000: 1})
        assert r.status == 413, r
        assert d.get("/v1/health").status == 200


# ---------------------------------------------------------------- jobs

def test_jobs_without_workers():
    with Daemon(workers=0) as d:
        m = upload_demo(d)
        r = d.create_job(m["id"], train_subset=256, lr=1e-5)
        assert r.status == 201, r
        job = r.json()
        assert r.headers["location"] == "/v1/jobs/" + job["id"]
        assert job["state"] == "queued" and job["attempts"] == 0, job
        assert job["spec"]["wbits"] == 4 and job["spec"]["train_subset"] == 256, job["spec"]
        assert job["spec"]["model_id"] == m["id"] and job["max_attempts"] == 3
        assert d.job(job["id"])["state"] == "queued"

        for body, field in (({"lr": 5}, "lr"), ({"colour": 1}, "colour"), ({"wbits": 1}, "wbits"),
                            ({"lr": "fast"}, "lr"), ({"lr": 0}, "lr"), ({"lr": 1e-320}, "lr")):
            r = d.create_job(m["id"], **body)
            assert r.status == 400 and r.error()["field"] == field, (body, r)
        # a denormal is a number like any other: refused by the field's range, by name
        assert "out of range" in d.create_job(m["id"], lr=1e-320).error()["message"]
        r = d.create_job("m_missing")
        assert r.status == 404 and r.error()["field"] == "model_id", r
        r = d.create_job(m["id"], dataset_id="d_missing")
        assert r.status == 404 and r.error()["field"] == "dataset_id", r
        r = d.request("POST", "/v1/jobs", body=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status == 400, r

        key = {"Idempotency-Key": "pipeline-run-17"}
        a = d.create_job(m["id"], headers=key, lr="auto")
        b = d.create_job(m["id"], headers=key)
        assert a.status == 201 and b.status == 200 and a.json()["id"] == b.json()["id"], (a, b)
        # the learning rate decided at run time says so, in the request and in the spec
        assert a.json()["spec"]["lr"] == "auto", a.json()["spec"]

        for _ in range(3):
            assert d.create_job(m["id"]).status == 201
        ids, url = [], "/v1/jobs?limit=2"
        while True:
            page = d.get(url).json()
            assert len(page["jobs"]) <= 2
            ids += [j["id"] for j in page["jobs"]]
            if page["next_cursor"] is None:
                break
            url = "/v1/jobs?limit=2&cursor=" + page["next_cursor"]
        assert len(ids) == 5 and len(set(ids)) == 5, ids
        assert len(d.get("/v1/jobs?state=queued").json()["jobs"]) == 5
        assert d.get("/v1/jobs?state=running").json()["jobs"] == []
        assert d.get("/v1/jobs?state=napping").status == 400
        assert d.get("/v1/health").json()["queue_depth"] == 5

        r = d.delete("/v1/models/" + m["id"])
        assert r.status == 409, r
        r = d.delete("/v1/jobs/" + job["id"])
        assert r.status == 409, r  # still queued
        r = d.post("/v1/jobs/%s/cancel" % job["id"])
        assert r.status == 200 and r.json()["state"] == "canceled", r
        assert d.post("/v1/jobs/%s/cancel" % job["id"]).status == 409
        assert d.delete("/v1/jobs/" + job["id"]).status == 204
        assert d.get("/v1/jobs/" + job["id"]).status == 404


def test_artifact_download_etag_range():
    with Daemon(workers=0) as d:
        m = upload_demo(d)
        job = d.create_job(m["id"]).json()
        data = os.urandom(4096)
        sha = hashlib.sha256(data).hexdigest()
        folder = os.path.join(d.data_dir, "jobs", job["id"], "artifacts")
        os.makedirs(folder)
        with open(os.path.join(folder, "model.q"), "wb") as f:
            f.write(data)
        # What a worker records after writing the file (store_artifact_add), done here with
        # the database directly: no worker runs in this test.
        d.sql("INSERT INTO artifacts (job_id, name, bytes, sha256, created_ms)"
              " VALUES ('%s', 'model.q', %d, '%s', 0)" % (job["id"], len(data), sha))

        base = "/v1/jobs/%s/artifacts" % job["id"]
        arts = d.get(base).json()["artifacts"]
        assert arts == [{"name": "model.q", "bytes": 4096, "sha256": sha}] or \
            (len(arts) == 1 and arts[0]["sha256"] == sha), arts
        r = d.get(base + "/model.q")
        assert r.status == 200 and r.body == data, r.status
        assert r.headers["etag"] == '"%s"' % sha and r.headers["accept-ranges"] == "bytes"
        r = d.get(base + "/model.q", headers={"Range": "bytes=100-199"})
        assert r.status == 206 and r.body == data[100:200], r.status
        assert r.headers["content-range"] == "bytes 100-199/4096"
        r = d.get(base + "/model.q", headers={"Range": "bytes=-10"})
        assert r.status == 206 and r.body == data[-10:]
        r = d.get(base + "/model.q", headers={"Range": "bytes=5000-"})
        assert r.status == 416 and r.headers["content-range"] == "bytes */4096", r
        r = d.get(base + "/model.q", headers={"If-None-Match": '"%s"' % sha})
        assert r.status == 304 and r.body == b"", r
        r = d.request("HEAD", base + "/model.q")
        assert r.status == 200 and r.headers["content-length"] == "4096" and r.body == b""
        assert d.get(base + "/..%2Fgplq.db").status == 404
        assert d.get(base + "/nothing").status == 404

        # A download link: no token needed, ranges work, that artifact only, it expires, and a
        # restart of gplqd ends it.
        r = d.post(base + "/model.q/link?expires_in=1")
        assert r.status == 200, r
        short = r.json()["url"]
        link = d.post(base + "/model.q/link").json()
        assert link["expires_in"] == 300 and link["url"].startswith(base + "/model.q?expires="), link
        r = d.get(link["url"], token=None)
        assert r.status == 200 and r.body == data, r
        assert r.headers["content-disposition"] == 'attachment; filename="model.q"', r.headers
        r = d.get(link["url"], token=None, headers={"Range": "bytes=0-9"})
        assert r.status == 206 and r.body == data[:10], r
        assert d.get(link["url"].replace("/model.q?", "/other?"), token=None).status == 401
        assert d.get(base + "?" + link["url"].split("?")[1], token=None).status == 401
        assert d.get(link["url"][:-1], token=None).status == 401
        time.sleep(2.1)
        r = d.get(short, token=None)
        assert r.status == 401 and "expired" in r.error()["message"], r
        d.stop()
        d.restart(workers=0)
        r = d.get(link["url"], token=None)
        if d.db:  # a cluster's key: the link opens on every node, restarted ones too
            assert r.status == 200 and r.body == data, r
        else:     # a key drawn at start: a restart ends every link
            assert r.status == 401 and "signature" in r.error()["message"], r


# ---------------------------------------------------------------- durability

def test_sigkill_then_restart_keeps_state():
    with Daemon(workers=0) as d:
        m = upload_demo(d)
        jobs = [d.create_job(m["id"], seed=i).json()["id"] for i in range(3)]
        assert d.post("/v1/jobs/%s/cancel" % jobs[0]).status == 200
        d.kill()
        d.restart()
        assert d.job(jobs[0])["state"] == "canceled"
        for j in jobs[1:]:
            assert d.job(j)["state"] == "queued", d.job(j)
        assert d.get("/v1/models/" + m["id"]).status == 200
        ids = [x["id"] for x in d.get("/v1/datasets").json()["datasets"]]
        assert ids.count("fashion-mnist") == 1, ids
        assert d.get("/v1/health").json()["queue_depth"] == 2
        assert d.stop() == 0


def test_one_daemon_per_data_dir():
    with Daemon(workers=0) as d:
        r = subprocess.run([GPLQD, "--listen", "127.0.0.1:0", "--data-dir", d.data_dir,
                            "--workers", "0"], capture_output=True, text=True, timeout=20)
        assert r.returncode != 0 and "in use" in r.stderr, r


# ---------------------------------------------------------------- workers

def workers_alive(d, n):
    h = d.get("/v1/health").json()
    return h if h["workers_alive"] == n and all(w["blas_core"] for w in h["workers"] if w["alive"]) else None


def test_supervisor_restarts_a_dead_worker():
    if not os.access(WORKER, os.X_OK):
        print("  (skipped: %s is not built)" % WORKER)
        return
    with Daemon(workers=2) as d:
        h = d.wait_for(lambda: workers_alive(d, 2), timeout=30, what="two ready workers")
        assert h["blas_core"], h
        victim = h["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)
        h = d.wait_for(lambda: (lambda h: h if h["workers"][0]["restarts"] == 1
                                and h["workers"][0]["alive"] else None)(d.get("/v1/health").json()),
                       timeout=30, what="the worker restarted")
        assert h["workers"][0]["pid"] != victim["pid"], h
        assert "signal 9" in (h["workers"][0]["last_exit"] or ""), h
        pids = [w["pid"] for w in h["workers"]]
        assert d.stop(signal.SIGTERM) == 0
        for pid in pids:  # the workers went with it
            assert not os.path.exists("/proc/%d" % pid) or \
                open("/proc/%d/stat" % pid).read().split()[2] == "Z", pid



def test_sigterm_gives_a_running_job_back():
    if not os.access(WORKER, os.X_OK):
        print("  (skipped: %s is not built)" % WORKER)
        return
    with Daemon(workers=1) as d:
        m = upload_demo(d)
        j = d.create_job(m["id"], train_subset=512, eval_subset=256, pca_samples=256,
                         calib_images=64, qwt_images=64, baselines=False, batch_size=32).json()
        job = d.wait_for_state(j["id"], ["running", "succeeded", "failed"], timeout=120)
        assert job["state"] == "running", job
        assert d.stop(signal.SIGTERM) == 0
        d.restart(workers=0)
        # the worker checkpointed and gave it back: queued again, ready for the next worker
        assert d.job(j["id"])["state"] == "queued", d.job(j["id"])
        assert any(l.get("event") == "worker_exit" and l.get("exit_status") == 0
                   for l in d.log_lines())


if __name__ == "__main__":
    run_tests(globals())
