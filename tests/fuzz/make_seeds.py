#!/usr/bin/python3
"""make_seeds.py: writes the seed corpora of the fuzz harnesses, tests/fuzz/corpus/<target>/.

A handful of small valid inputs per target (and a few near misses), from which libFuzzer
mutates: tiny safetensors files, a micro ViT in the three naming conventions, tar, tar.gz and
zip image folders, JPEG and PNG images, job bodies, HTTP requests, Range and Last-Event-ID
values, webhook URLs. Deterministic (fixed times and owners in the archives, no randomness),
standard library only; the JPEGs are embedded (libjpeg-turbo made them: the standard library
has no JPEG encoder). Run it after changing it, and commit what it writes:
    /usr/bin/python3 tests/fuzz/make_seeds.py
It replaces each target's folder; tests/fuzz/run.sh never writes into them.
"""
import base64
import gzip
import io
import json
import os
import shutil
import struct
import tarfile
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# ---------------------------------------------------------------- images

JPEG_GRAY = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERX"
    "RTc4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/wAALCAAIAAgBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAAAf/EAB0QAAIB"
    "BQEBAAAAAAAAAAAAAAECEQMEBRIhAMH/2gAIAQEAAD8AaeNscJbpWvm02nRFWWcgTAH086JPv//Z")
JPEG_RGB = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERX"
    "RTc4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2P/wAARCAAGAAgDASIAAhEBAxEB/8QAFAABAAAAAAAAAAAAAAAAAAAA"
    "AP/EAB4QAAIBBAMBAAAAAAAAAAAAAAEDAAIEESExYXGh/8QAFQEBAQAAAAAAAAAAAAAAAAAAAAT/xAAaEQACAgMA"
    "AAAAAAAAAAAAAAABAgADEjFR/9oADAMBAAIRAxEAPwBSpa3LseLa0WHtAG66sZ+DzZPUREMSNSqipHByHJ//2Q==")
JPEG_PROGRESSIVE = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERX"
    "RTc4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2P/wgARCAAHAAUDASIAAhEBAxEB/8QAFQABAQAAAAAAAAAAAAAAAAAA"
    "AAH/xAAVAQEBAAAAAAAAAAAAAAAAAAAAAv/aAAwDAQACEAMQAAABgT//xAAWEAADAAAAAAAAAAAAAAAAAAAAAiL/"
    "2gAIAQEAAQUCtD//xAAUEQEAAAAAAAAAAAAAAAAAAAAA/9oACAEDAQE/AX//xAAWEQEBAQAAAAAAAAAAAAAAAAAB"
    "ABH/2gAIAQIBAT8BATW//8QAGRAAAQUAAAAAAAAAAAAAAAAAEQABAxIx/9oACAEBAAY/AqRuBq//xAAXEAEBAQEA"
    "AAAAAAAAAAAAAAABESEA/9oACAEBAAE/IVjmyoa9/9oADAMBAAIAAwAAABAH/8QAFREBAQAAAAAAAAAAAAAAAAAA"
    "AQD/2gAIAQMBAT8QW//EABYRAQEBAAAAAAAAAAAAAAAAAAEAEf/aAAgBAgEBPxAEBrf/xAAZEAEBAQADAAAAAAAA"
    "AAAAAAABESEAQZH/2gAIAQEAAT8QcDOyqF7uBPXn/9k=")


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(w, h, color_type, depth=8, rows=None, extra=()):
    """A PNG, filter 0 on every row; rows: raw bytes of each row (made up when None)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row_bytes = (w * channels * depth + 7) // 8
    if rows is None:
        rows = [bytes((x * 37 + y * 11) & 0xFF for x in range(row_bytes)) for y in range(h)]
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
            + b"".join(png_chunk(k, d) for k, d in extra)
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


PNG_GRAY = png(3, 2, 0)
PNG_RGB = png(2, 2, 2)
PNG_RGBA = png(2, 1, 6)
PNG_GRAY_ALPHA = png(1, 2, 4)
PNG_GRAY16 = png(2, 2, 0, depth=16)
PNG_GRAY1 = png(9, 2, 0, depth=1)
PNG_PALETTE = png(2, 2, 3, rows=[b"\x00\x01", b"\x01\x00"],
                  extra=[(b"PLTE", b"\xff\x00\x00\x00\x00\xff")])
# With a tRNS chunk too, which imgf_load refuses (tests/fuzz/crashes/image/, not a seed).
PNG_PALETTE_TRNS = png(2, 2, 3, rows=[b"\x00\x01", b"\x01\x00"],
                       extra=[(b"PLTE", b"\xff\x00\x00\x00\x00\xff"), (b"tRNS", b"\x80")])

# ---------------------------------------------------------------- safetensors


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes); laid out in order."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the writers pad the header to 8 bytes
    return struct.pack("<Q", len(h)) + h + data


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def f16(n, start=0):
    return b"".join(struct.pack("<e", ((start + i) % 7 - 3) / 8) for i in range(n))


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


# The micro ViT: 4x4 gray images, patch 2 (4 patches), dim 4, one block, one head, MLP 8, two
# classes. Shapes as engine/vit.c lays them out; F16 keeps the files small.
C, CI, P, T, H, K = 4, 1, 2, 5, 8, 2
TIMM = [
    ("patch_embed.proj.weight", (C, CI, P, P)), ("patch_embed.proj.bias", (C,)),
    ("cls_token", (1, 1, C)), ("pos_embed", (1, T, C)),
    ("blocks.0.norm1.weight", (C,)), ("blocks.0.norm1.bias", (C,)),
    ("blocks.0.attn.qkv.weight", (3 * C, C)), ("blocks.0.attn.qkv.bias", (3 * C,)),
    ("blocks.0.attn.proj.weight", (C, C)), ("blocks.0.attn.proj.bias", (C,)),
    ("blocks.0.norm2.weight", (C,)), ("blocks.0.norm2.bias", (C,)),
    ("blocks.0.mlp.fc1.weight", (H, C)), ("blocks.0.mlp.fc1.bias", (H,)),
    ("blocks.0.mlp.fc2.weight", (C, H)), ("blocks.0.mlp.fc2.bias", (C,)),
    ("norm.weight", (C,)), ("norm.bias", (C,)),
    ("head.weight", (K, C)), ("head.bias", (K,)),
]
HF_NAMES = {
    "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
    "cls_token": "vit.embeddings.cls_token",
    "pos_embed": "vit.embeddings.position_embeddings",
    "blocks.0.norm1.weight": "vit.encoder.layer.0.layernorm_before.weight",
    "blocks.0.norm1.bias": "vit.encoder.layer.0.layernorm_before.bias",
    "blocks.0.attn.proj.weight": "vit.encoder.layer.0.attention.output.dense.weight",
    "blocks.0.attn.proj.bias": "vit.encoder.layer.0.attention.output.dense.bias",
    "blocks.0.norm2.weight": "vit.encoder.layer.0.layernorm_after.weight",
    "blocks.0.norm2.bias": "vit.encoder.layer.0.layernorm_after.bias",
    "blocks.0.mlp.fc1.weight": "vit.encoder.layer.0.intermediate.dense.weight",
    "blocks.0.mlp.fc1.bias": "vit.encoder.layer.0.intermediate.dense.bias",
    "blocks.0.mlp.fc2.weight": "vit.encoder.layer.0.output.dense.weight",
    "blocks.0.mlp.fc2.bias": "vit.encoder.layer.0.output.dense.bias",
    "norm.weight": "vit.layernorm.weight", "norm.bias": "vit.layernorm.bias",
    "head.weight": "classifier.weight", "head.bias": "classifier.bias",
}
TV_NAMES = {
    "patch_embed.proj.weight": "conv_proj.weight", "patch_embed.proj.bias": "conv_proj.bias",
    "cls_token": "class_token", "pos_embed": "encoder.pos_embedding",
    "blocks.0.norm1.weight": "encoder.layers.encoder_layer_0.ln_1.weight",
    "blocks.0.norm1.bias": "encoder.layers.encoder_layer_0.ln_1.bias",
    "blocks.0.attn.qkv.weight": "encoder.layers.encoder_layer_0.self_attention.in_proj_weight",
    "blocks.0.attn.qkv.bias": "encoder.layers.encoder_layer_0.self_attention.in_proj_bias",
    "blocks.0.attn.proj.weight": "encoder.layers.encoder_layer_0.self_attention.out_proj.weight",
    "blocks.0.attn.proj.bias": "encoder.layers.encoder_layer_0.self_attention.out_proj.bias",
    "blocks.0.norm2.weight": "encoder.layers.encoder_layer_0.ln_2.weight",
    "blocks.0.norm2.bias": "encoder.layers.encoder_layer_0.ln_2.bias",
    "blocks.0.mlp.fc1.weight": "encoder.layers.encoder_layer_0.mlp.0.weight",
    "blocks.0.mlp.fc1.bias": "encoder.layers.encoder_layer_0.mlp.0.bias",
    "blocks.0.mlp.fc2.weight": "encoder.layers.encoder_layer_0.mlp.3.weight",
    "blocks.0.mlp.fc2.bias": "encoder.layers.encoder_layer_0.mlp.3.bias",
    "norm.weight": "encoder.ln.weight", "norm.bias": "encoder.ln.bias",
    "head.weight": "heads.head.weight", "head.bias": "heads.head.bias",
}
META = {"num_heads": "1", "mean": "[0.5]", "std": "0.25", "ln_eps": "1e-6"}


def vit_tensors(convention, distilled=False):
    out = []
    layout = list(TIMM)
    if distilled:
        layout[3] = ("pos_embed", (1, T + 1, C))
        layout.insert(3, ("dist_token", (1, 1, C)))
        layout += [("head_dist.weight", (K, C)), ("head_dist.bias", (K,))]
    for i, (name, shape) in enumerate(layout):
        if convention == "hf" and "attn.qkv" in name:
            for part in ("query", "key", "value"):
                n = name.replace("blocks.0.attn.qkv",
                                 "vit.encoder.layer.0.attention.attention." + part)
                s = (shape[0] // 3,) + tuple(shape[1:])
                out.append((n, "F16", s, f16(numel(s), i)))
            continue
        n = {"hf": HF_NAMES, "tv": TV_NAMES}.get(convention, {}).get(name, name)
        out.append((n, "F16", shape, f16(numel(shape), i)))
    return out

# ---------------------------------------------------------------- archives

MTIME = 1700000000


def tar_bytes(members, compress=False, dirs=()):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
            t.addfile(ti)
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, MTIME
            t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    if not compress:
        return raw
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as g:
        g.write(raw)
    return out.getvalue()


def zip_bytes(members, deflate=True):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()

# ---------------------------------------------------------------- the corpora


def corpora():
    c = {}
    c["safetensors"] = {
        "one_f32": safetensors([("w", "F32", (2,), f32(1.0, -2.5))]),
        "dtypes": safetensors([
            ("a", "F64", (1,), struct.pack("<d", 3.25)), ("b", "F16", (2,), f16(2)),
            ("c", "BF16", (1,), b"\x80\x3f"), ("d", "I64", (1,), struct.pack("<q", -7)),
            ("e", "I32", (1,), struct.pack("<i", 9)), ("f", "I16", (1,), b"\xff\x7f"),
            ("g", "I8", (2,), b"\x80\x7f"), ("h", "U8", (1,), b"\xff"),
            ("i", "BOOL", (2,), b"\x00\x01")], {"format": "pt", "note": "dtypes"}),
        "scalar_and_empty": safetensors([("s", "F32", (), f32(0.5)), ("z", "F32", (0, 3), b"")]),
        "empty_header": safetensors([], {}),
        "matrix_meta": safetensors([("m", "F32", (2, 2), f32(1, 2, 3, 4))], {"k": "v"}),
    }
    c["checkpoint"] = {
        "timm": safetensors(vit_tensors("timm"), META),
        "timm_distilled": safetensors(vit_tensors("timm", distilled=True), META),
        "hf": safetensors(vit_tensors("hf"), {"num_heads": "2"}),
        "torchvision": safetensors(vit_tensors("tv")),
    }
    tv_old = [(n.replace(".mlp.0.", ".mlp.linear_1.").replace(".mlp.3.", ".mlp.linear_2."), d, s, r)
              for n, d, s, r in vit_tensors("tv")]
    c["checkpoint"]["torchvision_linear_names"] = safetensors(tv_old)
    c["imagefolder"] = {
        "train.tar": tar_bytes([("train/cat/0.png", PNG_GRAY), ("train/dog/0.jpg", JPEG_RGB)]),
        "train_val.tar.gz": tar_bytes(
            [("mydata/train/a/x.png", PNG_RGB), ("mydata/train/a/y.jpeg", JPEG_GRAY),
             ("mydata/train/b/z.PNG", PNG_PALETTE), ("mydata/val/a/v.png", PNG_GRAY16),
             ("mydata/train/.DS_Store", b"\x00\x00\x00\x01Bud1"),
             ("__MACOSX/mydata/._x.png", b"\x00\x05\x16\x07")],
            compress=True, dirs=("mydata/", "mydata/train/", "mydata/train/a/")),
        "two_png.zip": zip_bytes([("train/a/0.png", PNG_RGBA), ("train/b/1.png", PNG_GRAY_ALPHA)]),
        "stored.zip": zip_bytes([("./train/a/p.jpg", JPEG_PROGRESSIVE),
                                 ("./train/b/q.png", PNG_GRAY1)], deflate=False),
    }
    c["image"] = {
        "gray.jpg": JPEG_GRAY, "rgb.jpg": JPEG_RGB, "progressive.jpg": JPEG_PROGRESSIVE,
        "gray.png": PNG_GRAY, "rgb.png": PNG_RGB, "rgba.png": PNG_RGBA,
        "gray_alpha.png": PNG_GRAY_ALPHA, "gray16.png": PNG_GRAY16, "gray1.png": PNG_GRAY1,
        "palette.png": PNG_PALETTE,
    }
    c["jobspec"] = {
        "minimal.json": b'{"model_id": "m_1", "dataset_id": "fashion-mnist"}',
        "every_option.json": json.dumps({
            "model_id": "m", "dataset_id": "d", "wbits": 4, "abits": 8, "train_subset": 100,
            "eval_subset": 0, "baselines": False, "epochs": 2, "batch_size": 64, "lr": 0.0001,
            "weight_decay": 0.05, "alpha": 1.5, "label_smoothing": 0.1, "pca_samples": 512,
            "pca_var": 0.6, "calib_images": 32, "percentile_init": True, "qwt_images": 16,
            "qwt": True, "lambda": 0.001, "pad": 4, "hflip": False, "bf16": True, "seed": 7,
            "ckpt_every": 50, "num_heads": 3, "ort": False, "mpi": False}).encode(),
        "lr_auto_dashes.json": b'{"lr": "auto", "batch-size": 32, "no-qwt": true}',
        "service_keys.json": json.dumps({
            "model_id": "m", "dataset_id": "d", "max_attempts": 2,
            "webhook": {"url": "https://hooks.example.com/x", "secret": "0123456789abcdef",
                        "progress_every_s": 30}, "lr": 1e-320}).encode(),
        "bad_values.json": b'{"wbits": 4.5, "epochs": "3", "alpha": -1, "seed": 1e400}',
    }

    def req(*lines, body=b""):
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    auth = "Authorization: Bearer @T"
    c["api"] = {
        "health": req("GET /v1/health HTTP/1.1", "Host: x"),
        "jobs_list": req("GET /v1/jobs?state=succeeded&limit=2&cursor=abc HTTP/1.1", auth),
        "job_get": req("GET /v1/jobs/@J HTTP/1.1", auth),
        "job_create": req("POST /v1/jobs HTTP/1.1", auth, "Content-Type: application/json",
                          body=b'{"model_id": "@M", "dataset_id": "@D", "epochs": 2, "webhook": '
                               b'{"url": "https://hooks.example.com/h", "secret": '
                               b'"0123456789abcdef0123"}}'),
        "job_events": req("GET /v1/jobs/@J/events?after=1 HTTP/1.1", auth, "Last-Event-ID: 2"),
        "job_cancel_admin": req("POST /v1/jobs/@Q/cancel HTTP/1.1", "Authorization: Bearer @A"),
        "job_delete": req("DELETE /v1/jobs/@J HTTP/1.1", auth),
        "job_delete_queued": req("DELETE /v1/jobs/@Q HTTP/1.1", auth),
        "job_create_again": req("POST /v1/jobs HTTP/1.1", auth, "Idempotency-Key: key-1",
                                body=b'{"model_id": "@M", "dataset_id": "@D"}'),
        "artifacts": req("GET /v1/jobs/@J/artifacts HTTP/1.1", auth),
        "artifact_range": req("GET /v1/jobs/@J/artifacts/report.json HTTP/1.1", auth,
                              "Range: bytes=5-20", 'If-Range: "x"'),
        "artifact_link": req("GET /v1/jobs/@J/artifacts/report.json?@L HTTP/1.1",
                             "If-None-Match: W/\"a\", \"b\""),
        "artifact_make_link": req("POST /v1/jobs/@J/artifacts/report.json/link?expires_in=60 "
                                  "HTTP/1.1", auth),
        "model_upload": req("POST /v1/models?name=my%20model&num_heads=3 HTTP/1.1", auth,
                            "Content-Type: application/octet-stream", body=b"GOOD model bytes"),
        "dataset_upload": req("POST /v1/datasets?name=d+1&val_fraction=0.2 HTTP/1.1", auth,
                              body=b"GOOD tar bytes"),
        "models_admin": req("GET /v1/models/@M HTTP/1.1", "Authorization: Bearer @A"),
        "datasets_delete": req("DELETE /v1/datasets/@D HTTP/1.1", auth),
        "webhooks": req("GET /v1/jobs/@J/webhooks HTTP/1.1", auth),
        "method_not_allowed": req("PUT /v1/jobs/@J HTTP/1.1", auth),
        "metrics": req("GET /metrics HTTP/1.1"),
        "web_asset": req("GET /web/app.js HTTP/1.1", 'If-None-Match: "x"'),
        "openapi": req("GET /v1/openapi.json HTTP/1.1"),
    }
    c["events"] = {
        "last_event_id": b"2\n\n",
        "after": b"\n1\n",
        "both": b"3\n0\n@J",
        "not_a_number": b"abc\n\n",
        "queued_job": b"\n\n@Q",
        "huge": b"99999999999999999999\n-1\n",
    }

    def rng(size, *lines):
        return struct.pack("<Q", size) + "\n".join(lines).encode()

    c["range"] = {
        "first_bytes": rng(1000, "bytes=0-99"),
        "suffix": rng(1000, "bytes=-100"),
        "open_end": rng(1000, "bytes=990-"),
        "if_range_match": rng(50, "bytes=10-20", '"abc"', '"abc"'),
        "if_none_match": rng(0, "", "", '"abc"', 'W/"x", "abc"'),
        "several": rng(1 << 40, "Bytes = 1-2, 5-6", "", "", "*"),
    }
    c["webhook"] = {
        "public": b"https://hooks.example.com/gplq?x=1",
        "loopback": b"http://127.0.0.1:8080/",
        "mapped_v6": b"http://[::ffff:10.0.0.1]/x",
        "nat64": b"http://[64:ff9b::a00:1]/",
        "allowlist": b"https://a.corp.example/hook\n*.corp.example, 10.0.0.7,[::1]",
        "credentials": b"http://user:pw@example.com/",
        "decimal_ip": b"http://2130706433/",
        "hex_ip": b"http://0x7f.1/",
        "localhost": b"http://api.localhost./",
    }
    return c


def main():
    for target, files in corpora().items():
        d = os.path.join(CORPUS, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(CORPUS) for f in fs)
    print("make_seeds: %d targets, %d bytes" % (len(corpora()), total))


if __name__ == "__main__":
    main()
