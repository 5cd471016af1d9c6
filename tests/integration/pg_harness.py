"""pg_harness: a real PostgreSQL server for the tests, from Debian's packages.

Standard library only. Postgres() makes a new cluster with initdb in a temporary folder and runs
`postgres` on a free 127.0.0.1 port (its socket in that folder too), trust authentication for
its one role "gplq"; new_database() gives each test a database of its own and its URL
(postgresql://gplq@127.0.0.1:PORT/NAME), restart() stops the server and starts it again on the
same port and data (what the cluster test does under a running job), stop() ends it and
removes the folder. Every server still running when the test program ends is stopped.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the system user
"gplqtest" (created here if missing, with no home and no shell), through setpriv. As any other
user it runs as that user. setpriv, not runuser, starts it: setpriv execs the server itself, so
its pid is the server's and a signal to it (the fast shutdown's SIGINT) reaches PostgreSQL.

shared() is one server for the whole test program, started at the first call: what
gplqd_harness uses when GPLQ_TEST_DB=pg runs the service tests on PostgreSQL.

The binaries are /usr/lib/postgresql/15/bin (the postgresql-15 package; $GPLQ_PG_BIN to use
another version's).
"""
import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

_USER = "gplqtest"
_live = []


def pg_bin():
    env = os.environ.get("GPLQ_PG_BIN")
    if env:
        return env
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise RuntimeError("PostgreSQL's server is not installed "
                           "(bash scripts/install-deps.sh --test installs it)")
    return os.path.dirname(found[-1])


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _ensure_user():
    """The unprivileged user the server runs as when we are root (created once)."""
    try:
        return pwd.getpwnam(_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", _USER], check=True, capture_output=True)
        return pwd.getpwnam(_USER)


@atexit.register
def _stop_all():
    for p in list(_live):
        p.stop()


def _on_sigterm(signum, frame):
    # tests/run.sh's timeout ends a test with SIGTERM: exit through atexit, so that no server
    # outlives its test
    sys.exit(128 + signum)


class Postgres:
    def __init__(self, fast=True):
        """fast: fsync off (tests, whose data is thrown away); False keeps PostgreSQL's
        durability settings except synchronous_commit, off as SQLite's synchronous=NORMAL
        (a crash may lose the last commits, never corrupts): what the bench compares."""
        self.bin = pg_bin()
        self.fast = fast
        self.root = tempfile.mkdtemp(prefix="gplq-pg-")
        self.data = os.path.join(self.root, "data")
        self.log_path = os.path.join(self.root, "postgres.log")
        self.port = _free_port()
        self.proc = None
        self.as_root = os.geteuid() == 0
        self._n = 0
        if self.as_root:
            u = _ensure_user()
            os.chown(self.root, u.pw_uid, u.pw_gid)
        os.chmod(self.root, 0o755)  # the tests (root) read the log; the server's data is 0700
        self._run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "gplq",
                   "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])

    def _cmd(self, argv):
        if not self.as_root:
            return argv
        return ["setpriv", "--reuid=" + _USER, "--regid=" + _USER, "--clear-groups",
                "--reset-env", "--"] + argv

    def _run(self, argv):
        r = subprocess.run(self._cmd(argv), capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("%s failed: %s%s" % (argv[0], r.stdout, r.stderr))
        return r

    def start(self, timeout=30):
        opts = ["-D", self.data, "-p", str(self.port), "-k", self.root,
                "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
                "-c", "shared_buffers=64MB", "-c", "synchronous_commit=off"]
        if self.fast:
            opts += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self._cmd([os.path.join(self.bin, "postgres")] + opts),
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        if self not in _live:
            _live.append(self)
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited at start:\n" + self.log_text()[-3000:])
            r = subprocess.run([os.path.join(self.bin, "pg_isready"), "-h", "127.0.0.1", "-p",
                                str(self.port), "-U", "gplq", "-d", "postgres"],
                               capture_output=True)
            if r.returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError("postgres did not accept connections within %d s" % timeout)

    def shutdown(self, timeout=60):
        """Stops the server (fast shutdown: connections are cut, as in a restart)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: PostgreSQL's fast shutdown
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_s=0.0):
        """Stops the server and starts it again (same port and data) after down_s seconds."""
        self.shutdown()
        time.sleep(down_s)
        return self.start()

    def stop(self):
        self.shutdown()
        if self in _live:
            _live.remove(self)
        if not os.environ.get("GPLQ_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql, db="postgres"):
        """Runs sql with psql; returns its output (unaligned, tuples only)."""
        r = subprocess.run([os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p",
                            str(self.port), "-U", "gplq", "-d", db, "-v", "ON_ERROR_STOP=1",
                            "-At", "-c", sql], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("psql: %s" % r.stderr)
        return r.stdout

    def url(self, db):
        return "postgresql://gplq@127.0.0.1:%d/%s" % (self.port, db)

    def new_database(self, prefix="gplq"):
        """A new empty database; returns its URL."""
        self._n += 1
        name = "%s_%d_%d" % (prefix, os.getpid(), self._n)
        self.psql("CREATE DATABASE %s" % name)
        return self.url(name)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""


_shared = None


def shared():
    """One server for the test program (started on the first call)."""
    global _shared
    if _shared is None:
        _shared = Postgres().start()
    return _shared
