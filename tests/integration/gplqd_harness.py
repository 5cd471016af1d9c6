"""gplqd_harness: a real gplqd for the integration tests (tests/integration/test_*.py).

Standard library only. A Daemon starts build/gplqd on a free 127.0.0.1 port (--listen
127.0.0.1:0, reading the {"event":"listening"} line it prints on stdout) with a temporary data
directory, talks HTTP to it, and stops it; it is a context manager, and every daemon still
running when the test program ends is killed, whatever failed. run_tests() runs a module's
test_* functions and prints the "N passed, N failed" line tests/run.sh sums.

    from gplqd_harness import Daemon, run_tests
    def test_health():
        with Daemon(workers=0) as d:
            r = d.get("/v1/health")
            assert r.status == 200 and r.json()["status"] == "ok"
    if __name__ == "__main__":
        run_tests(globals())

Tokens: on its first start on a data directory gplqd makes an admin token and prints it on
stdout ({"event":"token",...}) before the listening line; the Daemon keeps it (d.token, also
across restarts on the same data directory) and sends it with every request. A request can
carry another token (token="gplq_...") or none (token=None); d.create_token(name) and
d.revoke_token(token) run `gplqd token` on the daemon's data directory.

The build directory is $GPLQ_BUILD (tests/run.sh sets it), else build/ at the repository root.

Backends: GPLQ_TEST_DB=pg runs every Daemon on PostgreSQL instead of its SQLite file: a server
started once for the test program (pg_harness.shared()) and a new database for each Daemon
(kept across its restarts), given as --db. Daemon(db=URL) asks for one database explicitly (the
cluster tests give two nodes the same one).
"""
import atexit
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("GPLQ_BUILD") or os.path.join(ROOT, "build"))
GPLQD = os.path.join(BUILD, "gplqd")
WORKER = os.path.join(BUILD, "gplq-worker")
DEMO_MODEL = os.path.join(ROOT, "models", "vit-fmnist.safetensors")
BACKEND = "pg" if os.environ.get("GPLQ_TEST_DB") in ("pg", "postgresql") else "sqlite"

_live = []  # daemons to kill at exit
_ADMIN = object()  # request(token=...) default: the daemon's own admin token


@atexit.register
def _kill_all():
    for d in list(_live):
        d.kill()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # a dict with lower-case names
        self.body = body        # bytes

    def json(self):
        return json.loads(self.body.decode()) if self.body else None

    def error(self):
        """The {"error": {...}} object of an error response (or {})."""
        try:
            return (self.json() or {}).get("error") or {}
        except ValueError:
            return {}

    def __repr__(self):
        return "<%d %s>" % (self.status, self.body[:300])


class Daemon:
    """One gplqd. data_dir None: a new temp directory, removed at close unless keep=True.
    config: a dict written as the --config file. args: more flags."""

    def __init__(self, workers=0, data_dir=None, args=(), config=None, env=None, keep=False,
                 start_timeout=20, db=None):
        self.root = tempfile.mkdtemp(prefix="gplqd-it-")
        if db is None and BACKEND == "pg":
            import pg_harness
            db = pg_harness.shared().new_database()
        self.db = db  # a postgresql:// URL, or None: DATA/gplq.db
        self.data_dir = data_dir or os.path.join(self.root, "data")
        self.keep = keep  # a data_dir given by the caller is outside root and never removed
        self.log_path = os.path.join(self.root, "gplqd.log")
        self.workers, self.args, self.config, self.env = workers, list(args), config, env
        self.start_timeout = start_timeout
        self.proc = None
        self.url = self.host = None
        self.port = 0
        self.token = None  # the admin token gplqd printed at its first start here
        self._buf = b""

    # ---- process
    def start(self):
        cmd = [GPLQD, "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
               "--workers", str(self.workers)]
        if self.db:
            cmd += ["--db", self.db]
        if self.config is not None:
            path = os.path.join(self.root, "gplqd.json")
            with open(path, "w") as f:
                json.dump(self.config, f)
            cmd += ["--config", path]
        cmd += self.args
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        env.update(self.env or {})
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=env)
        _live.append(self)
        self._buf = b""
        deadline = time.time() + self.start_timeout
        while True:
            line = self._read_line(max(0.1, deadline - time.time()))
            if not line:
                self.kill()
                raise RuntimeError("gplqd did not print its listening line; log:\n" + self.log_text())
            ev = json.loads(line)
            if ev.get("event") == "token":  # first start on this data directory
                self.token = ev["token"]
                continue
            assert ev.get("event") == "listening", line
            break
        self.url = ev["url"]
        u = urllib.parse.urlparse(self.url)
        self.host, self.port = u.hostname, u.port
        return self

    def _read_line(self, timeout):
        fd = self.proc.stdout.fileno()
        deadline = time.time() + timeout
        while True:
            if b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                return line.decode()
            if time.time() >= deadline:
                return None
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                ch = os.read(fd, 4096)
                if not ch:
                    return None
                self._buf += ch
            elif self.proc.poll() is not None:
                return None

    def send_signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends sig and waits; returns the exit code (negative: killed by a signal)."""
        if not self.proc:
            return None
        self.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("gplqd did not exit within %d s of signal %d" % (timeout, sig))
        self._forget()
        return rc

    def kill(self):
        """SIGKILL, as a crash would (the workers notice their stdin closing)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._forget()

    def _forget(self):
        if self in _live:
            _live.remove(self)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def restart(self, **kw):
        """Starts gplqd again on the same data directory (killing it first if it runs);
        keyword arguments replace workers, args, config or env."""
        self.kill()
        for k in ("workers", "args", "config", "env"):
            if k in kw:
                setattr(self, k, kw[k])
        return self.start()

    def close(self):
        self.kill()
        if not self.keep and not os.environ.get("GPLQ_KEEP"):  # GPLQ_KEEP=1: keep logs and data
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if exc[0] is not None:
            sys.stderr.write("--- gplqd log (%s) ---\n%s\n" % (self.log_path, self.log_text()[-6000:]))
        self.close()
        return False

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_lines(self):
        """The log's JSON lines as objects (other lines skipped)."""
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    # ---- the database, as another program would see it
    def sql(self, text):
        """Runs text on the daemon's database (its SQLite file, or its PostgreSQL database) on
        a connection of its own; returns the rows as tuples of strings. Values are written in
        the text (tests only: they come from the test, never from a client)."""
        if self.db:
            import pg_harness
            out = pg_harness.shared().psql(text, db=self.db.rsplit("/", 1)[1])
            return [tuple(line.split("|")) for line in out.splitlines() if line]
        import sqlite3
        c = sqlite3.connect(os.path.join(self.data_dir, "gplq.db"), timeout=10)
        try:
            rows = [tuple(str(v) for v in r) for r in c.execute(text).fetchall()]
            c.commit()
        finally:
            c.close()
        return rows

    def sqlite_only(self, what):
        """True (and says so) when this daemon is on PostgreSQL, for a test of SQLite itself."""
        if self.db:
            print("  (%s: SQLite only)" % what, flush=True)
            return True
        return False

    # ---- tokens
    def token_command(self, *args):
        """Runs `gplqd token ARGS --data-dir DATA`; returns the CompletedProcess."""
        db = ["--db", self.db] if self.db else []
        return subprocess.run([GPLQD, "token"] + list(args) + ["--data-dir", self.data_dir] + db,
                              capture_output=True, text=True, timeout=60)

    def create_token(self, name, admin=False):
        """A new token for owner name (an admin one with admin=True); returns the token."""
        r = self.token_command("create", "--name", name, *(["--admin"] if admin else []))
        assert r.returncode == 0, r
        token = r.stdout.strip()
        assert token.startswith("gplq_"), r
        return token

    def revoke_token(self, token):
        r = self.token_command("revoke", token)
        assert r.returncode == 0, r
        return json.loads(r.stdout)

    def auth_header(self, token=_ADMIN):
        """The Authorization header line for a raw-socket request (bytes, with its CRLF)."""
        t = self.token if token is _ADMIN else token
        return b"Authorization: Bearer %s\r\n" % t.encode() if t else b""

    # ---- HTTP
    def request(self, method, path, body=None, headers=None, json_body=None, timeout=60,
                token=_ADMIN):
        """One request on a fresh connection. body: bytes, or a file object (streamed).
        token: sent as a Bearer token; by default the daemon's admin token, None for none."""
        h = dict(headers or {})
        t = self.token if token is _ADMIN else token
        if t and not any(k.lower() == "authorization" for k in h):
            h["Authorization"] = "Bearer " + t
        if json_body is not None:
            body = json.dumps(json_body).encode()
            h.setdefault("Content-Type", "application/json")
        if hasattr(body, "read"):
            h.setdefault("Content-Length", str(os.fstat(body.fileno()).st_size))
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            c.close()

    def events(self, job_id, last_event_id=None, after=None, token=_ADMIN, timeout=60,
               max_events=None, on_event=None):
        """Reads the job's Server-Sent Events (GET /v1/jobs/{id}/events). Returns (events,
        ended, response): events as dicts {id (int), event, data (parsed JSON)}, in order;
        ended True when the server ended the stream, False when max_events were read and the
        client hung up. on_event(e) is called as each arrives. Comments are counted in
        response.comments."""
        path = "/v1/jobs/%s/events" % job_id + ("?after=%d" % after if after is not None else "")
        h = {"Accept": "text/event-stream"}
        t = self.token if token is _ADMIN else token
        if t:
            h["Authorization"] = "Bearer " + t
        if last_event_id is not None:
            h["Last-Event-ID"] = str(last_event_id)
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        events, ended = [], False
        try:
            c.request("GET", path, headers=h)
            r = c.getresponse()
            resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, b"")
            resp.comments = []
            if r.status != 200:
                resp.body = r.read()
                return events, True, resp
            cur = {}
            while True:
                line = r.readline()
                if not line:
                    ended = True
                    break
                line = line.decode().rstrip("\n")
                if line == "":
                    if "data" in cur:
                        e = {"id": int(cur["id"]) if "id" in cur else None,
                             "event": cur.get("event", "message"), "data": json.loads(cur["data"])}
                        events.append(e)
                        if on_event:
                            on_event(e)
                        if max_events is not None and len(events) >= max_events:
                            break
                    cur = {}
                elif line.startswith(":"):
                    resp.comments.append(line[1:].strip())
                else:
                    k, _, v = line.partition(":")
                    cur[k] = v[1:] if v.startswith(" ") else v
            return events, ended, resp
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=None, **kw):
        return self.request("POST", path, json_body=json_body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def upload(self, route, data_or_path, query=None, token=_ADMIN):
        """POST a model or dataset: bytes, or a file path (streamed from disk)."""
        path = route + ("?" + urllib.parse.urlencode(query) if query else "")
        h = {"Content-Type": "application/octet-stream"}
        if isinstance(data_or_path, (bytes, bytearray)):
            return self.request("POST", path, body=bytes(data_or_path), headers=h, token=token)
        with open(data_or_path, "rb") as f:
            return self.request("POST", path, body=f, headers=h, token=token)

    def upload_model(self, path=DEMO_MODEL, token=_ADMIN, **query):
        return self.upload("/v1/models", path, query or None, token=token)

    def create_job(self, model_id, dataset_id="fashion-mnist", headers=None, token=_ADMIN,
                   **options):
        spec = dict(model_id=model_id, dataset_id=dataset_id, **options)
        return self.post("/v1/jobs", spec, headers=headers, token=token)

    def job(self, job_id, token=_ADMIN):
        r = self.get("/v1/jobs/" + job_id, token=token)
        assert r.status == 200, r
        return r.json()

    def wait_for_state(self, job_id, states, timeout=600, poll=0.2):
        """Polls the job until its state is one of states (a string or a list); returns it."""
        states = [states] if isinstance(states, str) else list(states)
        deadline = time.time() + timeout
        job = None
        while time.time() < deadline:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            if self.proc.poll() is not None:
                raise AssertionError("gplqd exited (%s) while waiting for %s" % (self.proc.returncode, job_id))
            time.sleep(poll)
        raise AssertionError("job %s still %s after %d s (wanted %s)"
                             % (job_id, job and job["state"], timeout, states))

    def wait_for(self, predicate, timeout=30, poll=0.1, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = predicate()
            if v:
                return v
            time.sleep(poll)
        raise AssertionError("timed out waiting for " + what)

    def raw_socket(self, timeout=30):
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        return s

    def files_under(self, sub):
        """Files (recursively) under DATA/sub."""
        out = []
        for base, _, files in os.walk(os.path.join(self.data_dir, sub)):
            out += [os.path.join(base, f) for f in files]
        return out


def read_http_response(sock, timeout=30):
    """Reads one HTTP response from a raw socket: (status, headers dict, body bytes)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        ch = sock.recv(65536)
        if not ch:
            break
        buf += ch
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/"):
        raise AssertionError("no HTTP response: %r" % buf[:200])
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        ch = sock.recv(65536)
        if not ch:
            break
        body += ch
    return status, headers, body


def run_tests(namespace, argv=None):
    """Runs every test_* function of namespace in order (a name filter may be given as the first
    argument), printing "ok"/"FAIL" per test and the summary line; exits 1 if any failed."""
    argv = sys.argv[1:] if argv is None else argv
    names = [n for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    if argv:
        names = [n for n in names if argv[0] in n]
    passed = failed = 0
    for n in names:
        t0 = time.time()
        try:
            namespace[n]()
            passed += 1
            print("ok   %s (%.1f s)" % (n, time.time() - t0), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s" % n, flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
    _kill_all()
    print("%s: %d passed, %d failed" % (os.path.basename(sys.argv[0]), passed, failed), flush=True)
    sys.exit(1 if failed else 0)
