#!/usr/bin/python3
"""torch_stage1.py: the PyTorch side of `make bench`'s stage-1 table: one GPLQ stage-1 step.

The same models, batches, step counts and step as bench/bench_stage1.c, so that bench/run.sh can
put the two side by side. One step: the frozen FP32 teacher's forward under torch.no_grad() for
the penultimate feature (a ViT's final-norm class token, a Swin's mean of its final-norm
tokens); the student's forward with LSQ activation
fake quantizers at GPLQ's points (GPLQ-METHOD.md, "Quantizers"); CE on the student's logits plus
alpha times the PCA feature-mimicking loss || (f_s - f_t) V_k ||^2 (mean over the batch);
backward through the student, including every quantizer step's LSQ gradient; AdamW over all
weights and all steps (stage 1's defaults: lr 5e-6, no weight decay, alpha 1, no label
smoothing), the steps then kept positive as gplq keeps them.

Quantizer points, as gplq/actq.h places them (4 bits unless said):
  * the inputs of qkv, proj, fc1, fc2 and head: per channel (one step per input feature), signed;
  * q, k and v: per tensor, one step each over the qkv output (B, N, 3C), signed;
  * the softmax output: per tensor, unsigned;
  * the patch embedding's input (the image): per tensor, signed, 8 bits;
  * a Swin's PatchMerging (the start of stages 1..): the reduction's input, i.e. the output of
    the merge's LayerNorm(4C), per channel, signed (model_qpoints' QP_MERGE_IN).
In a Swin block the points are the ViT's, on the window tokens (q|k|v over the qkv output of
every window, the softmax output after the relative position bias and the shift mask), and
the head's input is the pooled feature.
LayerNorm, GELU, softmax and the residual stream stay FP32. The forward is therefore written
out here (vit_quantized_forward, swin_quantized_forward); the models themselves are the
VisionTransformer of tests/ref/gen_vit_ref.py and the SwinTransformer of tests/ref/gen_swin_ref.py
that bench/torch_step.py uses, the classes the C engine is tested against.

The LSQ quantizer is a torch.autograd.Function with gplq's gradient (gplq/quant.h): the input
gradient passes straight through inside the clamp range and is 0 outside; the step's gradient
is sum(dout * (round(x/s) - x/s)) inside, the bound hit (Qn or Qp) outside, times the LSQ scale
1 / sqrt(numel_per_step * Qp). Steps start from one calibration batch with quantization off
(per channel: absmax / Qp; per tensor: the 1st/99th percentiles), as gplq's do. The PCA basis
is a random orthonormal (dim, k) matrix: the loss's cost does not depend on which subspace it is.

What this side is not charged for: its batch is a fixed float tensor (gplq builds each batch
from 8-bit pixels with crop and flip inside its timed step; a few ms at most here).

Each model runs in its own process (this script re-invoked with --child) so that its peak RSS
is its own. Prints one JSON object per model on stdout, one a line; a human summary on stderr.

Usage: /usr/bin/python3 bench/torch_stage1.py [--models demo,deit-s,swin-t] [--batch N]
                                              [--warmup N] [--steps N] [--threads N]
Exit status: 0, or 1 if a model's run failed.
"""

import argparse
import copy
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the model table, the timm initialization and the BLAS report are torch_step.py's, so both
# PyTorch sides run the same models on the same library
from torch_step import MODELS, blas_info, feature_dim, make_model  # noqa: E402
from gen_swin_ref import window_partition, window_reverse  # noqa: E402  (torch_step's path)

# As bench_stage1.c: components of the PCA basis per model, activation bits, patch-input bits.
PCA_K = {"demo": 64, "deit-s": 128, "swin-t": 256}
ABITS, PATCH_BITS = 4, 8
# stage1_defaults (gplq/stage1.c)
LR, BETAS, EPS, WEIGHT_DECAY, ALPHA = 5e-6, (0.9, 0.999), 1e-8, 0.0, 1.0
STEP_MIN = 1e-8  # QUANT_STEP_MIN: steps are clamped to stay positive after each update


class LSQFunction(torch.autograd.Function):
    """Fake quantization with a learned step. Either x is (rows, C) and s (C,): one step per
    column (per channel); or x is (rows, G, W) and s (G, 1): G steps, each shared by W
    consecutive columns (per tensor: G = 1; q|k|v: G = 3). Only x and s are saved, as gplq keeps
    only the quantizer's input: the backward recomputes x / s rather than holding a mask and a
    rounding residual per activation."""

    @staticmethod
    def forward(ctx, x, s, qn, qp, g):
        ctx.save_for_backward(x, s)
        ctx.qn, ctx.qp, ctx.g = qn, qp, g
        # torch.round rounds half to even, as gplq does
        return torch.clamp(torch.round(x / s), qn, qp) * s

    @staticmethod
    def backward(ctx, dout):
        x, s = ctx.saved_tensors
        qn, qp = ctx.qn, ctx.qp
        v = x / s
        vc = v.clamp(qn, qp)
        # The mask as 0/1 floats and arithmetic rather than torch.where: in this torch build
        # where() and bool-by-float products run several times slower than float arithmetic
        # (measured on these shapes), and the results are identical.
        inside = ((v >= qn) & (v <= qp)).to(v.dtype)
        # inside, vc = v and t = round(v) - v; outside, vc is the bound hit (an integer), so
        # round(vc) - vc = 0 and the last term gives t = the bound
        t = torch.round(vc) - vc + (1 - inside) * vc
        ds = (dout * t).sum(dim=0 if x.dim() == 2 else (0, 2)).mul_(ctx.g).view_as(s)
        return dout * inside, ds, None, None, None


class ActQuant(nn.Module):
    """One quantizer point: `groups` learned steps over the last dimension of its input."""

    def __init__(self, groups, bits, signed, per_channel):
        super().__init__()
        self.groups, self.signed, self.per_channel = groups, signed, per_channel
        self.qn = -(1 << (bits - 1)) if signed else 0
        self.qp = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        self.step = nn.Parameter(torch.ones(groups))
        self.observe = False  # True: pass through and set the step from this input

    def forward(self, x):
        # per channel: (rows, C) against (C,) steps; else (rows, G, W) against (G, 1)
        if self.per_channel:
            xv, s = x.reshape(-1, self.groups), self.step
        else:
            xv, s = x.reshape(-1, self.groups, x.shape[-1] // self.groups), self.step.view(-1, 1)
        if self.observe:
            self.init_step(xv.detach())
            return x
        # LSQ's gradient scale: every element that shares a step counts
        g = 1.0 / math.sqrt(xv.numel() / self.groups * self.qp)
        return LSQFunction.apply(xv, s, self.qn, self.qp, g).view(x.shape)

    @torch.no_grad()
    def init_step(self, xv):
        if self.per_channel:  # absmax / Qp
            s = xv.abs().amax(dim=0) / self.qp
        else:  # per tensor (and q|k|v): the 1st and 99th percentiles of each step's values
            s = torch.empty(self.groups)
            for i in range(self.groups):
                vals = xv[:, i, :].flatten()
                if vals.numel() > 1 << 20:  # torch.quantile's input limit; a sample suffices
                    vals = vals[torch.randint(vals.numel(), (1 << 20,))]
                p1, p99 = torch.quantile(vals, torch.tensor([0.01, 0.99])).tolist()
                s[i] = (max(abs(p1), abs(p99)) if self.signed else p99) / self.qp
        self.step.copy_(s.clamp(min=STEP_MIN))


class BlockQuant(nn.Module):
    """The six quantizer points of one block (actq.h's order)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.qkv_in = ActQuant(dim, ABITS, True, True)
        self.qkv_out = ActQuant(3, ABITS, True, False)  # q, k, v: one step each
        self.attn = ActQuant(1, ABITS, False, False)    # softmax output
        self.proj_in = ActQuant(dim, ABITS, True, True)
        self.fc1_in = ActQuant(dim, ABITS, True, True)
        self.fc2_in = ActQuant(hidden, ABITS, True, True)


class QuantSet(nn.Module):
    """A student's quantizers."""

    def set_observe(self, on):
        for m in self.modules():
            if isinstance(m, ActQuant):
                m.observe = on


class StudentQuant(QuantSet):
    """Every quantizer of a ViT student."""

    def __init__(self, cfg):
        super().__init__()
        C, H = cfg["embed_dim"], cfg["mlp_hidden"]
        self.patch_in = ActQuant(1, PATCH_BITS, True, False)
        self.blocks = nn.ModuleList([BlockQuant(C, H) for _ in range(cfg["depth"])])
        self.head_in = ActQuant(C, ABITS, True, True)


class SwinStudentQuant(QuantSet):
    """Every quantizer of a Swin student: six per block (blocks numbered over all stages),
    the patch input, the head input (the pooled feature), and one per PatchMerging."""

    def __init__(self, cfg):
        super().__init__()
        n = len(cfg["depths"])
        dims = [cfg["embed_dim"] << s for s in range(n)]
        self.patch_in = ActQuant(1, PATCH_BITS, True, False)
        self.blocks = nn.ModuleList([BlockQuant(dims[s], cfg["mlp_ratio"] * dims[s])
                                     for s in range(n) for _ in range(cfg["depths"][s])])
        self.head_in = ActQuant(dims[-1], ABITS, True, True)
        # merge_in[s - 1] is stage s's: 4 x the previous stage's channels
        self.merge_in = nn.ModuleList([ActQuant(4 * dims[s - 1], ABITS, True, True)
                                       for s in range(1, n)])


def vit_quantized_forward(model, qs, x):
    """The student's forward: gen_vit_ref's VisionTransformer.forward (non-distilled) with the
    quantizers of qs in place. Returns (feature, logits)."""
    B = x.shape[0]
    t = model.patch_embed(qs.patch_in(x))
    x = torch.cat([model.cls_token.expand(B, -1, -1), t], dim=1) + model.pos_embed
    _, N, C = x.shape
    for blk, bq in zip(model.blocks, qs.blocks):
        a = blk.attn
        qkv = bq.qkv_out(a.qkv(bq.qkv_in(blk.norm1(x))))  # (B, N, 3C)
        q, k, v = qkv.reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        att = bq.attn(((q @ k.transpose(-2, -1)) * a.scale).softmax(dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, N, C)
        x = x + a.proj(bq.proj_in(y))
        m = blk.mlp
        x = x + m.fc2(bq.fc2_in(m.act(m.fc1(bq.fc1_in(blk.norm2(x))))))
    x = model.norm(x)
    feature = x[:, 0]
    return feature, model.head(qs.head_in(feature))


def swin_window_attention(blk, bq, h):
    """gen_swin_ref's Block._attn and WindowAttention.forward on h (B, H, W, C), the block's
    quantized norm1 output, with the q|k|v, softmax and proj-input quantizers of bq in place."""
    B, H, W, C = h.shape
    s, w, a = blk.shift, blk.w, blk.attn
    if s:
        h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))
    win = window_partition(h, w).view(-1, w * w, C)
    Bw, N, _ = win.shape
    qkv = bq.qkv_out(a.qkv(win))  # (Bw, N, 3C)
    q, k, v = qkv.reshape(Bw, N, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    att = (q * a.scale) @ k.transpose(-2, -1)
    bias = a.relative_position_bias_table[a.relative_position_index.view(-1)]
    att = att + bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)
    if blk.attn_mask is not None:
        nw = blk.attn_mask.shape[0]
        att = att.view(-1, nw, a.num_heads, N, N) + blk.attn_mask.unsqueeze(1).unsqueeze(0)
        att = att.view(-1, a.num_heads, N, N)
    att = bq.attn(att.softmax(dim=-1))
    y = (att @ v).transpose(1, 2).reshape(Bw, N, C)
    y = a.proj(bq.proj_in(y)).view(-1, w, w, C)
    y = window_reverse(y, w, H, W)
    return torch.roll(y, shifts=(s, s), dims=(1, 2)) if s else y


def swin_quantized_forward(model, qs, x):
    """The student's forward: gen_swin_ref's SwinTransformer.forward with the quantizers of qs
    in place. Returns (feature, logits)."""
    x = model.patch_embed(qs.patch_in(x))  # (B, H, W, C)
    bqs = iter(qs.blocks)
    for s, st in enumerate(model.layers):
        if s > 0:  # PatchMerging.forward, the reduction's input quantized
            d = st.downsample
            B, H, W, C = x.shape
            g = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
            x = d.reduction(qs.merge_in[s - 1](d.norm(g)))
        for blk in st.blocks:
            bq = next(bqs)
            x = x + swin_window_attention(blk, bq, bq.qkv_in(blk.norm1(x)))
            m = blk.mlp
            x = x + m.fc2(bq.fc2_in(m.act(m.fc1(bq.fc1_in(blk.norm2(x))))))
    feature = model.norm(x).mean(dim=(1, 2))
    return feature, model.head.fc(qs.head_in(feature))


def run_model(name, batch, warmup, steps, threads):
    """Runs warmup + steps stage-1 steps of `name`, returns its result as a dict."""
    rss_base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = MODELS[name]
    cfg = spec["cfg"]
    if spec["arch"] == "swin":
        quant_set, quantized_forward = SwinStudentQuant, swin_quantized_forward
    elif cfg["distilled"]:
        raise ValueError("vit_quantized_forward does not do the distillation token")
    else:
        quant_set, quantized_forward = StudentQuant, vit_quantized_forward
    teacher = make_model(spec)
    # the student starts as a copy of the teacher, as in gplq_run
    student = copy.deepcopy(teacher)
    teacher.eval()
    teacher.requires_grad_(False)
    student.train()
    qs = quant_set(cfg)
    x = torch.randn(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"])
    y = torch.randint(0, cfg["num_classes"], (batch,))
    fdim = feature_dim(spec)
    k = min(PCA_K[name], fdim)
    basis = torch.linalg.qr(torch.randn(fdim, k))[0]  # (C, k), orthonormal columns

    # the steps from one calibration batch, quantization off
    qs.set_observe(True)
    with torch.no_grad():
        quantized_forward(student, qs, x)
    qs.set_observe(False)

    steps_params = list(qs.parameters())
    opt = torch.optim.AdamW(list(student.parameters()) + steps_params, lr=LR, betas=BETAS,
                            eps=EPS, weight_decay=WEIGHT_DECAY)

    times = []  # (teacher, student forward + loss, backward, optim) seconds per timed step
    loss_v = ce_v = pca_v = float("nan")
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.no_grad():
            f_t, _, _ = teacher(x)
        t1 = time.perf_counter()
        f_s, logits = quantized_forward(student, qs, x)
        ce = F.cross_entropy(logits, y)
        pca = ALPHA * ((f_s - f_t) @ basis).pow(2).sum(dim=1).mean()
        loss = ce + pca
        t2 = time.perf_counter()
        # set_to_none: torch's fastest way to clear gradients (gplq's memset is in its step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        with torch.no_grad():
            for s in steps_params:
                s.clamp_(min=STEP_MIN)
        t4 = time.perf_counter()
        loss_v, ce_v, pca_v = loss.item(), ce.item(), pca.item()
        if i >= warmup:
            times.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
    if not math.isfinite(loss_v):
        raise RuntimeError("loss is %r: the step is broken, its time means nothing" % loss_v)
    step_s = statistics.median(sum(t) for t in times)
    res = {
        "model": name, "batch": batch, "threads": torch.get_num_threads(),
        "torch_version": torch.__version__, "warmup": warmup, "steps": steps,
        "abits": ABITS, "patch_bits": PATCH_BITS, "pca_k": k,
        "step_s": step_s, "step_s_min": min(sum(t) for t in times),
        "teacher_s": statistics.median(t[0] for t in times),
        "forward_s": statistics.median(t[1] for t in times),
        "backward_s": statistics.median(t[2] for t in times),
        "optim_s": statistics.median(t[3] for t in times),
        "images_per_s": batch / step_s,
        "params": sum(p.numel() for p in student.parameters()),
        "quant_steps": sum(p.numel() for p in steps_params),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # the interpreter and torch's libraries alone, before the models
        "rss_base_mb": rss_base_mb,
        "loss": loss_v, "ce": ce_v, "pca_loss": pca_v,
    }
    res.update(blas_info())
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    ap.add_argument("--batch", type=int, default=0, help="override every model's batch")
    ap.add_argument("--warmup", type=int, default=-1, help="override every model's warmup steps")
    ap.add_argument("--steps", type=int, default=0, help="override every model's timed steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)  # run this one model in this process
    args = ap.parse_args()
    names = [n for n in args.models.split(",") if n]
    for n in names + ([args.child] if args.child else []):
        if n not in MODELS:
            ap.error("unknown model %r (%s)" % (n, ", ".join(MODELS)))

    if args.child:
        spec = MODELS[args.child]
        # at least one warmup step, as bench_stage1.c (whose first step cannot be timed)
        warmup = max(1, args.warmup if args.warmup >= 0 else spec["warmup"])
        res = run_model(args.child, args.batch or spec["batch"], warmup,
                        args.steps or spec["steps"], args.threads)
        print(json.dumps(res), flush=True)
        return 0

    failed = 0
    for name in names:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name,
               "--batch", str(args.batch), "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--threads", str(args.threads)]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        try:
            res = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
        except (ValueError, IndexError):
            res = None
        if res is None:
            print("torch_stage1: %s: the run failed (exit %d)" % (name, p.returncode),
                  file=sys.stderr)
            failed = 1
            continue
        print(json.dumps(res), flush=True)
        print("torch %s, %s core %s, threads %s: %-6s batch %3d: stage-1 step %.1f ms (teacher "
              "%.1f / fwd %.1f / bwd %.1f / optim %.1f), %.1f img/s, peak RSS %.0f MB"
              % (res["torch_version"], "OpenBLAS" if res["is_openblas"] else "BLAS (not OpenBLAS)",
                 res["blas_core"], res["threads"], name, res["batch"], 1e3 * res["step_s"],
                 1e3 * res["teacher_s"], 1e3 * res["forward_s"], 1e3 * res["backward_s"],
                 1e3 * res["optim_s"], res["images_per_s"], res["peak_rss_mb"]), file=sys.stderr)
    return failed


if __name__ == "__main__":
    sys.exit(main())
