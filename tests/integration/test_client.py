"""The client commands against a real gplqd: `gplq submit --wait --out` end to end on a
training subset (upload, submit, follow the event stream, download and check the artifacts,
exit status), an uploaded dataset file, `gplq jobs`, `gplq artifacts`, `gplq cancel`, and the
exit status of a job that fails.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import BUILD, DEMO_MODEL, Daemon, run_tests  # noqa: E402

GPLQ = os.path.join(BUILD, "gplq")
TINY = ["--train-subset", "256", "--eval-subset", "200", "--pca-samples", "128",
        "--calib-images", "64", "--qwt-images", "64", "--batch-size", "64", "--no-baselines"]


def gplq(d, *args, timeout=900):
    env = dict(os.environ, GPLQ_SERVER=d.url, GPLQ_TOKEN=d.token or "")
    return subprocess.run([GPLQ] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, env=env)


def test_submit_wait_out_end_to_end():
    with Daemon(workers=1) as d:
        out = tempfile.mkdtemp(prefix="gplq-client-")
        p = gplq(d, "submit", "--model", DEMO_MODEL, "--wait", "--out", out, "--json", *TINY)
        assert p.returncode == 0, p.stderr[-3000:]
        job = json.loads(p.stdout)
        assert job["state"] == "succeeded", job
        # stderr is a pipe: plain progress lines, never the same twice in a row, no empty ETA
        lines = p.stderr.splitlines()
        assert "\r" not in p.stderr and lines, p.stderr[-2000:]
        assert all(a != b for a, b in zip(lines, lines[1:])), lines
        assert not [l for l in lines if l.endswith("ETA ") or "ETA ?" in l], lines
        assert sorted(job["metrics"]) == ["fp32", "gplq", "ort_onnx", "ort_w4", "stage1",
                                          "stage2_noqwt"], job["metrics"]
        arts = {a["name"]: a for a in d.get("/v1/jobs/%s/artifacts" % job["id"]).json()["artifacts"]}
        for name, a in arts.items():
            with open(os.path.join(out, name), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == a["sha256"], name
        assert not [f for f in os.listdir(out) if f.endswith(".part")]
        with open(os.path.join(out, "report.json")) as f:
            assert json.load(f)["accuracy"] == job["metrics"]

        # the same model again is the same upload; the listing and the artifacts commands
        p = gplq(d, "jobs")
        assert p.returncode == 0 and job["id"] in p.stdout and "succeeded" in p.stdout, p
        p = gplq(d, "artifacts", "--job", job["id"])
        assert p.returncode == 0 and "model.q.safetensors" in p.stdout, p
        # --links: a URL per artifact that downloads it without a token
        p = gplq(d, "artifacts", "--job", job["id"], "--links", "60", "--json")
        assert p.returncode == 0, p.stderr
        for a in json.loads(p.stdout)["artifacts"]:
            assert a["link"].startswith(d.url + "/v1/jobs/%s/artifacts/%s?expires=" % (job["id"], a["name"])), a
            with urllib.request.urlopen(a["link"]) as r:  # no Authorization header
                assert hashlib.sha256(r.read()).hexdigest() == a["sha256"], a["name"]
        n = len(json.loads(p.stdout)["artifacts"])
        p = gplq(d, "artifacts", "--job", job["id"], "--links", "60")
        assert p.returncode == 0 and p.stdout.count("?expires=") == n == 5, p.stdout
        p = gplq(d, "artifacts", "--job", job["id"], "--links", "60", "--out", out)
        assert p.returncode == 2 and "--links" in p.stderr, p  # one or the other
        assert len(d.get("/v1/models").json()["models"]) == 1


def test_submit_without_wait_then_cancel():
    with Daemon(workers=0) as d:  # no worker: the job stays queued until canceled
        p = gplq(d, "submit", "--model", DEMO_MODEL, *TINY)
        assert p.returncode == 0, p.stderr
        jid = p.stdout.strip()
        assert jid.startswith("j_") and d.job(jid)["state"] == "queued", p.stdout
        # the upload bar on a pipe: plain lines, the finished upload said once
        up = [l for l in p.stderr.splitlines() if "uploading vit-fmnist.safetensors" in l]
        assert "\r" not in p.stderr and up and up[-1].startswith("100% "), p.stderr
        assert sum(l.startswith("100% ") for l in up) == 1, up
        p = gplq(d, "cancel", "--job", jid)
        assert p.returncode == 0 and "canceled" in p.stdout, (p.stdout, p.stderr)
        assert d.job(jid)["state"] == "canceled"
        # a retried pipeline step: the same idempotency key, the same job
        a = gplq(d, "submit", "--model", DEMO_MODEL, "--idempotency-key", "build-42", *TINY)
        b = gplq(d, "submit", "--model", DEMO_MODEL, "--idempotency-key", "build-42", *TINY)
        assert a.returncode == 0 and b.returncode == 0 and a.stdout == b.stdout, (a.stdout, b.stdout)


def test_exit_status_says_what_went_wrong():
    with Daemon(workers=1) as d:
        # refused at submit: 400 naming the field
        p = gplq(d, "submit", "--model", DEMO_MODEL, "--data", "no-such-dataset", *TINY)
        assert p.returncode == 1 and "dataset" in p.stderr, p.stderr
        # a bad token
        env = dict(os.environ, GPLQ_SERVER=d.url, GPLQ_TOKEN="gplq_nonsense")
        p = subprocess.run([GPLQ, "jobs"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env, timeout=60)
        assert p.returncode == 1 and "401" in p.stderr, p.stderr
        # a job that runs and fails: the dataset's classes do not match the model's head
        # (an uploaded 2-class image folder against the 10-class demo model)
        import io
        import tarfile
        import zlib
        import struct

        def png(v):
            def chunk(k, data):
                return struct.pack(">I", len(data)) + k + data + struct.pack(">I", zlib.crc32(k + data))
            raw = b"".join(b"\0" + bytes([v]) * 28 for _ in range(28))
            return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
        path = os.path.join(tempfile.mkdtemp(prefix="gplq-client-"), "two.tar.gz")
        with tarfile.open(path, "w:gz") as tar:
            for c in ("a", "b"):
                for i in range(4):
                    data = png(40 * i + (100 if c == "b" else 0))
                    info = tarfile.TarInfo("train/%s/%d.png" % (c, i))
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        p = gplq(d, "submit", "--model", DEMO_MODEL, "--data", path, "--wait", *TINY)
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert "failed" in p.stderr and "classes" in p.stderr, p.stderr


if __name__ == "__main__":
    run_tests(globals())
