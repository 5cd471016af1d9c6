#!/usr/bin/python3
"""gen_vit_ref.py: PyTorch reference fixtures for gplq's ViT engine.

Defines, in plain torch (no timm), a model with exactly timm's VisionTransformer semantics
(class token, global_pool='token', qkv_bias=True, pre-norm blocks, LayerNorm eps 1e-6, exact
erf GELU, no layer scale, no dropout; DeiT-style distillation token and head_dist when
distilled), draws every parameter at random, runs one forward and backward pass in float32 on
the CPU and writes the parameters, inputs, intermediate activations, outputs, loss and all
gradients to safetensors files (written with the standard library only).

Before writing, every fixture is checked against independent computations:
  * a float64 loop implementation (per sample, per head; hand-written patch extraction,
    LayerNorm, softmax, GELU and label-smoothed cross entropy) that reads the HuggingFace-named
    copy of the weights, for the forward outputs and, through autograd, every gradient;
  * for non-distilled models, torch's own nn.MultiheadAttention kernel
    (F.multi_head_attention_forward) reading the torchvision-named copy of the weights;
  * on the tiny config, central finite differences of the float64 loss for a few entries;
  * a re-read of every written file with an independent safetensors parser.

Usage: /usr/bin/python3 tests/ref/gen_vit_ref.py [--out tests/fixtures]
"""

import argparse
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ref_io import (check, check_finite_diff, fmt_float, load_fmnist, read_safetensors,
                    write_safetensors)

GENERATOR = "tests/ref/gen_vit_ref.py"
FORMAT = "gplq-ref-1"
LN_EPS = 1e-6      # timm
HF_LN_EPS = 1e-12  # HuggingFace ViTConfig.layer_norm_eps default


# ----------------------------------------------------------------------------------------------
# The model: timm VisionTransformer semantics in plain torch, timm parameter names.
# ----------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    def __init__(self, patch, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, num_patches, C)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = (q @ k.transpose(-2, -1)) * self.scale
        att = att.softmax(dim=-1)
        x = (att @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # approximate='none': exact erf
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x, acts=None, prefix=""):
        h = self.norm1(x)
        a = self.attn(h)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        if acts is not None:
            acts[prefix + ".norm1"] = h
            acts[prefix + ".attn"] = a
            acts[prefix] = x
        return x


class VisionTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["embed_dim"]
        self.distilled = cfg["distilled"]
        num_patches = (cfg["img_size"] // cfg["patch_size"]) ** 2
        n_prefix = 2 if self.distilled else 1
        # Registration order = timm state_dict order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        if self.distilled:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_prefix + num_patches, C))
        self.patch_embed = PatchEmbed(cfg["patch_size"], cfg["in_chans"], C)
        self.blocks = nn.ModuleList(
            [Block(C, cfg["num_heads"], cfg["mlp_hidden"]) for _ in range(cfg["depth"])])
        self.norm = nn.LayerNorm(C, eps=LN_EPS)
        self.head = nn.Linear(C, cfg["num_classes"])
        if self.distilled:
            self.head_dist = nn.Linear(C, cfg["num_classes"])

    def set_ln_eps(self, eps):
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = eps

    def forward(self, x):
        acts = {}
        B = x.shape[0]
        t = self.patch_embed(x)
        pre = [self.cls_token.expand(B, -1, -1)]
        if self.distilled:
            pre.append(self.dist_token.expand(B, -1, -1))
        x = torch.cat(pre + [t], dim=1) + self.pos_embed
        acts["act.patch"] = x
        for i, blk in enumerate(self.blocks):
            x = blk(x, acts if i == 0 else None, "act.blocks.0")
        x = self.norm(x)
        feature = x[:, 0]
        if self.distilled:
            logits = (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2
        else:
            logits = self.head(feature)
        return feature, logits, acts


def init_params(model, gen, timm_scale_std=None):
    """Every parameter random (unlike timm's zero biases / unit LayerNorm), so that a wrong
    index, a skipped bias or a swapped LayerNorm affine shows. Linear/conv weights
    N(0, 1/fan_in) (or N(0, timm_scale_std) if given), biases N(0, 0.1), LayerNorm weight
    1 + N(0, 0.1), bias N(0, 0.1), cls/dist/pos N(0, 0.5)."""
    def normal(p, std, mean=0.0):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * std + mean)

    for name, p in model.named_parameters():
        if name in ("cls_token", "dist_token", "pos_embed"):
            normal(p, 0.5)
        elif ".norm" in name or name.startswith("norm."):
            normal(p, 0.1, 1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            normal(p, 0.1)
        elif name.endswith("weight"):
            fan_in = p[0].numel()
            normal(p, timm_scale_std if timm_scale_std else fan_in ** -0.5)
        else:
            raise AssertionError("unhandled parameter " + name)


# ----------------------------------------------------------------------------------------------
# Other naming conventions.
# ----------------------------------------------------------------------------------------------

def to_hf(sd, depth):
    """timm state dict -> HuggingFace ViTForImageClassification names."""
    C = sd["cls_token"].shape[-1]
    out = {
        "vit.embeddings.cls_token": sd["cls_token"],
        "vit.embeddings.position_embeddings": sd["pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
    }
    for i in range(depth):
        b, h = "blocks.%d." % i, "vit.encoder.layer.%d." % i
        out[h + "layernorm_before.weight"] = sd[b + "norm1.weight"]
        out[h + "layernorm_before.bias"] = sd[b + "norm1.bias"]
        qw, qb = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
        for j, part in enumerate(("query", "key", "value")):
            out[h + "attention.attention.%s.weight" % part] = qw[j * C:(j + 1) * C].clone()
            out[h + "attention.attention.%s.bias" % part] = qb[j * C:(j + 1) * C].clone()
        out[h + "attention.output.dense.weight"] = sd[b + "attn.proj.weight"]
        out[h + "attention.output.dense.bias"] = sd[b + "attn.proj.bias"]
        out[h + "layernorm_after.weight"] = sd[b + "norm2.weight"]
        out[h + "layernorm_after.bias"] = sd[b + "norm2.bias"]
        out[h + "intermediate.dense.weight"] = sd[b + "mlp.fc1.weight"]
        out[h + "intermediate.dense.bias"] = sd[b + "mlp.fc1.bias"]
        out[h + "output.dense.weight"] = sd[b + "mlp.fc2.weight"]
        out[h + "output.dense.bias"] = sd[b + "mlp.fc2.bias"]
    out["vit.layernorm.weight"] = sd["norm.weight"]
    out["vit.layernorm.bias"] = sd["norm.bias"]
    out["classifier.weight"] = sd["head.weight"]
    out["classifier.bias"] = sd["head.bias"]
    return out


def to_tv(sd, depth):
    """timm state dict -> torchvision vit_b_16 names."""
    out = {
        "class_token": sd["cls_token"],
        "conv_proj.weight": sd["patch_embed.proj.weight"],
        "conv_proj.bias": sd["patch_embed.proj.bias"],
        "encoder.pos_embedding": sd["pos_embed"],
    }
    for i in range(depth):
        b, t = "blocks.%d." % i, "encoder.layers.encoder_layer_%d." % i
        out[t + "ln_1.weight"] = sd[b + "norm1.weight"]
        out[t + "ln_1.bias"] = sd[b + "norm1.bias"]
        out[t + "self_attention.in_proj_weight"] = sd[b + "attn.qkv.weight"]
        out[t + "self_attention.in_proj_bias"] = sd[b + "attn.qkv.bias"]
        out[t + "self_attention.out_proj.weight"] = sd[b + "attn.proj.weight"]
        out[t + "self_attention.out_proj.bias"] = sd[b + "attn.proj.bias"]
        out[t + "ln_2.weight"] = sd[b + "norm2.weight"]
        out[t + "ln_2.bias"] = sd[b + "norm2.bias"]
        out[t + "mlp.0.weight"] = sd[b + "mlp.fc1.weight"]
        out[t + "mlp.0.bias"] = sd[b + "mlp.fc1.bias"]
        out[t + "mlp.3.weight"] = sd[b + "mlp.fc2.weight"]
        out[t + "mlp.3.bias"] = sd[b + "mlp.fc2.bias"]
    out["encoder.ln.weight"] = sd["norm.weight"]
    out["encoder.ln.bias"] = sd["norm.bias"]
    out["heads.head.weight"] = sd["head.weight"]
    out["heads.head.bias"] = sd["head.bias"]
    return out


# ----------------------------------------------------------------------------------------------
# Independent computations used only to check the model above.
# ----------------------------------------------------------------------------------------------

def naive_forward(hf, extra, cfg, x, labels, ln_eps, smoothing):
    """Loops, per sample and per head, over HF-named weights (any dtype; used in float64).
    extra holds dist_token / head_dist.* for distilled models. Returns feature, logits, loss,
    act.patch, act.blocks.0.norm1, act.blocks.0.attn, act.blocks.0."""
    B, Cin, H, W = x.shape
    P, C, nh = cfg["patch_size"], cfg["embed_dim"], cfg["num_heads"]
    hd = C // nh
    gh, gw = H // P, W // P

    def ln(v, w, b):
        mu = v.sum(-1, keepdim=True) / v.shape[-1]
        d = v - mu
        var = (d * d).sum(-1, keepdim=True) / v.shape[-1]
        return d / torch.sqrt(var + ln_eps) * w + b

    def lin(v, w, b):
        return (v.unsqueeze(-2) * w).sum(-1) + b  # no matmul kernel: broadcast and sum

    def gelu(v):
        return 0.5 * v * (1.0 + torch.erf(v / math.sqrt(2.0)))

    pw = hf["vit.embeddings.patch_embeddings.projection.weight"].reshape(C, -1)
    pb = hf["vit.embeddings.patch_embeddings.projection.bias"]
    pos = hf["vit.embeddings.position_embeddings"][0]
    feats, logits_all, losses = [], [], []
    acts = {k: [] for k in ("act.patch", "act.blocks.0.norm1", "act.blocks.0.attn",
                            "act.blocks.0")}
    for s in range(B):
        toks = [hf["vit.embeddings.cls_token"][0, 0]]
        if cfg["distilled"]:
            toks.append(extra["dist_token"][0, 0])
        for i in range(gh):          # row-major over the patch grid
            for j in range(gw):
                patch = x[s, :, i * P:(i + 1) * P, j * P:(j + 1) * P].reshape(-1)
                toks.append(lin(patch, pw, pb))
        h = torch.stack(toks) + pos  # (T, C)
        acts["act.patch"].append(h)
        T = h.shape[0]
        for L in range(cfg["depth"]):
            p = "vit.encoder.layer.%d." % L
            n1 = ln(h, hf[p + "layernorm_before.weight"], hf[p + "layernorm_before.bias"])
            heads = []
            for hh in range(nh):
                r = slice(hh * hd, (hh + 1) * hd)
                q = lin(n1, hf[p + "attention.attention.query.weight"][r],
                        hf[p + "attention.attention.query.bias"][r])
                k = lin(n1, hf[p + "attention.attention.key.weight"][r],
                        hf[p + "attention.attention.key.bias"][r])
                v = lin(n1, hf[p + "attention.attention.value.weight"][r],
                        hf[p + "attention.attention.value.bias"][r])
                rows = []
                for a in range(T):
                    sc = (q[a].unsqueeze(0) * k).sum(-1) / math.sqrt(hd)  # (T,)
                    e = torch.exp(sc - sc.max())
                    pr = e / e.sum()
                    rows.append((pr.unsqueeze(-1) * v).sum(0))
                heads.append(torch.stack(rows))  # (T, hd)
            o = lin(torch.cat(heads, dim=-1), hf[p + "attention.output.dense.weight"],
                    hf[p + "attention.output.dense.bias"])
            h = h + o
            n2 = ln(h, hf[p + "layernorm_after.weight"], hf[p + "layernorm_after.bias"])
            m = lin(gelu(lin(n2, hf[p + "intermediate.dense.weight"],
                             hf[p + "intermediate.dense.bias"])),
                    hf[p + "output.dense.weight"], hf[p + "output.dense.bias"])
            h = h + m
            if L == 0:
                acts["act.blocks.0.norm1"].append(n1)
                acts["act.blocks.0.attn"].append(o)
                acts["act.blocks.0"].append(h)
        hn = ln(h, hf["vit.layernorm.weight"], hf["vit.layernorm.bias"])
        lg = lin(hn[0], hf["classifier.weight"], hf["classifier.bias"])
        if cfg["distilled"]:
            lg = (lg + lin(hn[1], extra["head_dist.weight"], extra["head_dist.bias"])) / 2
        K = lg.shape[0]
        lse = lg.max() + torch.log(torch.exp(lg - lg.max()).sum())
        logp = lg - lse
        losses.append(-((1 - smoothing) * logp[int(labels[s])] + smoothing / K * logp.sum()))
        feats.append(hn[0])
        logits_all.append(lg)
    out = {k: torch.stack(v) for k, v in acts.items()}
    out["feature"] = torch.stack(feats)
    out["logits"] = torch.stack(logits_all)
    out["loss"] = (sum(losses) / B).reshape(1)
    return out


def tv_forward(tv, cfg, x, ln_eps):
    """torchvision-named weights through torch's MultiheadAttention kernel (non-distilled)."""
    C, nh = cfg["embed_dim"], cfg["num_heads"]
    t = F.conv2d(x, tv["conv_proj.weight"], tv["conv_proj.bias"], stride=cfg["patch_size"])
    t = t.reshape(x.shape[0], C, -1).permute(0, 2, 1)
    h = torch.cat([tv["class_token"].expand(x.shape[0], -1, -1), t], 1) + tv["encoder.pos_embedding"]
    for L in range(cfg["depth"]):
        p = "encoder.layers.encoder_layer_%d." % L
        n1 = F.layer_norm(h, (C,), tv[p + "ln_1.weight"], tv[p + "ln_1.bias"], ln_eps)
        q = n1.transpose(0, 1)  # (T, B, C)
        a, _ = F.multi_head_attention_forward(
            q, q, q, C, nh, tv[p + "self_attention.in_proj_weight"],
            tv[p + "self_attention.in_proj_bias"], None, None, False, 0.0,
            tv[p + "self_attention.out_proj.weight"], tv[p + "self_attention.out_proj.bias"],
            training=False, need_weights=False)
        h = h + a.transpose(0, 1)
        n2 = F.layer_norm(h, (C,), tv[p + "ln_2.weight"], tv[p + "ln_2.bias"], ln_eps)
        h = h + F.linear(F.gelu(F.linear(n2, tv[p + "mlp.0.weight"], tv[p + "mlp.0.bias"])),
                         tv[p + "mlp.3.weight"], tv[p + "mlp.3.bias"])
    h = F.layer_norm(h, (C,), tv["encoder.ln.weight"], tv["encoder.ln.bias"], ln_eps)
    return h[:, 0], F.linear(h[:, 0], tv["heads.head.weight"], tv["heads.head.bias"])


# ----------------------------------------------------------------------------------------------
# Fixtures.
# ----------------------------------------------------------------------------------------------

def config_metadata(cfg, batch):
    keys = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
            "mlp_hidden", "num_classes")
    m = {k: str(cfg[k]) for k in keys}
    m["distilled"] = "1" if cfg["distilled"] else "0"
    m["label_smoothing"] = fmt_float(cfg["label_smoothing"])
    m["ln_eps"] = fmt_float(LN_EPS)
    m["batch"] = str(batch)
    m["format"] = FORMAT
    m["generator"] = GENERATOR
    m["torch"] = torch.__version__
    return m


def make_fixture(cfg, seed, batch, data=None, timm_scale_std=None, finite_diff=False):
    """Builds the model and runs forward/backward; returns (model, tensors list, summary)."""
    gen = torch.Generator().manual_seed(seed)
    model = VisionTransformer(cfg)
    init_params(model, gen, timm_scale_std)
    if data is None:
        x = torch.randn(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"], generator=gen)
        labels = torch.randint(0, cfg["num_classes"], (batch,), generator=gen)
    else:
        x, labels = data
    x = x.clone().requires_grad_(True)
    s = cfg["label_smoothing"]

    feature, logits, acts = model(x)
    loss = F.cross_entropy(logits, labels, label_smoothing=s).reshape(1)
    model.zero_grad()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    dinput = x.grad.detach().clone()
    sd = {n: p.detach().clone() for n, p in model.named_parameters()}

    # --- independent float64 loop implementation over the HF-named copy -----------------
    hf64 = {k: v.double().requires_grad_(True) for k, v in to_hf(sd, cfg["depth"]).items()}
    extra64 = {k: sd[k].double().requires_grad_(True)
               for k in ("dist_token", "head_dist.weight", "head_dist.bias") if k in sd}
    x64 = x.detach().double().requires_grad_(True)
    ref = naive_forward(hf64, extra64, cfg, x64, labels, LN_EPS, s)
    ref["loss"].backward()
    errs = {}
    errs["feature"] = check("feature", feature, ref["feature"], 2e-5)
    errs["logits"] = check("logits", logits, ref["logits"], 2e-5)
    errs["loss"] = check("loss", loss, ref["loss"], 2e-5)
    for k in ("act.patch", "act.blocks.0.norm1", "act.blocks.0.attn", "act.blocks.0"):
        errs[k] = check(k, acts[k], ref[k], 2e-5)
    errs["dinput"] = check("dinput", dinput, x64.grad, 1e-4)
    # map gradients of the HF copy back to timm names
    ref_g = {}
    C = cfg["embed_dim"]
    for n in sd:
        if n in extra64:
            ref_g[n] = extra64[n].grad
    ref_g["cls_token"] = hf64["vit.embeddings.cls_token"].grad
    ref_g["pos_embed"] = hf64["vit.embeddings.position_embeddings"].grad
    ref_g["patch_embed.proj.weight"] = hf64["vit.embeddings.patch_embeddings.projection.weight"].grad
    ref_g["patch_embed.proj.bias"] = hf64["vit.embeddings.patch_embeddings.projection.bias"].grad
    for i in range(cfg["depth"]):
        b, h = "blocks.%d." % i, "vit.encoder.layer.%d." % i
        pairs = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense",
                 "norm2": "layernorm_after", "mlp.fc1": "intermediate.dense",
                 "mlp.fc2": "output.dense"}
        for tn, hn in pairs.items():
            for wb in ("weight", "bias"):
                ref_g[b + tn + "." + wb] = hf64[h + hn + "." + wb].grad
        for wb in ("weight", "bias"):
            ref_g[b + "attn.qkv." + wb] = torch.cat(
                [hf64[h + "attention.attention.%s.%s" % (part, wb)].grad
                 for part in ("query", "key", "value")])
    ref_g["norm.weight"] = hf64["vit.layernorm.weight"].grad
    ref_g["norm.bias"] = hf64["vit.layernorm.bias"].grad
    ref_g["head.weight"] = hf64["classifier.weight"].grad
    ref_g["head.bias"] = hf64["classifier.bias"].grad
    assert set(ref_g) == set(grads), set(ref_g) ^ set(grads)
    gerr = max(check("grad." + n, grads[n], ref_g[n], 1e-4) for n in grads)
    errs["grads(max)"] = gerr
    assert C == sd["cls_token"].shape[-1]

    # --- torch's MultiheadAttention kernel over the torchvision-named copy ----------------
    if not cfg["distilled"]:
        with torch.no_grad():
            tf, tl = tv_forward(to_tv(sd, cfg["depth"]), cfg, x.detach(), LN_EPS)
        errs["tv.feature"] = check("tv feature", tf, feature, 2e-5)
        errs["tv.logits"] = check("tv logits", tl, logits, 2e-5)

    # --- finite differences of the float64 loss --------------------------------------------
    if finite_diff:
        def loss_at(hf_over, x_over):
            with torch.no_grad():
                return naive_forward(hf_over, {k: v.detach() for k, v in extra64.items()},
                                     cfg, x_over, labels, LN_EPS, s)["loss"].item()
        base = {k: v.detach().clone() for k, v in hf64.items()}
        eps = 1e-6
        probes = [("vit.embeddings.cls_token", (0, 0, 3)),
                  ("vit.encoder.layer.0.attention.attention.key.weight", (5, 7)),
                  ("vit.encoder.layer.0.attention.attention.query.bias", (17,)),
                  ("vit.encoder.layer.%d.layernorm_after.weight" % (cfg["depth"] - 1), (2,)),
                  ("vit.embeddings.patch_embeddings.projection.weight", (1, 0, 1, 0))]
        errs["finite_diff"] = check_finite_diff(loss_at, base, hf64, probes, x64, eps)

    tensors = [(n, sd[n]) for n in sd]
    tensors += [("input", x.detach()), ("labels", labels), ("feature", feature), ("logits", logits),
                ("loss", loss)]
    tensors += [(k, acts[k]) for k in ("act.patch", "act.blocks.0.norm1", "act.blocks.0.attn",
                                       "act.blocks.0")]
    tensors += [("grad." + n, grads[n]) for n in sd]
    tensors += [("dinput", dinput)]
    return model, sd, x.detach(), labels, tensors, errs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    os.makedirs(args.out, exist_ok=True)

    tiny = dict(img_size=8, patch_size=2, in_chans=3, embed_dim=32, depth=2, num_heads=2,
                mlp_hidden=64, num_classes=5, distilled=False, label_smoothing=0.1)
    dist = dict(tiny, distilled=True, num_heads=4, img_size=12, patch_size=4, in_chans=1, depth=1)
    demo = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=6, num_heads=3,
                mlp_hidden=768, num_classes=10, distilled=False, label_smoothing=0.1)

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
        print("%-44s %9d bytes  %s" % (path, os.path.getsize(path), summary))

    def summary(tensors, errs):
        d = dict(tensors)
        return ("loss %.6f  |logits| %.6f  max rel err vs independent refs %.2g"
                % (d["loss"].item(), d["logits"].norm().item(), max(errs.values())))

    # 1. tiny
    model, sd, x, labels, tensors, errs = make_fixture(tiny, seed=1, batch=4, finite_diff=True)
    with torch.no_grad():
        model.set_ln_eps(HF_LN_EPS)
        _, logits_hf, _ = model(x)
        model.set_ln_eps(LN_EPS)
        hf = to_hf(sd, tiny["depth"])
        ref_hf = naive_forward({k: v.double() for k, v in hf.items()}, {}, tiny, x.double(),
                               labels, HF_LN_EPS, tiny["label_smoothing"])
    errs["logits_hf"] = check("logits_hf", logits_hf, ref_hf["logits"], 2e-5)
    idx = [n for n, _ in tensors].index("logits") + 1
    tensors.insert(idx, ("logits_hf", logits_hf))
    emit("vit_tiny_ref.safetensors", tensors, config_metadata(tiny, 4), summary(tensors, errs))
    emit("vit_tiny_hf.safetensors", list(hf.items()), {"format": "pt"},
         "HF names, %d tensors" % len(hf))
    tv = to_tv(sd, tiny["depth"])
    emit("vit_tiny_tv.safetensors", list(tv.items()), {"format": "pt"},
         "torchvision names, %d tensors" % len(tv))

    # 2. tiny distilled
    _, _, _, _, tensors, errs = make_fixture(dist, seed=2, batch=4, finite_diff=True)
    emit("vit_tiny_dist_ref.safetensors", tensors, config_metadata(dist, 4),
         summary(tensors, errs))

    # 3. demo on real Fashion-MNIST test images
    data = load_fmnist(8)
    _, _, _, _, tensors, errs = make_fixture(demo, seed=3, batch=8, data=data)
    emit("vit_demo_ref.safetensors", tensors, config_metadata(demo, 8), summary(tensors, errs))

    total = sum(os.path.getsize(p) for p in written)
    print("total %d bytes in %d files" % (total, len(written)))
    assert total < 30 * 1000 * 1000


if __name__ == "__main__":
    main()
