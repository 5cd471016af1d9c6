#!/usr/bin/env python3
"""test_teams: gplqd shared by several owners, over HTTP on 127.0.0.1 (issue 5).

Tokens made with `gplqd token create` on the daemon's data directory: every /v1 route but the
public ones answers 401 without a token, with a malformed or a revoked one; two owners cannot
see, change or use each other's models, datasets, jobs, artifacts, events or webhooks (404,
never their data); an admin token sees everything; the per-owner limits (queued jobs: 429 with
Retry-After; bytes held: 413). Live events (SSE): reconnecting with Last-Event-ID misses and
repeats nothing, waiting streams hold no thread. Webhooks, to a receiver this test runs on
127.0.0.1: signed (HMAC-SHA256 over "t.body", checked here), retried after 500s, delivered
after a daemon SIGKILL between two attempts, redirects not followed, the SSRF guard.

Run: /usr/bin/python3 tests/integration/test_teams.py [name-filter]   (GPLQ_BUILD=build)
"""
import hashlib
import hmac
import http.server
import io
import json
import os
import re
import signal
import socket
import struct
import sys
import tarfile
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import DEMO_MODEL, Daemon, read_http_response, run_tests  # noqa: E402

PUBLIC = {("GET", "/v1/health"), ("GET", "/v1/openapi.json"), ("GET", "/metrics")}
# A job small enough for CI (as in test_jobs.py): a few seconds on one worker.
TINY = dict(train_subset=256, eval_subset=200, pca_samples=128, calib_images=64, qwt_images=64,
            batch_size=64, lr=1e-4, baselines=False)
ENDED = ("succeeded", "failed", "canceled")


def routes(d):
    """(method, pattern) of every route, from the daemon's own OpenAPI document (which
    tests/test_api.c holds to the router's table, both ways)."""
    r = d.get("/v1/openapi.json", token=None)
    assert r.status == 200 and r.headers["content-type"] == "application/json", r
    doc = r.json()
    assert doc["openapi"] == "3.1.0", doc.get("openapi")
    return [(m.upper(), p) for p, item in doc["paths"].items() for m in item
            if m in ("get", "post", "put", "delete", "patch")]


def fill(pattern, value="x1"):
    return re.sub(r"\{[^}]+\}", value, pattern)


def png_gray(pixels, w, h):
    """A grayscale 8-bit PNG of w*h bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + pixels[y * w:(y + 1) * w] for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def tiny_dataset(seed=0):
    """A tar.gz image folder with two classes of four 16x16 images each; another seed gives
    other pixels (other bytes, about the same size)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for c, name in enumerate(["cats", "dogs"]):
            for i in range(4):
                data = png_gray(bytes([(c * 100 + i * 7 + k + seed * 31) % 256 for k in range(256)]),
                                16, 16)
                info = tarfile.TarInfo("ds/train/%s/%d.png" % (name, i))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Receiver:
    """A webhook receiver on 127.0.0.1 in a thread: answers each POST with the next status of
    script (then 200), checks its signature with secret, and keeps what it got."""

    def __init__(self, secret, script=()):
        self.secret, self.script = secret.encode(), list(script)
        self.got = []  # dicts: path, headers (lower-case), body, json, sig_ok, t, at, status
        self.cv = threading.Condition()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                h = {k.lower(): v for k, v in self.headers.items()}
                sig = dict(p.split("=", 1) for p in h.get("x-gplq-signature", "").split(",") if "=" in p)
                want = hmac.new(rec.secret, sig.get("t", "").encode() + b"." + body,
                                hashlib.sha256).hexdigest()
                with rec.cv:
                    status = rec.script.pop(0) if rec.script else 200
                    rec.got.append(dict(path=self.path, headers=h, body=body, json=json.loads(body),
                                        sig_ok=hmac.compare_digest(want, sig.get("v1", "")),
                                        t=int(sig.get("t", "0")), at=time.time(), status=status))
                    rec.cv.notify_all()
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", "http://127.0.0.1:%d/elsewhere" % rec.port)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d/hook" % self.port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n, timeout=30):
        """Waits for n requests; returns them."""
        with self.cv:
            ok = self.cv.wait_for(lambda: len(self.got) >= n, timeout)
            assert ok, "the receiver got %d of %d requests" % (len(self.got), n)
            return list(self.got)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


SECRET = "whsec_" + "5f0e1d2c3b4a" * 4
LOCAL_HOOKS = {"webhook_allow_hosts": "127.0.0.1", "webhook_backoff_ms": 200}


def deliveries(d, job_id, token=None):
    r = d.get("/v1/jobs/%s/webhooks" % job_id, **({"token": token} if token else {}))
    assert r.status == 200, r
    return r.json()["deliveries"]


# ---------------------------------------------------------------- tokens

def test_every_route_needs_a_token():
    with Daemon(workers=0) as d:
        table = routes(d)
        assert len(table) >= 19 and ("GET", "/v1/jobs/{id}/events") in table, table
        tok = d.create_token("ci")
        for method, pattern in table:
            path = fill(pattern)
            body = b"{}" if method == "POST" else None
            public = (method, pattern) in PUBLIC
            for token, what in ((None, "no token"), ("gplq_nonsense", "a malformed token")):
                r = d.request(method, path, body=body, token=token)
                if public:
                    assert r.status != 401, (method, path, r)
                    continue
                assert r.status == 401, (method, path, what, r)
                assert r.error()["code"] == "unauthorized", r
                assert r.headers["www-authenticate"].startswith('Bearer realm="gplq"'), r.headers
                assert r.headers.get("x-request-id"), r.headers
            r = d.request(method, path, body=body, token=tok)
            assert r.status != 401, (method, path, r)
        # revoked: refused from the next request on, while the daemon runs
        assert d.get("/v1/models", token=tok).status == 200
        row = d.revoke_token(tok)
        assert row["revoked_at"] and row["name"] == "ci", row
        r = d.get("/v1/models", token=tok)
        assert r.status == 401 and 'error="invalid_token"' in r.headers["www-authenticate"], r
        # a token of the right shape that was never made
        fake = tok[:30] + ("A" if tok[30] != "A" else "B") + tok[31:]
        assert d.get("/v1/models", token=fake).status == 401
        # the list shows ids and names, never a secret or a hash
        lst = json.loads(d.token_command("list").stdout)
        assert {t["name"] for t in lst} == {"admin", "ci"}, lst
        assert all(set(t) == {"id", "name", "admin", "created_at", "revoked_at"} for t in lst), lst
        assert tok not in d.token_command("list").stdout
        d.stop()
        assert not any(tok in l for l in d.log_text().splitlines())  # never logged


def test_first_start_prints_one_admin_token():
    with Daemon(workers=0) as d:
        first = d.token
        assert first and first.startswith("gplq_") and len(first) == 64, first
        assert d.get("/v1/jobs").status == 200
        d.restart()  # the same data directory: no new token
        assert d.token == first
        lst = json.loads(d.token_command("list").stdout)
        assert len(lst) == 1 and lst[0]["admin"] is True and lst[0]["name"] == "admin", lst
        assert d.get("/v1/jobs").status == 200
        # the stored hash is the token's SHA-256, not the token
        rows = d.sql("SELECT hash FROM tokens")
        import hashlib
        assert rows == [(hashlib.sha256(first.encode()).hexdigest(),)], rows


def test_metrics_and_request_ids():
    with Daemon(workers=0) as d:
        mid = d.upload_model().json()["id"]
        j = d.create_job(mid).json()["id"]
        d.get("/v1/jobs/" + j)
        d.get("/v1/jobs/j_nope")
        d.get("/v1/jobs", token=None)
        r = d.get("/metrics", token=None)
        assert r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4"), r
        m = r.body.decode()
        for want in ('gplq_jobs{state="queued"} 1', "gplq_queue_depth 1",
                     'gplq_http_requests_total{route="jobs.get",code="200"} 1',
                     'gplq_http_requests_total{route="jobs.get",code="404"} 1',
                     'gplq_http_requests_total{route="jobs.list",code="401"} 1',
                     'gplq_http_requests_total{route="models.create",code="201"} 1',
                     "gplq_upload_bytes_total{kind=\"model\"} %d" % os.path.getsize(DEMO_MODEL),
                     "gplq_workers_alive 0", "gplq_worker_restarts_total 0", "gplq_metrics_db_up 1",
                     "# TYPE gplq_job_duration_seconds histogram", "gplq_event_streams 0"):
            assert want in m, (want, m)
        assert j not in m and "admin" not in m  # counts only
        # a request is counted before its answer goes out: a scrape right after it sees it
        for n in range(2, 42):
            d.get("/v1/jobs", token=None)
            m = d.get("/metrics", token=None).body.decode()
            assert 'gplq_http_requests_total{route="jobs.list",code="401"} %d\n' % n in m, n
        # every answer has a request id: success, errors, refusals, the public routes
        for r in (d.get("/v1/jobs/" + j), d.get("/v1/nope"), d.request("PATCH", "/v1/jobs"),
                  d.get("/v1/jobs", token=None), d.post("/v1/jobs", {"x": 1}),
                  d.get("/metrics", token=None), d.get("/v1/openapi.json", token=None)):
            assert re.fullmatch(r"[0-9a-f]{16}", r.headers.get("x-request-id", "")), r.headers


# ---------------------------------------------------------------- isolation

def test_two_owners_cannot_see_each_other():
    with Daemon(workers=0) as d:
        a, b, a2 = d.create_token("team-a"), d.create_token("team-b"), d.create_token("team-a")
        ops = d.create_token("ops", admin=True)
        r = d.upload_model(token=a, name="a-model")
        assert r.status == 201, r
        m = r.json()
        r = d.upload("/v1/datasets", tiny_dataset(), {"name": "a-data"}, token=a)
        assert r.status == 201, r
        ds = r.json()
        r = d.create_job(m["id"], dataset_id=ds["id"], token=a)
        assert r.status == 201, r
        j = r.json()

        for method, path in (("GET", "/v1/models/" + m["id"]), ("DELETE", "/v1/models/" + m["id"]),
                             ("GET", "/v1/datasets/" + ds["id"]), ("DELETE", "/v1/datasets/" + ds["id"]),
                             ("GET", "/v1/jobs/" + j["id"]), ("DELETE", "/v1/jobs/" + j["id"]),
                             ("POST", "/v1/jobs/%s/cancel" % j["id"]),
                             ("GET", "/v1/jobs/%s/artifacts" % j["id"]),
                             ("GET", "/v1/jobs/%s/events" % j["id"]),
                             ("GET", "/v1/jobs/%s/webhooks" % j["id"]),
                             ("GET", "/v1/jobs/%s/artifacts/report.json" % j["id"])):
            r = d.request(method, path, token=b)
            assert r.status == 404, (method, path, r)
            assert b"team-a" not in r.body and m["sha256"].encode() not in r.body, r
        assert d.get("/v1/models", token=b).json()["models"] == []
        assert [x["id"] for x in d.get("/v1/datasets", token=b).json()["datasets"]] == ["fashion-mnist"]
        assert d.get("/v1/jobs", token=b).json()["jobs"] == []
        r = d.create_job(m["id"], token=b)
        assert r.status == 404 and r.error()["field"] == "model_id", r
        r = d.create_job(m["id"] if False else "m_x", dataset_id=ds["id"], token=b)
        assert r.status == 404, r
        # the same bytes uploaded by B are B's own model
        mb = d.upload_model(token=b).json()
        assert mb["id"] != m["id"]
        r = d.create_job(mb["id"], dataset_id=ds["id"], token=b)
        assert r.status == 404 and r.error()["field"] == "dataset_id", r

        # A's second token is A; the admin sees and acts on everyone's
        assert d.get("/v1/jobs/" + j["id"], token=a2).status == 200
        assert len(d.get("/v1/models", token=ops).json()["models"]) == 2
        assert len(d.get("/v1/models").json()["models"]) == 2  # the first-start admin token
        assert d.get("/v1/jobs/" + j["id"], token=ops).status == 200
        assert d.post("/v1/jobs/%s/cancel" % j["id"], token=ops).status == 200
        assert d.delete("/v1/jobs/" + j["id"], token=a).status == 204


def test_per_owner_limits():
    config = {"max_queued_jobs": 2, "max_owner_upload_bytes": 12 << 20}
    with Daemon(workers=0, config=config) as d:
        a = d.create_token("a")
        m = d.upload_model(token=a).json()  # about 10.7 MB
        ids = [d.create_job(m["id"], token=a).json()["id"] for _ in range(2)]
        r = d.create_job(m["id"], token=a)
        assert r.status == 429 and r.error()["code"] == "too_many_jobs", r
        assert int(r.headers["retry-after"]) > 0, r.headers
        assert d.post("/v1/jobs/%s/cancel" % ids[0], token=a).status == 200
        assert d.create_job(m["id"], token=a).status == 201
        assert d.create_job(m["id"]).status == 201  # the admin is exempt
        # bytes held: more than the whole limit is refused on its Content-Length, before the
        # body is sent
        s = d.raw_socket()
        s.sendall(b"POST /v1/models HTTP/1.1\r\nHost: t\r\n" + d.auth_header(a) +
                  b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (13 << 20))
        status, _, body = read_http_response(s)
        s.close()
        assert status == 413 and json.loads(body)["error"]["code"] == "quota_exceeded", body
        # 2 MB more would pass 12 MB: refused once the body is in (it might have been a model
        # the owner has, which holds nothing new)
        s = d.raw_socket()
        s.sendall(b"POST /v1/models HTTP/1.1\r\nHost: t\r\n" + d.auth_header(a) +
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * (1 << 20)
        for _ in range(2):
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        s.sendall(b"0\r\n\r\n")
        status, _, body = read_http_response(s)
        s.close()
        assert status == 413 and json.loads(body)["error"]["code"] == "quota_exceeded", body
        d.wait_for(lambda: d.files_under("tmp") == [], what="no upload left behind")
        assert d.upload_model(token=a).status == 200  # the same bytes again: nothing new held


def test_concurrent_uploads_stay_within_the_quota():
    # Three distinct datasets at once, where two fit: the quota is checked before the
    # inspection (each alone fits) and again, authoritatively, in the transaction that records
    # the row, so the third is refused however the three interleave.
    data = [tiny_dataset(seed) for seed in (1, 2, 3)]
    assert len({hashlib.sha256(x).hexdigest() for x in data}) == 3
    big = max(len(x) for x in data)
    quota = 2 * big + big // 2
    # all three inspected at once (past max_inspections one would get a 503 busy instead)
    config = {"max_owner_upload_bytes": quota, "http_threads": 4, "max_inspections": 4}
    with Daemon(workers=0, config=config) as d:
        a = d.create_token("a")
        for rnd in range(3):  # a few rounds: the race, if there is one, gets several chances
            start = threading.Barrier(len(data))
            got = [None] * len(data)

            def send(i):
                start.wait()
                got[i] = d.upload("/v1/datasets", data[i], {"name": "ds%d" % i}, token=a)

            threads = [threading.Thread(target=send, args=(i,)) for i in range(len(data))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ok = [r for r in got if r.status == 201]
            refused = [r for r in got if r.status != 201]
            assert len(ok) == 2, got
            for r in refused:
                assert r.status == 413 and r.error()["code"] == "quota_exceeded", r
                assert "would pass the limit of %d bytes per owner" % quota in r.error()["message"], r
            held = sum(m["bytes"] for m in d.get("/v1/models", token=a).json()["models"])
            held += sum(x["bytes"] for x in d.get("/v1/datasets", token=a).json()["datasets"]
                        if x["kind"] == "upload")
            assert held <= quota, (rnd, held, quota)
            # a refused upload leaves neither its temp file nor a blob
            d.wait_for(lambda: d.files_under("tmp") == [], what="no upload left behind")
            assert len(d.files_under("blobs")) == 2, d.files_under("blobs")
            for r in ok:
                assert d.delete("/v1/datasets/" + r.json()["id"], token=a).status == 204
            assert d.files_under("blobs") == []


# ---------------------------------------------------------------- live events (SSE)

def test_events_reconnect_with_last_event_id_misses_nothing():
    # One real job serves two checks: its live events, and the webhook events a worker's
    # changes put in the outbox (job.started, job.progress every second, job.succeeded).
    rec = Receiver(SECRET)
    with Daemon(workers=1, config=LOCAL_HOOKS) as d:
        mid = d.upload_model().json()["id"]
        hook = {"url": rec.url, "secret": SECRET, "progress_every_s": 1}
        j = d.create_job(mid, webhook=hook, **TINY).json()["id"]
        # the first few events, then the client hangs up mid-job
        first, ended, r = d.events(j, max_events=4)
        assert r.status == 200 and r.headers["content-type"] == "text/event-stream", r
        assert r.headers.get("x-request-id") and r.headers["cache-control"] == "no-cache"
        assert not ended and len(first) == 4, first
        assert first[0]["event"] == "state" and first[0]["data"]["data"]["state"] == "queued"
        # reconnect where it stopped: the rest, up to the job's end, and the stream closes
        rest, ended, _ = d.events(j, last_event_id=first[-1]["id"], timeout=600)
        assert ended and rest, rest
        last = rest[-1]
        assert last["event"] == "state" and last["data"]["data"]["state"] == "succeeded", last
        assert last["data"]["data"]["job"]["state"] == "succeeded", last  # the job as it ended
        assert last["data"]["data"]["job"]["metrics"]["gplq"] > 0.5, last
        # the whole stream, read again after the end: exactly the two parts, each id once
        full, ended, _ = d.events(j)
        assert ended
        ids = [e["id"] for e in first + rest]
        assert ids == [e["id"] for e in full], (ids, [e["id"] for e in full])
        assert ids == sorted(set(ids)), ids
        assert all(e["data"]["id"] == e["id"] and e["data"]["type"] == e["event"] for e in full)
        kinds = [e["event"] for e in full]
        assert kinds.count("progress") >= 3, kinds
        states = [e["data"]["data"]["state"] for e in full if e["event"] == "state"]
        assert states == ["queued", "running", "succeeded"], states
        stages = [e["data"]["data"]["stage"] for e in full if e["event"] == "progress"]
        assert "stage1" in stages, stages
        # ?after= for clients that cannot set a header: the same continuation
        again, ended, _ = d.events(j, after=first[-1]["id"])
        assert ended and [e["id"] for e in again] == [e["id"] for e in rest]
        # a stream at its end is empty and closes at once
        tail, ended, _ = d.events(j, last_event_id=ids[-1], timeout=10)
        assert ended and tail == []
        other = d.create_token("someone")
        ev, _, r = d.events(j, token=other)
        assert r.status == 404 and ev == [], r
        _, _, r = d.events(j, token=None)
        assert r.status == 401, r
        _, _, r = d.events(j, last_event_id="yesterday")
        assert r.status == 400, r

        dl = d.wait_for(lambda: (lambda x: x if x and all(y["status"] == "delivered" for y in x)
                                 and x[-1]["type"] == "job.succeeded" else None)(deliveries(d, j)),
                        what="every webhook event delivered")
        got = sorted(rec.got, key=lambda g: g["json"]["created"])
        types = [g["json"]["type"] for g in rec.got]
        assert types[0] == "job.started" and types[-1] == "job.succeeded", types
        assert "job.progress" in types and all(g["sig_ok"] for g in rec.got), types
        assert [x["id"] for x in dl] == [g["json"]["id"] for g in rec.got], (dl, types)
        prog = [g["json"] for g in got if g["json"]["type"] == "job.progress"]
        assert all(b["created"] - a["created"] >= 1 for a, b in zip(prog, prog[1:])), prog
        assert all(p["job"]["state"] == "running" and p["job"]["progress"] for p in prog), prog
    rec.close()


def test_events_wait_without_a_thread_heartbeat_limit_and_shutdown():
    config = {"max_event_streams": 3, "event_heartbeat_s": 1, "http_threads": 2}
    with Daemon(workers=0, config=config) as d:
        mid = d.upload_model().json()["id"]
        jobs = [d.create_job(mid).json()["id"] for _ in range(3)]
        got = {j: [] for j in jobs}
        done = {}

        def listen(j):
            ev, ended, r = d.events(j, on_event=lambda e: got[j].append(e), timeout=60)
            done[j] = (ended, r.comments)
        threads = [threading.Thread(target=listen, args=(j,)) for j in jobs]
        for t in threads:
            t.start()
        d.wait_for(lambda: all(got[j] for j in jobs), what="the first event of each stream")
        # three streams wait on two HTTP threads, and the API still answers at once
        t0 = time.time()
        for _ in range(5):
            assert d.get("/v1/jobs/" + jobs[0]).status == 200
        assert time.time() - t0 < 2, time.time() - t0
        # the fourth stream is refused, with a hint
        _, _, r = d.events(jobs[0], timeout=10)
        assert r.status == 503 and "retry-after" in r.headers, r
        # an event reaches its stream promptly; the job's end ends it
        t0 = time.time()
        assert d.post("/v1/jobs/%s/cancel" % jobs[0]).status == 200
        threads[0].join(10)
        assert not threads[0].is_alive() and done[jobs[0]][0], done
        assert time.time() - t0 < 3, time.time() - t0
        assert got[jobs[0]][-1]["data"]["data"]["state"] == "canceled"
        time.sleep(2.5)  # silent streams get keep-alive comments
        # SIGTERM with two streams waiting: they end, the daemon exits 0
        assert d.stop(signal.SIGTERM, timeout=20) == 0
        for t in threads:
            t.join(10)
            assert not t.is_alive()
        assert all(done[j][0] for j in jobs[1:]), done
        assert any("keep-alive" in c for c in done[jobs[1]][1]), done


# ---------------------------------------------------------------- webhooks

def test_webhook_signed_retried_after_500s_then_delivered():
    rec = Receiver(SECRET, [500, 500, 200])
    try:
        with Daemon(workers=0, config=LOCAL_HOOKS) as d:
            a = d.create_token("pipeline")
            mid = d.upload_model(token=a).json()["id"]
            r = d.create_job(mid, token=a, webhook={"url": rec.url, "secret": SECRET})
            assert r.status == 201, r
            job = r.json()
            assert job["webhook"] == {"url": rec.url, "progress_every_s": None}, job["webhook"]
            assert d.post("/v1/jobs/%s/cancel" % job["id"], token=a).status == 200
            got = rec.wait(3)
            t_sent = time.time()
            # the same event three times: same id and body, attempts 1, 2, 3, each signed
            assert [g["status"] for g in got] == [500, 500, 200], got
            assert all(g["sig_ok"] for g in got), [g["headers"] for g in got]
            assert all(abs(g["t"] - g["at"]) < 60 for g in got), got  # a fresh timestamp
            assert len({g["headers"]["x-gplq-delivery"] for g in got}) == 1, got
            assert [g["headers"]["x-gplq-attempt"] for g in got] == ["1", "2", "3"], got
            assert len({g["body"] for g in got}) == 1
            assert got[1]["at"] - got[0]["at"] >= 0.09 and got[2]["at"] - got[1]["at"] >= 0.19, \
                [g["at"] for g in got]  # backoff 200 ms doubling, jitter 0.5 to 1.5
            ev = got[0]["json"]
            assert ev["type"] == "job.canceled" and got[0]["headers"]["x-gplq-event"] == "job.canceled"
            assert ev["id"] == got[0]["headers"]["x-gplq-delivery"] and ev["id"].startswith("evt_")
            assert abs(ev["created"] - t_sent) < 60, ev
            assert ev["job"]["id"] == job["id"] and ev["job"]["state"] == "canceled", ev
            assert got[0]["headers"]["content-type"] == "application/json"
            # a signature with another secret does not verify
            bad = hmac.new(b"not the secret", b"%d." % got[0]["t"] + got[0]["body"], hashlib.sha256)
            assert bad.hexdigest() not in got[0]["headers"]["x-gplq-signature"]
            # every attempt, visible to the owner
            dl = d.wait_for(lambda: (lambda x: x if x and x[0]["status"] == "delivered" else None)(
                deliveries(d, job["id"], a)), what="the delivery recorded")
            assert len(dl) == 1 and dl[0]["id"] == ev["id"] and dl[0]["type"] == "job.canceled", dl
            att = dl[0]["attempts"]
            assert [x["status_code"] for x in att] == [500, 500, 200], att
            assert [x["attempt"] for x in att] == [1, 2, 3], att
            assert all(x["latency_ms"] >= 0 and x["at"] for x in att), att
            assert "500" in att[0]["error"] and att[2]["error"] is None, att
            assert dl[0]["finished_at"] and dl[0]["next_attempt_at"] is None, dl
            # the secret never comes back out of the API
            for path in ("/v1/jobs/" + job["id"], "/v1/jobs", "/v1/jobs/%s/webhooks" % job["id"]):
                assert SECRET.encode() not in d.get(path, token=a).body, path
            evs, _, _ = d.events(job["id"], token=a)
            assert evs and not any(SECRET in json.dumps(e) for e in evs)
            m = d.get("/metrics", token=None).body.decode()
            assert 'gplq_webhook_deliveries_total{outcome="retry"} 2' in m, m
            assert 'gplq_webhook_deliveries_total{outcome="delivered"} 1' in m, m
            d.stop()
            assert SECRET not in d.log_text()
    finally:
        rec.close()


def test_webhook_survives_a_daemon_kill_between_attempts():
    rec = Receiver(SECRET, [500, 200])
    config = dict(LOCAL_HOOKS, webhook_backoff_ms=2000)
    try:
        with Daemon(workers=0, config=config) as d:
            mid = d.upload_model().json()["id"]
            j = d.create_job(mid, webhook={"url": rec.url, "secret": SECRET}).json()["id"]
            assert d.post("/v1/jobs/%s/cancel" % j).status == 200
            rec.wait(1)
            # the failed attempt is on record, the retry 1 to 3 s away: kill the daemon now
            d.wait_for(lambda: deliveries(d, j)[0]["attempts"], what="attempt 1 recorded")
            d.kill()
            killed = time.time()
            time.sleep(0.5)
            assert len(rec.got) == 1
            d.restart()
            got = rec.wait(2, timeout=30)
            assert got[1]["at"] > killed and got[1]["status"] == 200 and got[1]["sig_ok"], got
            assert got[1]["headers"]["x-gplq-attempt"] == "2"
            assert got[0]["body"] == got[1]["body"]  # the same event, from the outbox
            dl = d.wait_for(lambda: (lambda x: x if x[0]["status"] == "delivered" else None)(
                deliveries(d, j)), what="delivered after the restart")
            assert [x["status_code"] for x in dl[0]["attempts"]] == [500, 200], dl
            time.sleep(1)
            assert len(rec.got) == 2  # and not again
    finally:
        rec.close()


def test_webhook_redirects_are_not_followed_and_attempts_run_out():
    rec = Receiver(SECRET, [302, 302, 302])
    config = dict(LOCAL_HOOKS, webhook_max_attempts=2)
    try:
        with Daemon(workers=0, config=config) as d:
            mid = d.upload_model().json()["id"]
            j = d.create_job(mid, webhook={"url": rec.url, "secret": SECRET}).json()["id"]
            d.post("/v1/jobs/%s/cancel" % j)
            dl = d.wait_for(lambda: (lambda x: x if x[0]["status"] == "failed" else None)(
                deliveries(d, j)), what="the delivery given up")
            assert [x["status_code"] for x in dl[0]["attempts"]] == [302, 302], dl
            time.sleep(0.5)
            assert [g["path"] for g in rec.got] == ["/hook", "/hook"], rec.got  # never /elsewhere
            m = d.get("/metrics").body.decode()
            assert 'gplq_webhook_outbox{status="failed"} 1' in m, m
    finally:
        rec.close()


def test_webhook_policy_of_now_applies_to_pending_deliveries():
    rec = Receiver(SECRET, [500])
    try:
        with Daemon(workers=0, config=dict(LOCAL_HOOKS, webhook_backoff_ms=1500)) as d:
            mid = d.upload_model().json()["id"]
            j = d.create_job(mid, webhook={"url": rec.url, "secret": SECRET}).json()["id"]
            d.post("/v1/jobs/%s/cancel" % j)
            rec.wait(1)
            d.wait_for(lambda: deliveries(d, j)[0]["attempts"], what="attempt 1 recorded")
            d.restart(config={"webhook_backoff_ms": 100})  # the allowlist is gone
            dl = d.wait_for(lambda: (lambda x: x if x[0]["status"] == "failed" else None)(
                deliveries(d, j)), what="the delivery refused")
            att = dl[0]["attempts"]
            assert len(att) == 2 and att[1]["status_code"] is None and "loopback" in att[1]["error"], att
            assert len(rec.got) == 1
    finally:
        rec.close()


def test_webhook_ssrf_guard():
    rec = Receiver(SECRET)
    try:
        with Daemon(workers=0, config={"webhook_max_attempts": 1}) as d:  # no allowlist
            mid = d.upload_model().json()["id"]
            bad = [({"url": rec.url, "secret": SECRET}, "webhook.url"),  # loopback
                   ({"url": "http://169.254.169.254/latest/meta-data", "secret": SECRET}, "webhook.url"),
                   ({"url": "http://10.1.2.3/x", "secret": SECRET}, "webhook.url"),
                   ({"url": "http://[::1]:8080/x", "secret": SECRET}, "webhook.url"),
                   ({"url": "http://localhost:8080/x", "secret": SECRET}, "webhook.url"),
                   ({"url": "ftp://example.com/x", "secret": SECRET}, "webhook.url"),
                   ({"url": "file:///etc/passwd", "secret": SECRET}, "webhook.url"),
                   ({"url": "http://user:pw@example.com/x", "secret": SECRET}, "webhook.url"),
                   ({"url": "example.com/x", "secret": SECRET}, "webhook.url"),
                   ({"url": "https://example.com/x", "secret": "short"}, "webhook.secret"),
                   ({"url": "https://example.com/x"}, "webhook.secret"),
                   ({"url": "https://example.com/x", "secret": SECRET, "progress_every_s": 0.1},
                    "webhook.progress_every_s"),
                   ({"url": "https://example.com/x", "secret": SECRET, "retries": 3}, "webhook"),
                   ("https://example.com/x", "webhook")]
            for hook, field in bad:
                r = d.create_job(mid, webhook=hook)
                assert r.status == 400 and r.error()["field"] == field, (hook, r)
            r = d.create_job(mid, webhook={"url": "https://hooks.example.com/gplq", "secret": SECRET,
                                           "progress_every_s": 5})
            assert r.status == 201 and r.json()["webhook"]["progress_every_s"] == 5, r
            d.post("/v1/jobs/%s/cancel" % r.json()["id"])
            # a name that resolves to a private address passes the submit check and is
            # refused when the delivery connects
            name = socket.gethostname()
            try:
                addr = socket.gethostbyname(name)
            except OSError:
                addr = None
            if addr and (addr.startswith("127.") or addr.startswith("10.") or addr.startswith("192.168.")
                         or re.match(r"172\.(1[6-9]|2\d|3[01])\.", addr)):
                url = "http://%s:%d/hook" % (name, rec.port)
                r = d.create_job(mid, webhook={"url": url, "secret": SECRET})
                assert r.status == 201, r
                d.post("/v1/jobs/%s/cancel" % r.json()["id"])
                dl = d.wait_for(lambda: (lambda x: x if x[0]["status"] == "failed" else None)(
                    deliveries(d, r.json()["id"])), what="the delivery refused")
                err = dl[0]["attempts"][0]["error"]
                assert "not a public address" in err and dl[0]["attempts"][0]["status_code"] is None, dl
                assert rec.got == [], rec.got
            else:
                print("  (no private host name here; the connect-time check is not exercised)")
    finally:
        rec.close()


if __name__ == "__main__":
    run_tests(globals())
