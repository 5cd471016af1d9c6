"""test_store_pg: the storage layer's tests (build/tests/test_store) on PostgreSQL.

The same C cases that run on a SQLite file run here on a real PostgreSQL 15 server started for
the purpose (pg_harness: initdb in a temporary folder, a free loopback port, an unprivileged
user), on a database of their own that each case empties first (GPLQ_TEST_DB). Then two things
only PostgreSQL has: a database whose schema is newer than the build is refused by gplqd itself
with a message saying so, and `gplqd migrate` reports the versions it went from and to.
"""
import json
import os
import subprocess

from gplqd_harness import BUILD, GPLQD, run_tests
import pg_harness


def test_store_cases_on_postgresql():
    pg = pg_harness.shared()
    url = pg.new_database("store")
    env = dict(os.environ, GPLQ_TEST_DB=url)
    r = subprocess.run([os.path.join(BUILD, "tests", "test_store")], env=env,
                       capture_output=True, text=True, timeout=600)
    print(r.stdout + r.stderr)
    assert r.returncode == 0, "test_store failed on PostgreSQL"
    last = r.stdout.strip().splitlines()[-1]
    assert last.endswith(" 0 failed") and " passed" in last, last


def test_migrate_then_refuse_a_newer_schema():
    pg = pg_harness.shared()
    url = pg.new_database("migrate")
    db = url.rsplit("/", 1)[1]
    r = subprocess.run([GPLQD, "migrate", "--db", url], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    first = json.loads(r.stdout)
    assert first["backend"] == "postgresql" and first["from"] == 0 and first["to"] >= 3, first
    r = subprocess.run([GPLQD, "migrate", "--db", url], capture_output=True, text=True, timeout=60)
    again = json.loads(r.stdout)
    assert again["from"] == again["to"] == first["to"], again
    # a node of a newer build moved the schema on: this one refuses to start, and says why
    pg.psql("UPDATE gplq_schema SET version = 999", db=db)
    data = os.path.join(pg.root, "node-data")
    r = subprocess.run([GPLQD, "--db", url, "--data-dir", data, "--workers", "0",
                        "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r
    assert "999" in r.stderr and "newer" in r.stderr, r.stderr
    assert pg.psql("SELECT version FROM gplq_schema", db=db).strip() == "999"


if __name__ == "__main__":
    run_tests(globals())
