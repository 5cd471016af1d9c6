"""bench/vitfile.py: timm-named ViT checkpoints for the benches, written without torch or timm.

vit_shapes gives the tensors of timm's VisionTransformer (no distillation token) in file order;
write_vit writes them as safetensors, every tensor filled by fill(name, shape) -> bytes of
little-endian float32 (None: zeros, written a megabyte at a time so that a 100 MB file costs no
memory).
"""
import json
import os
import struct


def vit_shapes(dim=384, depth=12, mlp=1536, classes=1000, img=224, patch=16, chans=3):
    n_tok = (img // patch) ** 2 + 1
    shapes = {"cls_token": [1, 1, dim], "pos_embed": [1, n_tok, dim],
              "patch_embed.proj.weight": [dim, chans, patch, patch], "patch_embed.proj.bias": [dim],
              "norm.weight": [dim], "norm.bias": [dim],
              "head.weight": [classes, dim], "head.bias": [classes]}
    for l in range(depth):
        b = "blocks.%d." % l
        shapes.update({b + "norm1.weight": [dim], b + "norm1.bias": [dim],
                       b + "attn.qkv.weight": [3 * dim, dim], b + "attn.qkv.bias": [3 * dim],
                       b + "attn.proj.weight": [dim, dim], b + "attn.proj.bias": [dim],
                       b + "norm2.weight": [dim], b + "norm2.bias": [dim],
                       b + "mlp.fc1.weight": [mlp, dim], b + "mlp.fc1.bias": [mlp],
                       b + "mlp.fc2.weight": [dim, mlp], b + "mlp.fc2.bias": [dim]})
    return shapes


def write_vit(path, shapes, metadata, fill=None):
    """Writes shapes (vit_shapes) to path with metadata (str -> str); returns the file's size."""
    header, off = {"__metadata__": dict(metadata)}, 0
    for k, s in shapes.items():
        n = 4
        for x in s:
            n *= x
        header[k] = {"dtype": "F32", "shape": s, "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        if fill:
            for k, s in shapes.items():
                f.write(fill(k, s))
        else:
            chunk = b"\0" * (1 << 20)
            left = off
            while left:
                f.write(chunk[:min(left, len(chunk))])
                left -= min(left, len(chunk))
    return os.path.getsize(path)
