#!/usr/bin/python3
"""gen_swin_ref.py: PyTorch reference fixtures for gplq's Swin Transformer engine.

Defines, in plain torch (no timm), a model with exactly the semantics of timm's (>= 0.9)
SwinTransformer (patch embedding with LayerNorm; per stage: PatchMerging at the start of stages
1.., then blocks of window attention with a relative position bias, the cyclic shift of
window/2 on odd blocks and its -100 mask, the window shrunk to the resolution (and no shift)
where the map is not larger than the window; an MLP with exact GELU; LayerNorm eps 1e-5; the
final norm, the mean over tokens, head.fc), draws every parameter at random, runs one forward
and backward pass in float32 on the CPU and writes the parameters, inputs, every block's
output, the pooled feature, logits, loss and all gradients to safetensors files (written with
the standard library only). The same weights are also written in timm < 0.9 naming (merge at
the end of a stage, head.weight, with the buffers such files carry) and in HuggingFace
SwinForImageClassification naming.

Before writing, every fixture is checked against independent computations:
  * a float64 loop implementation (per sample, per window, per head; hand-written patch
    extraction, LayerNorm, roll, window partition, relative position bias gather, shift mask,
    softmax, GELU, 2x2 merge, pooling and label-smoothed cross entropy) that reads the
    HuggingFace-named copy of the weights, for every block output and, through autograd, every
    gradient;
  * a timm < 0.9 style forward (merge at the end of a stage by strided slices, the files'
    relative_position_index and attn_mask buffers) reading the old-named copy;
  * on the tiny config, central finite differences of the float64 loss for a few entries;
  * a re-read of every written file with an independent safetensors parser.

Usage: /usr/bin/python3 tests/ref/gen_swin_ref.py [--out tests/fixtures] [--only tiny|demo]
           [--demo-weights models/swin-fmnist.safetensors]
"""

import argparse
import math
import os
import re
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from ref_io import (check, check_finite_diff, fmt_float, load_fmnist, read_safetensors,
                    write_safetensors)

GENERATOR = "tests/ref/gen_swin_ref.py"
FORMAT = "gplq-ref-1"
LN_EPS = 1e-5  # timm's Swin (nn.LayerNorm default) and HuggingFace's SwinConfig.layer_norm_eps


# ----------------------------------------------------------------------------------------------
# The model: timm (>= 0.9) SwinTransformer semantics in plain torch, timm parameter names.
# ----------------------------------------------------------------------------------------------

def stage_geometry(cfg, s):
    """(resolution, dim, window, shift of odd blocks) of stage s, as timm computes them."""
    res = cfg["img_size"] // cfg["patch_size"] >> s
    win = min(cfg["window_size"], res)
    shift = 0 if res <= cfg["window_size"] else cfg["window_size"] // 2
    return res, cfg["embed_dim"] << s, win, shift


def relative_position_index(w):
    """(w*w, w*w) table row of each (query, key) pair of a window, as timm builds it."""
    coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij"))
    flat = coords.flatten(1)                         # (2, N)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()  # (N, N, 2)
    rel[:, :, 0] += w - 1
    rel[:, :, 1] += w - 1
    rel[:, :, 0] *= 2 * w - 1
    return rel.sum(-1)


def window_partition(x, w):
    B, H, W, C = x.shape
    x = x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w, w, C)


def window_reverse(win, w, H, W):
    C = win.shape[-1]
    x = win.view(-1, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def shift_mask(res, w, shift):
    """(num_windows, N, N) of 0 and -100, timm's SW-MSA mask."""
    img = torch.zeros(1, res, res, 1)
    cnt = 0
    for h in ((0, -w), (-w, -shift), (-shift, None)):
        for v in ((0, -w), (-w, -shift), (-shift, None)):
            img[:, h[0]:h[1], v[0]:v[1], :] = cnt
            cnt += 1
    mw = window_partition(img, w).view(-1, w * w)
    m = mw.unsqueeze(1) - mw.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


class PatchEmbed(nn.Module):
    def __init__(self, patch, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, H, W, C)


class WindowAttention(nn.Module):
    def __init__(self, dim, num_heads, w):
        super().__init__()
        self.num_heads, self.w = num_heads, w
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(w),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        att = att + bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            att = att.view(-1, nw, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            att = att.view(-1, self.num_heads, N, N)
        att = att.softmax(dim=-1)
        x = (att @ v).transpose(1, 2).reshape(B_, N, -1)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, res, w, shift, hidden):
        super().__init__()
        self.res, self.w, self.shift = res, w, shift
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = WindowAttention(dim, num_heads, w)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, hidden)
        self.register_buffer("attn_mask", shift_mask(res, w, shift) if shift else None,
                             persistent=False)

    def _attn(self, x):
        B, H, W, C = x.shape
        s, w = self.shift, self.w
        xs = torch.roll(x, shifts=(-s, -s), dims=(1, 2)) if s else x
        win = window_partition(xs, w).view(-1, w * w, C)
        a = self.attn(win, self.attn_mask).view(-1, w, w, C)
        xs = window_reverse(a, w, H, W)
        return torch.roll(xs, shifts=(s, s), dims=(1, 2)) if s else xs

    def forward(self, x, acts=None, prefix=""):
        B, H, W, C = x.shape
        h = self.norm1(x)
        a = self._attn(h)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        if acts is not None:
            acts[prefix + ".norm1"] = h
            acts[prefix + ".attn"] = a
        return x


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=LN_EPS)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        B, H, W, C = x.shape
        # (B, H/2, W/2, 2 (col), 2 (row), C): the four in the order x(0,0), x(1,0), x(0,1), x(1,1)
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class Stage(nn.Module):
    def __init__(self, cfg, s):
        super().__init__()
        res, dim, w, shift = stage_geometry(cfg, s)
        self.downsample = PatchMerging(dim // 2) if s > 0 else nn.Identity()
        self.blocks = nn.ModuleList(
            [Block(dim, cfg["num_heads"][s], res, w, shift if j % 2 else 0,
                   cfg["mlp_ratio"] * dim) for j in range(cfg["depths"][s])])


class Head(nn.Module):
    def __init__(self, dim, num_classes):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)


class SwinTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        n = len(cfg["depths"])
        # Registration order = timm state_dict order.
        self.patch_embed = PatchEmbed(cfg["patch_size"], cfg["in_chans"], cfg["embed_dim"])
        self.layers = nn.ModuleList([Stage(cfg, s) for s in range(n)])
        self.norm = nn.LayerNorm(cfg["embed_dim"] << (n - 1), eps=LN_EPS)
        self.head = Head(cfg["embed_dim"] << (n - 1), cfg["num_classes"])

    def forward(self, x, detail=False):
        acts = {}
        x = self.patch_embed(x)
        acts["act.patch"] = x
        for s, st in enumerate(self.layers):
            if s > 0:
                x = st.downsample(x)
                acts["act.layers.%d.downsample" % s] = x
            for j, blk in enumerate(st.blocks):
                name = "act.layers.%d.blocks.%d" % (s, j)
                x = blk(x, acts if detail else None, name)
                acts[name] = x
        feature = self.norm(x).mean(dim=(1, 2))
        return feature, self.head.fc(feature), acts


def init_params(model, gen):
    """Every parameter random (unlike timm's zero biases / unit LayerNorm), so that a wrong
    index, a skipped bias or a swapped LayerNorm affine shows. Linear/conv weights
    N(0, 1/fan_in), biases N(0, 0.1), LayerNorm weight 1 + N(0, 0.1), bias N(0, 0.1),
    relative position bias tables N(0, 0.5)."""
    def normal(p, std, mean=0.0):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * std + mean)

    for name, p in model.named_parameters():
        if name.endswith("relative_position_bias_table"):
            normal(p, 0.5)
        elif re.search(r"(^|\.)norm\d?\.", name):
            normal(p, 0.1, 1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            normal(p, 0.1)
        elif name.endswith("weight"):
            normal(p, p[0].numel() ** -0.5)
        else:
            raise AssertionError("unhandled parameter " + name)


def init_params_timm(model, gen):
    """timm's own initialization: trunc_normal(std .02, cut at +-2) for Linear weights and the
    bias tables, zero Linear biases, LayerNorm 1 and 0, and the patch conv left at PyTorch's
    Conv2d default (kaiming_uniform with a = sqrt(5): U(+-1/sqrt(fan_in)) for weight and
    bias), drawn here from gen."""
    def set_(p, v):
        with torch.no_grad():
            p.copy_(v)

    for name, p in model.named_parameters():
        if name.startswith("patch_embed.proj."):
            bound = 1.0 / math.sqrt(model.patch_embed.proj.weight[0].numel())
            set_(p, (torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
        elif re.search(r"(^|\.)norm\d?\.", name):
            set_(p, torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
        elif name.endswith("relative_position_bias_table") or name.endswith("weight"):
            set_(p, (torch.randn(p.shape, generator=gen) * 0.02).clamp(-2.0, 2.0))
        elif name.endswith("bias"):
            set_(p, torch.zeros_like(p))
        else:
            raise AssertionError("unhandled parameter " + name)


# ----------------------------------------------------------------------------------------------
# Other naming conventions.
# ----------------------------------------------------------------------------------------------

BLOCK_TO_HF = [("norm1", "layernorm_before"),
               ("attn.relative_position_bias_table", "attention.self.relative_position_bias_table"),
               ("attn.qkv", None),
               ("attn.proj", "attention.output.dense"),
               ("norm2", "layernorm_after"),
               ("mlp.fc1", "intermediate.dense"),
               ("mlp.fc2", "output.dense")]


def hf_pairs(cfg):
    """(timm name, HF name, part) for every parameter: part None for a whole tensor, 0..2 for
    HF's query, key and value, the thirds of timm's qkv along the first axis."""
    out = [("patch_embed.proj.weight", "swin.embeddings.patch_embeddings.projection.weight", None),
           ("patch_embed.proj.bias", "swin.embeddings.patch_embeddings.projection.bias", None),
           ("patch_embed.norm.weight", "swin.embeddings.norm.weight", None),
           ("patch_embed.norm.bias", "swin.embeddings.norm.bias", None)]
    n = len(cfg["depths"])
    for s in range(n):
        for j in range(cfg["depths"][s]):
            t, h = "layers.%d.blocks.%d." % (s, j), "swin.encoder.layers.%d.blocks.%d." % (s, j)
            for tn, hn in BLOCK_TO_HF:
                if hn is None:  # HF's order: query.weight, query.bias, key.weight, ...
                    for part, q in enumerate(("query", "key", "value")):
                        for wb in (".weight", ".bias"):
                            out.append((t + tn + wb, h + "attention.self." + q + wb, part))
                    continue
                for wb in ("",) if tn.endswith("table") else (".weight", ".bias"):
                    out.append((t + tn + wb, h + hn + wb, None))
        if s + 1 < n:  # HF: the merge that starts stage s+1 sits at the end of stage s
            t, h = "layers.%d.downsample." % (s + 1), "swin.encoder.layers.%d.downsample." % s
            out += [(t + "reduction.weight", h + "reduction.weight", None),
                    (t + "norm.weight", h + "norm.weight", None),
                    (t + "norm.bias", h + "norm.bias", None)]
    out += [("norm.weight", "swin.layernorm.weight", None), ("norm.bias", "swin.layernorm.bias", None),
            ("head.fc.weight", "classifier.weight", None), ("head.fc.bias", "classifier.bias", None)]
    return out


def to_hf(sd, cfg):
    """timm state dict -> HuggingFace SwinForImageClassification state dict, in its order, with
    the relative_position_index buffers its checkpoints carry (persistent in HF)."""
    out = {}
    for tn, hn, part in hf_pairs(cfg):
        v = sd[tn]
        if part is not None:
            c = v.shape[0] // 3
            v = v[part * c:(part + 1) * c].clone()
        out[hn] = v
        if hn.endswith("relative_position_bias_table"):
            w = (math.isqrt(v.shape[0]) + 1) // 2
            out[hn[:-len("bias_table")] + "index"] = relative_position_index(w)
    return out


def to_timm_old(sd, cfg):
    """timm state dict -> timm < 0.9 (SwinTransformer with BasicLayer) state dict, in its
    order: the merge at the end of the stage before, head.weight/bias, and the persistent
    buffers of those versions (attn.relative_position_index in every block, attn_mask in the
    shifted ones, ahead of the block's parameters as state_dict puts a module's own buffers
    before its children)."""
    out = {k: sd[k] for k in sd if k.startswith("patch_embed.")}
    n = len(cfg["depths"])
    for s in range(n):
        res, _, w, shift = stage_geometry(cfg, s)
        for j in range(cfg["depths"][s]):
            t = "layers.%d.blocks.%d." % (s, j)
            if j % 2 and shift:
                out[t + "attn_mask"] = shift_mask(res, w, shift)
            for k in [k for k in sd if k.startswith(t)]:
                out[k] = sd[k]
                if k.endswith("relative_position_bias_table"):
                    out[t + "attn.relative_position_index"] = relative_position_index(w)
        if s + 1 < n:
            for k in ("reduction.weight", "norm.weight", "norm.bias"):
                out["layers.%d.downsample.%s" % (s, k)] = sd["layers.%d.downsample.%s" % (s + 1, k)]
    out["norm.weight"], out["norm.bias"] = sd["norm.weight"], sd["norm.bias"]
    out["head.weight"], out["head.bias"] = sd["head.fc.weight"], sd["head.fc.bias"]
    return out


# ----------------------------------------------------------------------------------------------
# Independent computations used only to check the model above.
# ----------------------------------------------------------------------------------------------

def naive_forward(hf, cfg, x, labels, smoothing):
    """Loops over HF-named weights, per sample, per window and per head (any dtype; used in
    float64). Token maps are dicts {(row, col): (C,) vector}. Returns feature, logits, loss and
    the act.* tensors the model records."""
    B = x.shape[0]
    P, C0, nst = cfg["patch_size"], cfg["embed_dim"], len(cfg["depths"])
    grid = cfg["img_size"] // P

    def ln(v, w, b):
        mu = v.sum(-1, keepdim=True) / v.shape[-1]
        d = v - mu
        var = (d * d).sum(-1, keepdim=True) / v.shape[-1]
        return d / torch.sqrt(var + LN_EPS) * w + b

    def lin(v, w, b=None):
        y = (v.unsqueeze(-2) * w).sum(-1)  # no matmul kernel: broadcast and sum
        return y if b is None else y + b

    def gelu(v):
        return 0.5 * v * (1.0 + torch.erf(v / math.sqrt(2.0)))

    def as_map(m, res):
        return torch.stack([torch.stack([m[(i, j)] for j in range(res)]) for i in range(res)])

    def region(i, res, w, shift):
        """Which of timm's three slices (0, -w), (-w, -shift), (-shift, None) holds row i of
        the rolled map."""
        return 0 if i < res - w else (1 if i < res - shift else 2)

    pw = hf["swin.embeddings.patch_embeddings.projection.weight"].reshape(C0, -1)
    pb = hf["swin.embeddings.patch_embeddings.projection.bias"]
    feats, logits_all, losses = [], [], []
    acts = {}

    def record(name, m, res):
        acts.setdefault(name, []).append(as_map(m, res))

    for smp in range(B):
        h = {}
        for i in range(grid):
            for j in range(grid):
                patch = x[smp, :, i * P:(i + 1) * P, j * P:(j + 1) * P].reshape(-1)
                h[(i, j)] = ln(lin(patch, pw, pb), hf["swin.embeddings.norm.weight"],
                               hf["swin.embeddings.norm.bias"])
        record("act.patch", h, grid)
        res = grid
        for s in range(nst):
            if s > 0:  # the merge at the end of HF's stage s-1
                d = "swin.encoder.layers.%d.downsample." % (s - 1)
                nh_ = {}
                for i in range(res // 2):
                    for j in range(res // 2):
                        cat = torch.cat([h[(2 * i, 2 * j)], h[(2 * i + 1, 2 * j)],
                                         h[(2 * i, 2 * j + 1)], h[(2 * i + 1, 2 * j + 1)]])
                        nh_[(i, j)] = lin(ln(cat, hf[d + "norm.weight"], hf[d + "norm.bias"]),
                                          hf[d + "reduction.weight"])
                h, res = nh_, res // 2
                record("act.layers.%d.downsample" % s, h, res)
            C = C0 << s
            nheads = cfg["num_heads"][s]
            hd = C // nheads
            w = min(cfg["window_size"], res)
            for blk in range(cfg["depths"][s]):
                p = "swin.encoder.layers.%d.blocks.%d." % (s, blk)
                shift = cfg["window_size"] // 2 if (blk % 2 and res > cfg["window_size"]) else 0
                n1 = {k: ln(v, hf[p + "layernorm_before.weight"], hf[p + "layernorm_before.bias"])
                      for k, v in h.items()}
                table = hf[p + "attention.self.relative_position_bias_table"]
                # table row of (query a, key b): their row and column offsets within the window,
                # each shifted to 0 .. 2w-2, row-major in a (2w-1, 2w-1) grid
                bidx = torch.tensor([[(a // w - b // w + w - 1) * (2 * w - 1) + (a % w - b % w + w - 1)
                                      for b in range(w * w)] for a in range(w * w)])
                out_rolled = {}
                for wi in range(res // w):
                    for wj in range(res // w):
                        # the window's tokens in raster order, positions in the rolled map
                        pos = [(wi * w + a, wj * w + b) for a in range(w) for b in range(w)]
                        X = torch.stack([n1[((r + shift) % res, (c + shift) % res)] for r, c in pos])
                        N = len(pos)
                        if shift:  # -100 between tokens from different regions of the roll
                            lab = [(region(r, res, w, shift), region(c, res, w, shift))
                                   for r, c in pos]
                            mask = torch.tensor([[0.0 if lab[a] == lab[b] else -100.0
                                                  for b in range(N)] for a in range(N)],
                                                dtype=X.dtype)
                        heads = []
                        for hh in range(nheads):
                            rows = slice(hh * hd, (hh + 1) * hd)
                            q = lin(X, hf[p + "attention.self.query.weight"][rows],
                                    hf[p + "attention.self.query.bias"][rows])
                            k = lin(X, hf[p + "attention.self.key.weight"][rows],
                                    hf[p + "attention.self.key.bias"][rows])
                            v = lin(X, hf[p + "attention.self.value.weight"][rows],
                                    hf[p + "attention.self.value.bias"][rows])
                            sc = (q.unsqueeze(1) * k.unsqueeze(0)).sum(-1) / math.sqrt(hd)
                            sc = sc + table[:, hh][bidx]
                            if shift:
                                sc = sc + mask
                            e = torch.exp(sc - sc.max(-1, keepdim=True).values)
                            pr = e / e.sum(-1, keepdim=True)
                            heads.append((pr.unsqueeze(-1) * v.unsqueeze(0)).sum(1))  # (N, hd)
                        o = lin(torch.cat(heads, -1), hf[p + "attention.output.dense.weight"],
                                hf[p + "attention.output.dense.bias"])
                        for t, rc in enumerate(pos):
                            out_rolled[rc] = o[t]
                # shift back: the rolled map's (r, c) is the original's (r + shift, c + shift)
                attn = {(i, j): out_rolled[((i - shift) % res, (j - shift) % res)]
                        for i in range(res) for j in range(res)}
                h = {k: h[k] + attn[k] for k in h}
                h = {k: v + lin(gelu(lin(ln(v, hf[p + "layernorm_after.weight"],
                                            hf[p + "layernorm_after.bias"]),
                                         hf[p + "intermediate.dense.weight"],
                                         hf[p + "intermediate.dense.bias"])),
                                hf[p + "output.dense.weight"], hf[p + "output.dense.bias"])
                     for k, v in h.items()}
                name = "act.layers.%d.blocks.%d" % (s, blk)
                record(name + ".norm1", n1, res)
                record(name + ".attn", attn, res)
                record(name, h, res)
        toks = [ln(v, hf["swin.layernorm.weight"], hf["swin.layernorm.bias"]) for v in h.values()]
        feat = sum(toks) / len(toks)
        lg = lin(feat, hf["classifier.weight"], hf["classifier.bias"])
        K = lg.shape[0]
        lse = lg.max() + torch.log(torch.exp(lg - lg.max()).sum())
        logp = lg - lse
        losses.append(-((1 - smoothing) * logp[int(labels[smp])] + smoothing / K * logp.sum()))
        feats.append(feat)
        logits_all.append(lg)
    out = {k: torch.stack(v) for k, v in acts.items()}
    out["feature"] = torch.stack(feats)
    out["logits"] = torch.stack(logits_all)
    out["loss"] = (sum(losses) / B).reshape(1)
    return out


def old_timm_forward(old, cfg, x):
    """timm < 0.9 style over the old-named copy: (B, L, C) tokens, the merge at the END of a
    stage by strided slices concatenated, the files' own relative_position_index and attn_mask
    buffers, head.weight."""
    nst = len(cfg["depths"])
    t = F.conv2d(x, old["patch_embed.proj.weight"], old["patch_embed.proj.bias"],
                 stride=cfg["patch_size"])
    B, C, H, W = t.shape
    t = F.layer_norm(t.flatten(2).transpose(1, 2), (C,), old["patch_embed.norm.weight"],
                     old["patch_embed.norm.bias"], LN_EPS)
    for s in range(nst):
        res, C, w, shift = stage_geometry(cfg, s)
        nh = cfg["num_heads"][s]
        for j in range(cfg["depths"][s]):
            p = "layers.%d.blocks.%d." % (s, j)
            sh = shift if j % 2 else 0
            assert (p + "attn_mask" in old) == bool(sh), p
            y = F.layer_norm(t, (C,), old[p + "norm1.weight"], old[p + "norm1.bias"], LN_EPS)
            y = y.view(B, res, res, C)
            if sh:
                y = torch.roll(y, (-sh, -sh), (1, 2))
            win = y.view(B, res // w, w, res // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
            Bw, N, _ = win.shape
            qkv = F.linear(win, old[p + "attn.qkv.weight"], old[p + "attn.qkv.bias"])
            q, k, v = qkv.reshape(Bw, N, 3, nh, C // nh).permute(2, 0, 3, 1, 4)
            a = (q * (C // nh) ** -0.5) @ k.transpose(-2, -1)
            idx = old[p + "attn.relative_position_index"].view(-1)
            a = a + old[p + "attn.relative_position_bias_table"][idx].view(N, N, nh).permute(2, 0, 1)
            if sh:
                m = old[p + "attn_mask"]
                a = (a.view(B, m.shape[0], nh, N, N) + m[None, :, None]).view(-1, nh, N, N)
            o = (a.softmax(-1) @ v).transpose(1, 2).reshape(Bw, N, C)
            o = F.linear(o, old[p + "attn.proj.weight"], old[p + "attn.proj.bias"])
            o = o.view(B, res // w, res // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, res, res, C)
            if sh:
                o = torch.roll(o, (sh, sh), (1, 2))
            t = t + o.reshape(B, res * res, C)
            y = F.layer_norm(t, (C,), old[p + "norm2.weight"], old[p + "norm2.bias"], LN_EPS)
            y = F.linear(F.gelu(F.linear(y, old[p + "mlp.fc1.weight"], old[p + "mlp.fc1.bias"])),
                         old[p + "mlp.fc2.weight"], old[p + "mlp.fc2.bias"])
            t = t + y
        if s + 1 < nst:
            d = "layers.%d.downsample." % s
            g = t.view(B, res, res, C)
            g = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], -1)
            g = F.layer_norm(g.view(B, -1, 4 * C), (4 * C,), old[d + "norm.weight"],
                             old[d + "norm.bias"], LN_EPS)
            t = F.linear(g, old[d + "reduction.weight"])
    C = t.shape[-1]
    feat = F.layer_norm(t, (C,), old["norm.weight"], old["norm.bias"], LN_EPS).mean(1)
    return feat, F.linear(feat, old["head.weight"], old["head.bias"])


def load_weights(model, path):
    """Copies a trained checkpoint in timm >= 0.9 names into model: every parameter must be
    there with its shape; buffers and other tensors are ignored."""
    meta, t = read_safetensors(path)
    sd = model.state_dict()
    missing = [k for k in sd if k not in t]
    if missing:
        sys.exit("%s: missing %d tensor(s) of this config (timm >= 0.9 names): %s"
                 % (path, len(missing), ", ".join(missing[:8])))
    for k, v in sd.items():
        if tuple(t[k].shape) != tuple(v.shape):
            sys.exit("%s: '%s' has shape %s, this config needs %s"
                     % (path, k, list(t[k].shape), list(v.shape)))
        with torch.no_grad():
            v.copy_(t[k].to(torch.float32))
    extra = [k for k in t if k not in sd]
    print("%s: %d parameter tensors loaded, %d other tensors ignored" % (path, len(sd), len(extra)))
    return meta


# ----------------------------------------------------------------------------------------------
# Fixtures.
# ----------------------------------------------------------------------------------------------

def config_metadata(cfg, batch):
    m = {"arch": "swin"}
    for k in ("img_size", "patch_size", "in_chans", "embed_dim"):
        m[k] = str(cfg[k])
    m["depths"] = ",".join(str(d) for d in cfg["depths"])
    m["num_heads"] = ",".join(str(h) for h in cfg["num_heads"])
    m["window_size"] = str(cfg["window_size"])
    m["mlp_ratio"] = str(cfg["mlp_ratio"])
    m["num_classes"] = str(cfg["num_classes"])
    m["label_smoothing"] = fmt_float(cfg["label_smoothing"])
    m["ln_eps"] = fmt_float(LN_EPS)
    m["batch"] = str(batch)
    m["format"] = FORMAT
    m["generator"] = GENERATOR
    m["torch"] = torch.__version__
    return m


def make_fixture(cfg, seed, batch, data=None, timm_init=False, weights=None, finite_diff=False,
                 detail=False):
    """Builds the model and runs forward/backward; returns (sd, tensors list, errors)."""
    gen = torch.Generator().manual_seed(seed)
    model = SwinTransformer(cfg)
    if weights:
        load_weights(model, weights)
    elif timm_init:
        init_params_timm(model, gen)
    else:
        init_params(model, gen)
    if data is None:
        x = torch.randn(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"], generator=gen)
        labels = torch.randint(0, cfg["num_classes"], (batch,), generator=gen)
    else:
        x, labels = data
    x = x.clone().requires_grad_(True)
    s = cfg["label_smoothing"]

    feature, logits, acts = model(x, detail=detail)
    loss = F.cross_entropy(logits, labels, label_smoothing=s).reshape(1)
    model.zero_grad()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    dinput = x.grad.detach().clone()
    sd = {n: p.detach().clone() for n, p in model.named_parameters()}

    # --- independent float64 loop implementation over the HF-named copy -----------------
    pairs = hf_pairs(cfg)
    assert sorted(t for t, _, part in pairs if part in (None, 0)) == sorted(sd)
    hf64 = {k: v.double().requires_grad_(v.dtype == torch.float32)
            for k, v in to_hf(sd, cfg).items()}
    x64 = x.detach().double().requires_grad_(True)
    ref = naive_forward(hf64, cfg, x64, labels, s)
    ref["loss"].backward()
    errs = {}
    errs["feature"] = check("feature", feature, ref["feature"], 2e-5)
    errs["logits"] = check("logits", logits, ref["logits"], 2e-5)
    errs["loss"] = check("loss", loss, ref["loss"], 2e-5)
    for k in acts:
        errs[k] = check(k, acts[k], ref[k], 2e-5)
    errs["dinput"] = check("dinput", dinput, x64.grad, 1e-4)
    ref_g = {}
    for tn, hn, part in pairs:
        g = hf64[hn].grad
        ref_g[tn] = g if part is None else (torch.cat([ref_g[tn], g]) if part else g)
    assert set(ref_g) == set(grads), set(ref_g) ^ set(grads)
    errs["grads(max)"] = max(check("grad." + n, grads[n], ref_g[n], 1e-4) for n in grads)

    # --- timm < 0.9 style forward over the old-named copy ------------------------------------
    with torch.no_grad():
        of, ol = old_timm_forward(to_timm_old(sd, cfg), cfg, x.detach())
    errs["old.feature"] = check("old-timm feature", of, feature, 2e-5)
    errs["old.logits"] = check("old-timm logits", ol, logits, 2e-5)

    # --- finite differences of the float64 loss --------------------------------------------
    if finite_diff:
        last = len(cfg["depths"]) - 1

        def loss_at(hf_over, x_over):
            with torch.no_grad():
                return naive_forward(hf_over, cfg, x_over, labels, s)["loss"].item()
        base = {k: v.detach().clone() for k, v in hf64.items()}
        eps = 1e-6
        probes = [("swin.encoder.layers.0.blocks.1.attention.self.relative_position_bias_table", (20, 1)),
                  ("swin.encoder.layers.0.blocks.1.attention.self.key.weight", (5, 7)),
                  ("swin.encoder.layers.0.blocks.0.attention.self.query.bias", (11,)),
                  ("swin.encoder.layers.0.downsample.reduction.weight", (3, 40)),
                  ("swin.encoder.layers.0.downsample.norm.bias", (9,)),
                  ("swin.encoder.layers.%d.blocks.1.layernorm_after.weight" % last, (2,)),
                  ("swin.embeddings.norm.bias", (3,)),
                  ("swin.embeddings.patch_embeddings.projection.weight", (1, 0, 1, 0))]
        errs["finite_diff"] = check_finite_diff(loss_at, base, hf64, probes, x64, eps)

    tensors = [(n, sd[n]) for n in sd]
    tensors += [("input", x.detach()), ("labels", labels), ("feature", feature), ("logits", logits),
                ("loss", loss)]
    tensors += [(k, acts[k]) for k in acts]
    tensors += [("grad." + n, grads[n]) for n in sd]
    tensors += [("dinput", dinput)]
    return sd, tensors, errs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--only", choices=("tiny", "demo"), help="write only these fixtures")
    ap.add_argument("--demo-weights", metavar="FILE",
                    help="the demo fixture from these trained weights (timm >= 0.9 names) "
                         "instead of a random timm initialization")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    os.makedirs(args.out, exist_ok=True)

    tiny = dict(img_size=16, patch_size=2, in_chans=3, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                window_size=4, mlp_ratio=4, num_classes=5, label_smoothing=0.1)
    demo = dict(img_size=28, patch_size=2, in_chans=1, embed_dim=64, depths=(2, 6), num_heads=(2, 4),
                window_size=7, mlp_ratio=4, num_classes=10, label_smoothing=0.1)

    written = []

    def emit(name, tensors, meta, summary):
        path = os.path.join(args.out, name)
        write_safetensors(path, tensors, meta)
        rmeta, rt = read_safetensors(path)
        assert rmeta == (meta or {}), path
        assert list(rt) == [n for n, _ in tensors], path
        for n, t in tensors:
            assert rt[n].dtype == t.dtype and tuple(rt[n].shape) == tuple(t.shape), (path, n)
            assert torch.equal(rt[n], t.detach()), (path, n)
        written.append(path)
        print("%-44s %9d bytes  %s" % (path, os.path.getsize(path), summary), flush=True)

    def summary(tensors, errs):
        d = dict(tensors)
        return ("loss %.6f  |logits| %.6f  max rel err vs independent refs %.2g"
                % (d["loss"].item(), d["logits"].norm().item(), max(errs.values())))

    if args.only in (None, "tiny"):
        sd, tensors, errs = make_fixture(tiny, seed=1, batch=4, finite_diff=True, detail=True)
        emit("swin_tiny_ref.safetensors", tensors, config_metadata(tiny, 4), summary(tensors, errs))
        old = to_timm_old(sd, tiny)
        emit("swin_tiny_timm_old.safetensors", list(old.items()), {"format": "pt"},
             "timm < 0.9 names, %d tensors" % len(old))
        hf = to_hf(sd, tiny)
        emit("swin_tiny_hf.safetensors", list(hf.items()), {"format": "pt"},
             "HF names, %d tensors" % len(hf))

    if args.only in (None, "demo"):
        data = load_fmnist(8)
        _, tensors, errs = make_fixture(demo, seed=3, batch=8, data=data, timm_init=True,
                                        weights=args.demo_weights)
        meta = config_metadata(demo, 8)
        if args.demo_weights:
            meta["weights"] = os.path.basename(args.demo_weights)
        emit("swin_demo_ref.safetensors", tensors, meta, summary(tensors, errs))

    total = sum(os.path.getsize(p) for p in written)
    print("total %d bytes in %d files" % (total, len(written)))
    assert total < 30 * 1000 * 1000


if __name__ == "__main__":
    main()
