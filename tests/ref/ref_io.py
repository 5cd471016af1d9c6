"""ref_io.py: what gen_vit_ref.py and gen_swin_ref.py share: the error measure and check that
stop a run on a mismatch, a standard-library safetensors writer and an independent reader, the
first Fashion-MNIST test images as the engine normalizes them, and the metadata float format.
Plain torch and numpy; no model code."""
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def check(what, a, b, tol):
    e = rel_err(a, b)
    if not e <= tol:
        sys.exit("CHECK FAILED: %s: relative max error %.3g > %.3g" % (what, e, tol))
    return e


def check_finite_diff(loss_at, base, params, probes, x64, eps):
    """Central differences of loss_at(weights, x) (float64) at each (name, index) of probes and
    at one input pixel, against the analytic gradients in params[name].grad and x64.grad: the
    worst relative error, or the run stops above 1e-5."""
    worst = 0.0
    for name, idx in probes:
        hp = dict(base); hp[name] = base[name].clone(); hp[name][idx] += eps
        hm = dict(base); hm[name] = base[name].clone(); hm[name][idx] -= eps
        fd = (loss_at(hp, x64.detach()) - loss_at(hm, x64.detach())) / (2 * eps)
        an = params[name].grad[idx].item()
        worst = max(worst, abs(fd - an) / max(abs(an), 1e-3))
    xp = x64.detach().clone(); xp[1, 0, 2, 3] += eps
    xm = x64.detach().clone(); xm[1, 0, 2, 3] -= eps
    fd = (loss_at(base, xp) - loss_at(base, xm)) / (2 * eps)
    an = x64.grad[1, 0, 2, 3].item()
    worst = max(worst, abs(fd - an) / max(abs(an), 1e-3))
    if not worst < 1e-5:
        sys.exit("CHECK FAILED: finite differences: relative error %.3g" % worst)
    return worst


# ----------------------------------------------------------------------------------------------
# safetensors, standard library only.
# ----------------------------------------------------------------------------------------------

def tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.float32:
        return "F32", t.numpy().astype("<f4").tobytes()
    if t.dtype == torch.int64:
        return "I64", t.numpy().astype("<i8").tobytes()
    raise TypeError("unsupported dtype %s" % t.dtype)


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, tensor) in file order; metadata: dict of str -> str."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors:
        assert name not in header, name
        dt, b = tensor_bytes(t)
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((-len(hj)) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    """Independent re-read (also of --demo-weights): returns (metadata, {name: tensor})."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    buf = data[8 + n:]
    out, spans = {}, []
    kinds = {"F32": ("<f4", torch.float32), "I64": ("<i8", torch.int64),
             "F64": ("<f8", torch.float64), "F16": ("<f2", torch.float16)}
    for name, e in header.items():
        b, end = e["data_offsets"]
        spans.append((b, end))
        if e["dtype"] == "BF16":  # the top half of a float32
            u = np.frombuffer(buf[b:end], dtype="<u2").astype("<u4") << 16
            arr, dtype = u.view("<f4").reshape(e["shape"]), torch.float32
        else:
            fmt, dtype = kinds[e["dtype"]]
            arr = np.frombuffer(buf[b:end], dtype=fmt).reshape(e["shape"])
        out[name] = torch.from_numpy(arr.copy()).to(dtype)
    spans.sort()
    pos = 0
    for b, end in spans:  # contiguous, no holes, covers the buffer
        assert b == pos, (path, b, pos)
        pos = end
    assert pos == len(buf), (path, pos, len(buf))
    return meta, out


# ----------------------------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------------------------

def load_fmnist(n):
    with gzip.open(os.path.join(FMNIST_DIR, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051 and count >= n, (magic, count)
        pix = f.read(n * rows * cols)
    with gzip.open(os.path.join(FMNIST_DIR, "t10k-labels-idx1-ubyte.gz"), "rb") as f:
        magic, count = struct.unpack(">II", f.read(8))
        assert magic == 2049 and count >= n, (magic, count)
        lab = f.read(n)
    img = torch.tensor(list(pix), dtype=torch.uint8).reshape(n, 1, rows, cols)
    x = (img.to(torch.float32) / 255.0 - FMNIST_MEAN) / FMNIST_STD
    return x, torch.tensor(list(lab), dtype=torch.int64)


def fmt_float(v):
    s = ("%.10f" % v).rstrip("0")
    return s + "0" if s.endswith(".") else s
