"""Swin through the service, on a real gplqd with real workers: an upload shows its architecture
(family, depths, heads, window) in the API and in `gplq submit`; a HuggingFace Swin whose file
does not say its image size is refused until the upload's img_size gives it, and its job, on an
uploaded image folder, loads it at that size; a gplq-trained Swin's job runs end to end on
Fashion-MNIST to its artifacts. Every job runs the real GPLQ pipeline on tiny subsets.
"""
import gzip
import io
import os
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import BUILD, ROOT, Daemon, run_tests  # noqa: E402
from jobs_common import TINY, tensor_bytes  # noqa: E402
from test_jobs import CLASSES, FMNIST, png_gray  # noqa: E402

GPLQ = os.path.join(BUILD, "gplq")
# HuggingFace SwinForImageClassification names, 16 px (not in the file), 3 channels, 5 classes
HF_SWIN = os.path.join(ROOT, "tests", "fixtures", "swin_tiny_hf.safetensors")
ARTIFACTS = ["model.fakequant.safetensors", "model.onnx", "model.q.safetensors", "model.w4.onnx",
             "report.json"]

_tiny = {}


def tiny_swin():
    """A Swin for Fashion-MNIST made by `gplq train` (two steps: its accuracy does not matter
    here, its file does), once per run: 28 px, patch 2, embed 32, depths 2-2, heads 2-4,
    window 7, its config in the file's metadata as gplq writes it."""
    if "path" not in _tiny:
        path = os.path.join(tempfile.mkdtemp(prefix="gplq-swin-"), "swin-tiny.safetensors")
        p = subprocess.run([GPLQ, "train", "--arch", "swin", "--dim", "32", "--depths", "2,2",
                            "--stage-heads", "2,4", "--patch", "2", "--window", "7", "--epochs", "1",
                            "--train-subset", "128", "--batch-size", "64", "--eval-subset", "100",
                            "--out", path, "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        _tiny["path"] = path
    return _tiny["path"]


def five_class_tar(per_class_train, per_class_val):
    """A tar.gz image folder of real Fashion-MNIST test images (grey 28 px PNGs) of the first
    five classes: the HuggingFace fixture's head has five, and its 3-channel 16 px input is made
    by the worker (grey replicated, resized and center-cropped)."""
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        images = f.read()[16:]
    with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = f.read()[8:]
    counts = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i, lab in enumerate(labels):
            n = counts.get(lab, 0)
            if lab >= 5 or n >= per_class_train + per_class_val:
                continue
            counts[lab] = n + 1
            split = "train" if n < per_class_train else "val"
            data = png_gray(images[i * 784:(i + 1) * 784], 28, 28)
            info = tarfile.TarInfo("five/%s/%s/%05d.png" % (split, CLASSES[lab], i))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def check_artifacts(d, job):
    arts = {a["name"]: a for a in d.get("/v1/jobs/%s/artifacts" % job["id"]).json()["artifacts"]}
    assert sorted(arts) == ARTIFACTS, arts
    q = d.get("/v1/jobs/%s/artifacts/model.q.safetensors" % job["id"])
    assert q.status == 200 and len(q.body) == arts["model.q.safetensors"]["bytes"], q
    header, _ = tensor_bytes(q.body)
    assert header["__metadata__"]["gplq_format"] == "gplq-q-1", header["__metadata__"]
    # a Swin's tensors, in timm >= 0.9 names
    assert any(k.startswith("layers.1.downsample.") for k in header), sorted(header)[:20]
    rep = d.get("/v1/jobs/%s/artifacts/report.json" % job["id"]).json()
    assert rep["accuracy"] == job["metrics"], (rep["accuracy"], job["metrics"])
    return rep


def test_swin_upload_shows_its_architecture_and_its_job_succeeds():
    with Daemon(workers=1) as d:
        r = d.upload_model(tiny_swin(), name="swin-tiny")
        assert r.status == 201, r
        m = r.json()
        c = m["config"]
        assert c["arch"] == "swin" and c["depths"] == [2, 2] and c["num_heads"] == [2, 4], c
        assert c["window_size"] == 7 and c["embed_dim"] == 32 and c["img_size"] == 28, c
        assert c["convention"] == "timm", c
        assert c["description"] == ("Swin: img 28, patch 2, 1 channel, embed 32, depths 2-2, "
                                    "heads 2-4, window 7, MLP ratio 4, 10 classes"), c
        assert d.get("/v1/models/" + m["id"]).json()["config"] == c
        # the ViT beside it says what it is too
        v = d.upload_model(name="demo").json()["config"]
        assert v["arch"] == "vit" and v["description"].startswith("ViT: img 28, patch 4"), v

        r = d.create_job(m["id"], **TINY)
        assert r.status == 201, r
        # what the worker loads it with: the upload's settled input, set by the server
        assert r.json()["spec"]["model_input"] == {"img_size": 28, "mean": c["mean"],
                                                   "std": c["std"]}, r.json()["spec"]
        job = d.wait_for_state(r.json()["id"], ["succeeded", "failed"], timeout=900)
        assert job["state"] == "succeeded", job
        assert sorted(job["metrics"]) == ["fp32", "gplq", "ort_onnx", "ort_w4", "stage1",
                                          "stage2_noqwt"], job["metrics"]
        # ONNX Runtime runs the exported W4A4 Swin to gplq's own top-1 (a prediction or two
        # may flip on float order)
        assert abs(job["metrics"]["ort_onnx"] - job["metrics"]["gplq"]) <= 0.01, job["metrics"]
        assert all(0 <= v <= 1 for v in job["metrics"].values()), job["metrics"]
        check_artifacts(d, job)


def test_swin_without_image_size_needs_img_size():
    with Daemon(workers=1) as d:
        r = d.upload_model(HF_SWIN, name="hf-swin")
        assert r.status == 422 and r.error()["code"] == "invalid_model", r
        assert "does not say its image size" in r.error()["message"], r
        assert "img_size" in r.error()["message"], r
        assert d.get("/v1/models").json()["models"] == []
        # bad hints are the request's fault, named, before the body is read (so a few bytes
        # stand for it: the server answers and closes without reading a whole file)
        body = b"x" * 64
        r = d.upload("/v1/models", body, {"img_size": "sixteen"})
        assert r.status == 400 and r.error()["field"] == "img_size", r
        r = d.upload("/v1/models", body, {"img_size": "16", "mean": "0.5"})
        assert r.status == 400 and r.error()["field"] == "std", r
        r = d.upload("/v1/models", body, {"img_size": "16", "mean": "0.5", "std": "0.5,0.5"})
        assert r.status == 400 and r.error()["field"] == "std", r
        assert "one number or three" in r.error()["message"], r
        # a size the geometry cannot take is the file's problem with it: 422, said why
        r = d.upload_model(HF_SWIN, img_size="15")
        assert r.status == 422 and "multiple of the patch size" in r.error()["message"], r

        r = d.upload_model(HF_SWIN, name="hf-swin", img_size="16", mean="0.5", std="0.25")
        assert r.status == 201, r
        m = r.json()
        c = m["config"]
        assert c["arch"] == "swin" and c["img_size"] == 16 and c["convention"] == "huggingface", c
        assert c["depths"] == [2, 2] and c["num_heads"] == [2, 4] and c["window_size"] == 4, c
        assert c["mean"] == [0.5] * 3 and c["std"] == [0.25] * 3, c
        assert "depths 2-2, heads 2-4, window 4" in c["description"], c
        # the same file with the same hints is that model; with others, a conflict naming it
        assert d.upload_model(HF_SWIN, img_size="16", mean="0.5", std="0.25").status == 200
        r = d.upload_model(HF_SWIN, img_size="32")
        assert r.status == 409 and m["id"] in r.error()["message"], r

        # its job: the worker loads the file at 16 px with that normalization, which only the
        # upload said (without them it refuses the file, as the inspector did)
        r = d.upload("/v1/datasets", five_class_tar(40, 20), {"name": "five"})
        assert r.status == 201, r
        ds = r.json()
        r = d.create_job(m["id"], dataset_id=ds["id"], **dict(TINY, train_subset=0, eval_subset=0))
        assert r.status == 201, r
        assert r.json()["spec"]["model_input"] == {"img_size": 16, "mean": [0.5] * 3,
                                                   "std": [0.25] * 3}, r.json()["spec"]
        job = d.wait_for_state(r.json()["id"], ["succeeded", "failed"], timeout=900)
        assert job["state"] == "succeeded", job
        rep = check_artifacts(d, job)
        assert rep["config"]["model_id"] == m["id"], rep["config"]
        # the cache of the dataset is at the model's input: 3 channels of 16 px
        cache = os.listdir(os.path.join(d.data_dir, "cache"))
        assert any("-c3-s16-" in f for f in cache), cache


def test_submit_prints_the_architecture_and_passes_the_hints():
    with Daemon(workers=0) as d:  # no worker: the jobs stay queued
        env = dict(os.environ, GPLQ_SERVER=d.url, GPLQ_TOKEN=d.token or "")

        def submit(*args):
            return subprocess.run([GPLQ, "submit"] + list(args), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=120, env=env)
        p = submit("--model", tiny_swin())
        assert p.returncode == 0, p.stderr
        assert ("Swin: img 28, patch 2, 1 channel, embed 32, depths 2-2, heads 2-4, window 7"
                in p.stderr), p.stderr
        p = submit("--model", HF_SWIN)
        assert p.returncode == 1 and "img_size" in p.stderr, p.stderr
        p = submit("--model", HF_SWIN, "--img-size", "16", "--mean", "0.485,0.456,0.406",
                   "--std", "0.5")
        assert p.returncode == 0, p.stderr
        assert "Swin: img 16, patch 2, 3 channels, embed 16, depths 2-2, heads 2-4, window 4" \
            in p.stderr, p.stderr
        hf = [m for m in d.get("/v1/models").json()["models"] if m["config"]["img_size"] == 16]
        assert len(hf) == 1 and hf[0]["config"]["std"] == [0.5] * 3, hf
        assert hf[0]["config"]["mean"] == [0.485, 0.456, 0.406], hf
        job = d.job(p.stdout.strip())
        assert job["spec"]["model_input"]["img_size"] == 16, job["spec"]


if __name__ == "__main__":
    run_tests(globals())
