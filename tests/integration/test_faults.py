#!/usr/bin/env python3
"""test_faults: gplqd when its disk fills up (issue 15, "Faults and chaos").

A small tmpfs is mounted for each case (the tests run as root: mount(8) must be allowed; without
it every case fails saying so, it does not skip), filled to the last byte with a filler file,
and freed again by removing it, with the daemon running throughout:

- an upload into a full data dir is a 507 insufficient_storage that names no path, leaves no
  temp file and no blob and holds nothing against the owner's quota; once space returns, the
  same upload is a 201, without a restart;
- a job whose artifacts folder is full, and one whose stage-1 checkpoint cannot be saved, fail
  that attempt (the error says the disk was full and names no path), list no artifact and leave
  on disk only complete files or none; they are retried, and once space returns the retries
  succeed, with the same tensors (one resumed from its checkpoint, one ran stage 1 again);
- a request whose SQLite commit finds the disk full is a 503 with Retry-After; nothing of it is
  recorded, the database passes PRAGMA integrity_check, and once space returns the same request
  succeeds, again without a restart.

Run: /usr/bin/python3 tests/integration/test_faults.py [name-filter]   (GPLQ_BUILD=build)
"""
import contextlib
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import Daemon, run_tests  # noqa: E402
from jobs_common import ARTIFACTS, TINY, tensor_bytes, upload_demo  # noqa: E402

# Smaller still than TINY (as test_durability's twenty jobs): two stage-1 steps.
SMALL = dict(TINY, train_subset=64, eval_subset=64, batch_size=32, pca_samples=64,
             calib_images=32, qwt_images=32)


@contextlib.contextmanager
def tmpfs(path, size_mb):
    """A tmpfs of size_mb mounted at path (created if missing), unmounted on the way out."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0700" % size_mb, "tmpfs",
                        path], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("test_faults needs root and mount(8) to mount a small tmpfs at %s "
                             "(it fills it to provoke a full disk): %s"
                             % (path, (r.stderr or r.stdout).strip()))
    try:
        yield path
    finally:
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)


@contextlib.contextmanager
def data_dir_on_tmpfs(size_mb):
    """A fresh data dir that is a tmpfs of size_mb, removed (unmounted first) on the way out."""
    root = tempfile.mkdtemp(prefix="gplq-faults-")
    try:
        with tmpfs(os.path.join(root, "data"), size_mb) as data:
            yield data
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fill(folder):
    """Writes folder/.filler until the file system has not one byte left; returns its path."""
    path = os.path.join(folder, ".filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0, "the filler left space free"
    return path


def db_query(d, sql, *args):
    """One query on a read-only connection to the daemon's database (it stays up meanwhile)."""
    c = sqlite3.connect("file:%s?mode=ro" % os.path.join(d.data_dir, "gplq.db"), uri=True,
                        timeout=10)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def owner_bytes(d, owner):
    """The bytes owner's rows hold against the upload quota (as store_owner_upload_bytes)."""
    return db_query(d, "SELECT (SELECT COALESCE(SUM(bytes), 0) FROM models WHERE owner = ?1)"
                       " + (SELECT COALESCE(SUM(bytes), 0) FROM datasets"
                       " WHERE owner = ?1 AND kind = 'upload')", owner)[0][0]


def assert_no_path(d, text):
    assert d.data_dir not in text and "/tmp/" not in text, "a path leaked: %r" % text


def safetensors_complete(path):
    """True if the file holds its whole header and every tensor's bytes, nothing more."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        return False
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError:
        return False
    end = max([t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"] or [0])
    return len(data) == 8 + n + end


def test_upload_into_a_full_disk_is_507_and_leaves_nothing():
    with data_dir_on_tmpfs(48) as data:
        config = {"max_owner_upload_bytes": 40 << 20}
        with Daemon(workers=0, data_dir=data, config=config) as d:
            a = d.create_token("a")
            filler = fill(data)
            r = d.upload_model(token=a)
            assert r.status == 507, r
            assert r.error()["code"] == "insufficient_storage", r
            assert "disk is full" in r.error()["message"], r
            assert_no_path(d, r.error()["message"])
            # nothing of it stays: no temp file, no blob, no row, no bytes held
            d.wait_for(lambda: d.files_under("tmp") == [], what="the temp file to go")
            assert d.files_under("blobs") == [], d.files_under("blobs")
            assert d.get("/v1/models", token=a).json()["models"] == []
            assert owner_bytes(d, "a") == 0
            # space returns: the same upload goes through, without a restart
            os.unlink(filler)
            r = d.upload_model(token=a)
            assert r.status == 201, r
            assert owner_bytes(d, "a") == os.path.getsize(d.files_under("blobs")[0])
            assert d.files_under("tmp") == []


def first_failure(d, job_id, step):
    """Waits for the job's first attempt to fail on the full disk in step; checks that it went
    back to the queue with an error that says so (and names no path), listing nothing."""
    def failed():
        job = d.job(job_id)
        return job if job["error"] or job["state"] in ("failed", "succeeded") else None
    job = d.wait_for(failed, timeout=300, poll=0.05, what="the first attempt to fail")
    assert job["state"] in ("queued", "running"), job
    assert "disk was full while " + step in job["error"], job["error"]
    assert "(attempt 1 of 4; it is retried)" in job["error"], job["error"]
    assert_no_path(d, job["error"])
    assert d.get("/v1/jobs/%s/artifacts" % job_id).json()["artifacts"] == []


def assert_listed_complete(d, job_id, folder):
    """The job lists every artifact, each the file on disk, whole."""
    listed = d.get("/v1/jobs/%s/artifacts" % job_id).json()["artifacts"]
    assert sorted(x["name"] for x in listed) == sorted(ARTIFACTS), listed
    for x in listed:
        with open(os.path.join(folder, x["name"]), "rb") as f:
            body = f.read()
        assert len(body) == x["bytes"] and hashlib.sha256(body).hexdigest() == x["sha256"], x


def test_a_job_whose_disk_fills_fails_the_attempt_and_is_retried():
    # Two jobs of one spec, on one worker: the first meets a full disk writing its artifacts,
    # the second saving its stage-1 checkpoint (its whole folder is full). Both are retried and,
    # once space returns, end with the same tensors: the first resumed from its checkpoint, the
    # second ran stage 1 again.
    with Daemon(workers=1) as d:
        mid = upload_demo(d)
        hold = d.create_job(mid, **SMALL).json()["id"]  # holds the worker while we mount
        a = d.create_job(mid, max_attempts=4, **SMALL).json()["id"]
        b = d.create_job(mid, max_attempts=4, **SMALL).json()["id"]
        art_a = os.path.join(d.data_dir, "jobs", a, "artifacts")
        dir_b = os.path.join(d.data_dir, "jobs", b)
        # room for the artifacts (about 17 MB with the two ONNX files), and for the checkpoint
        # (about 33 MB) and the artifacts, once the filler goes
        with tmpfs(art_a, 32), tmpfs(dir_b, 64):
            assert d.job(a)["state"] == d.job(b)["state"] == "queued", "started before the mount"
            filler_a, filler_b = fill(art_a), fill(dir_b)
            assert d.post("/v1/jobs/%s/cancel" % hold).status in (200, 409)

            first_failure(d, a, "writing the artifacts")
            left = sorted(os.listdir(art_a))  # only whole files, no temporary one
            assert all(f in ARTIFACTS + [".filler"] for f in left), left
            assert all(safetensors_complete(os.path.join(art_a, f)) for f in left
                       if f.endswith(".safetensors")), left
            os.unlink(filler_a)  # space returns: the retry succeeds
            job = d.wait_for_state(a, ["succeeded", "failed"], timeout=300)
            assert job["state"] == "succeeded" and job["attempts"] >= 2, job
            assert job["error"] is None, job
            assert_listed_complete(d, a, art_a)

            first_failure(d, b, "saving the stage-1 checkpoint")
            assert "stage1.state" not in os.listdir(dir_b), os.listdir(dir_b)  # never whole
            os.unlink(filler_b)
            job = d.wait_for_state(b, ["succeeded", "failed"], timeout=300)
            assert job["state"] == "succeeded" and job["attempts"] >= 2, job
            assert_listed_complete(d, b, os.path.join(dir_b, "artifacts"))
            assert not os.path.exists(os.path.join(dir_b, "stage1.state"))

            qa = d.get("/v1/jobs/%s/artifacts/model.q.safetensors" % a).body
            qb = d.get("/v1/jobs/%s/artifacts/model.q.safetensors" % b).body
            assert tensor_bytes(qa)[1] == tensor_bytes(qb)[1], "the two retried jobs' models differ"


def test_sqlite_commit_on_a_full_disk_is_503_and_the_database_stays_sound():
    with data_dir_on_tmpfs(48) as data:
        with Daemon(workers=0, data_dir=data) as d:
            mid = upload_demo(d)
            first = d.create_job(mid, **SMALL).json()["id"]
            # an empty write-ahead log, so that the next commit needs new space for it
            c = sqlite3.connect(os.path.join(data, "gplq.db"), timeout=10)
            busy = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            c.close()
            assert busy == 0, "the checkpoint could not run"
            filler = fill(data)
            before = db_query(d, "SELECT COUNT(*) FROM jobs")[0][0]
            r = d.create_job(mid, **SMALL)
            assert r.status == 503, r
            assert int(r.headers.get("retry-after", "0")) > 0, r.headers
            assert "disk is full" in r.error()["message"], r
            assert_no_path(d, r.error()["message"])
            # reads still work, and nothing of the failed request is recorded
            assert d.get("/v1/health").status == 200
            assert d.job(first)["state"] == "queued"
            assert db_query(d, "SELECT COUNT(*) FROM jobs")[0][0] == before
            assert db_query(d, "PRAGMA integrity_check") == [("ok",)]
            # space returns: the same request succeeds, without a restart
            os.unlink(filler)
            r = d.create_job(mid, **SMALL)
            assert r.status == 201, r
            assert db_query(d, "SELECT COUNT(*) FROM jobs")[0][0] == before + 1
            assert db_query(d, "SELECT COUNT(*) FROM events WHERE job_id NOT IN"
                               " (SELECT id FROM jobs)") == [(0,)]
            assert db_query(d, "PRAGMA integrity_check") == [("ok",)]


if __name__ == "__main__":
    run_tests(globals())
