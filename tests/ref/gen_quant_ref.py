#!/usr/bin/python3
"""gen_quant_ref.py: PyTorch reference fixture for gplq's quantizers (gplq/quant.h).

Writes tests/fixtures/quant_ref.safetensors with:
  * LSQ fake quantization (Esser et al. 2020) exactly as the paper's reference code writes it,
    out = round_pass(clamp(x / s', Qn, Qp)) * s' with s' = grad_scale(s, g), g = 1/sqrt(n Qp),
    and autograd's d/dx and d/ds, for signed and unsigned, bits 2, 4 and 8, one step per tensor,
    per column (channel) and per group of columns (3 groups, the q|k|v layout), on (37, 24)
    inputs that include exact rounding ties, values exactly on the clamp bounds, zeros and
    values far outside the range;
  * torch.quantile (linear interpolation) on a flat vector at several q;
  * step initialization from calibration batches: per-channel max|x| / Qp, and per tensor or
    per group from the 1st/99th percentiles (signed: max(|p1|, |p99|) / Qp; unsigned: p99 / Qp);
  * the stage-2 weight quantizer (RepQ-ViT's, symmetric): per output channel, the clip among
    the |w| percentiles {0.999, 0.9999, 0.99999, 1.0} with the lowest reconstruction MSE,
    s = clip / Qp, on heavy-tailed random weights (and one all-zero row).

Checks before writing: the float32 quantile formula that gplq implements (rank = q * (n - 1)
in float32, torch's lerp with one rounding) reproduces torch.quantile bit for bit; LSQ's forward equals the
plain clamp/round/multiply; its gradients equal the LSQ formulas computed directly; every step is chosen so that grad_scale's forward is exactly s
(else the fixture's forward would use a step one ulp off the one it records); every intended
rounding tie is an exact tie in float32; rows of the weight quantizer do not choose by an MSE
margin small enough for summation order to matter; and the written file re-reads equal.

Usage: nice -n 19 /usr/bin/python3 tests/ref/gen_quant_ref.py [--out tests/fixtures]
Deterministic (fixed seeds, one thread): the same torch build writes the same bytes.
"""

import argparse
import math
import os
import sys
from fractions import Fraction

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_vit_ref import read_safetensors, write_safetensors  # noqa: E402

GENERATOR = "tests/ref/gen_quant_ref.py"
FORMAT = "gplq-quant-ref-1"
ROWS, COLS, GROUPS = 37, 24, 3
STEP_MIN = 1e-8  # gplq's floor on steps (QUANT_STEP_MIN)
WEIGHT_PCTS = (0.999, 0.9999, 0.99999, 1.0)
QUANTILE_QS = (0.0, 0.01, 0.25, 0.5, 0.99, 0.999, 0.9999, 0.99999, 1.0)


def qrange(bits, signed):
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


# ----------------------------------------------------------------------------------------------
# LSQ, as the paper's reference code.
# ----------------------------------------------------------------------------------------------

def grad_scale(x, scale):
    y_grad = x * scale
    return (x - y_grad).detach() + y_grad


def round_pass(x):
    return (x.round() - x).detach() + x


def lsq_torch(x, s, bits, signed, g):
    """x (rows, cols); s (steps,), each step covering cols/steps consecutive columns."""
    qn, qp = qrange(bits, signed)
    width = x.shape[1] // s.numel()
    ss = grad_scale(s, g).repeat_interleave(width)
    return round_pass(torch.clamp(x / ss, qn, qp)) * ss


def exact_grad_scale_steps(s, g):
    """Nudges each step up by ulps until (s - s*g) + s*g == s in float32 torch arithmetic,
    so that the forward pass of grad_scale returns the step the fixture records."""
    s = s.clone()
    for _ in range(64):
        sg = s * g
        bad = ((s - sg) + sg) != s
        if not bad.any():
            return s
        s[bad] = torch.from_numpy(np.nextafter(s[bad].numpy(), np.float32(np.inf)))
    sys.exit("CHECK FAILED: could not make grad_scale exact")


def lsq_case(gen, bits, signed, kind):
    qn, qp = qrange(bits, signed)
    nsteps = {"tensor": 1, "channel": COLS, "group": GROUPS}[kind]
    width = COLS // nsteps
    numel_per_step = ROWS * width
    g = 1.0 / math.sqrt(numel_per_step * qp)
    s = (0.05 + 0.5 * torch.rand(nsteps, generator=gen)).float()
    s = exact_grad_scale_steps(s, g)
    scol = s.repeat_interleave(width)  # (COLS,)

    # Codes spread over the range with a std of a quarter range: a few percent fall outside.
    v = torch.randn(ROWS, COLS, generator=gen) * ((qp - qn) / 4.0) + (qp + qn) / 2.0
    x = (v * scol).float()
    xn, sn = x.numpy(), scol.numpy()  # views: edits below go into x
    flat = torch.randperm(ROWS * COLS, generator=gen).tolist()
    pos = iter(flat)
    # exact ties k + 1/2 inside the range
    ties = 0
    for _ in range(12):
        i = next(pos)
        r, c = divmod(i, COLS)
        k = qn + int(torch.randint(0, qp - qn, (1,), generator=gen))
        cand = np.float32((k + 0.5) * float(sn[c]))
        if np.float32(cand / sn[c]) == np.float32(k + 0.5):
            xn[r, c] = cand
            ties += 1
    # exactly on the bounds (inside: STE passes, step term is 0), a tie just past Qp, zero
    for val in (qp, qn, qp + 0.5, 0.0):
        r, c = divmod(next(pos), COLS)
        xn[r, c] = np.float32(val * float(sn[c]))
    # far outside on both sides
    for sign in (1, 1, -1, -1):
        r, c = divmod(next(pos), COLS)
        xn[r, c] = np.float32((qp + 3 + 10 * float(torch.rand(1, generator=gen))) * float(sn[c])
                              if sign > 0 else
                              (qn - 3 - 10 * float(torch.rand(1, generator=gen))) * float(sn[c]))
    if ties < 6:
        sys.exit("CHECK FAILED: only %d exact ties for %s b%d" % (ties, kind, bits))

    dout = torch.randn(ROWS, COLS, generator=gen).float()
    xr = x.clone().requires_grad_(True)
    sr = s.clone().requires_grad_(True)
    out = lsq_torch(xr, sr, bits, signed, g)
    out.backward(dout)

    # the forward must be the plain definition (torch.equal: up to the sign of zero, which
    # round_pass's (round(v) - v) + v turns from -0 to +0)
    plain = torch.clamp(torch.round(x / scol), qn, qp) * scol
    if not torch.equal(out.detach(), plain):
        sys.exit("CHECK FAILED: LSQ forward != clamp(round(x/s))*s for %s b%d" % (kind, bits))
    # the gradients must be the formulas, up to float rounding
    vq = (x / scol).double()  # the float32 quotient decides, as in the forward
    inside = (vq >= qn) & (vq <= qp)
    dx_f = torch.where(inside, dout.double(), torch.zeros((), dtype=torch.float64))
    term = torch.where(inside, torch.round(vq) - vq,
                       torch.where(vq < qn, torch.full_like(vq, qn), torch.full_like(vq, qp)))
    ds_f = (dout.double() * term).sum(0).reshape(nsteps, width).sum(1) * g
    e1 = (xr.grad.double() - dx_f).abs().max().item()
    e2 = ((sr.grad.double() - ds_f).abs().max() / ds_f.abs().max()).item()
    if e1 > 1e-6 or e2 > 1e-5:
        sys.exit("CHECK FAILED: LSQ gradients vs formulas %.3g %.3g" % (e1, e2))
    return dict(x=x, dout=dout, step=s, out=out.detach(), dx=xr.grad, dstep=sr.grad), ties


# ----------------------------------------------------------------------------------------------
# Quantile: what gplq implements, checked against torch.quantile.
# ----------------------------------------------------------------------------------------------

def f32_round(fr):
    """The float32 nearest to the exact rational fr, ties to even."""
    c = np.float32(float(fr))
    best = None
    for cand in (np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))):
        err = abs(Fraction(float(cand)) - fr)
        if (best is None or err < best[0]
                or (err == best[0] and int(cand.view(np.int32)) % 2 == 0)):
            best = (err, cand)
    return best[1]


def fma_f32(a, b, c):
    """a * b + c with one rounding, as fmaf."""
    return f32_round(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def quantile_f32(sorted_vals, q):
    """torch.quantile's linear mode as gplq computes it: rank = q * (n - 1) in float32, then
    torch's lerp, which this torch build's CPU kernel evaluates with a fused multiply-add:
    w < 0.5 ? fma(w, e - b, b) : fma(-(e - b), 1 - w, e)."""
    a = np.asarray(sorted_vals, dtype=np.float32)
    rank = np.float32(q) * np.float32(len(a) - 1)
    lo = int(rank)
    hi = int(np.ceil(rank))
    w = np.float32(rank - np.float32(lo))
    b, e = a[lo], a[hi]
    d = np.float32(e - b)
    if abs(w) < 0.5:
        return fma_f32(w, d, b)
    return fma_f32(-d, np.float32(1) - w, e)


def check_quantile_formula(gen):
    for n in (1, 2, 3, 7, 100, 1000, 1237, 4099):
        x = torch.randn(n, generator=gen) * torch.exp(torch.randn(n, generator=gen))
        xs = np.sort(x.numpy())
        for q in QUANTILE_QS + (0.3, 0.7, 0.123456):
            t = torch.quantile(x, q).numpy()
            m = quantile_f32(xs, q)
            if t.tobytes() != m.tobytes():
                sys.exit("CHECK FAILED: quantile formula n=%d q=%g: %r vs torch %r" % (n, q, m, t))


# ----------------------------------------------------------------------------------------------
# Step initialization and the weight quantizer.
# ----------------------------------------------------------------------------------------------

def floor_step(s):
    return torch.clamp_min(s, STEP_MIN)


def init_steps(batches, bits, signed, nsteps, how):
    """how: 'absmax' (per channel: max|x| / Qp) or 'pct' (per step: 1st/99th percentiles)."""
    qn, qp = qrange(bits, signed)
    x = torch.cat(batches, 0)
    width = x.shape[1] // nsteps
    if how == "absmax":
        assert width == 1
        return floor_step(x.abs().amax(0) / qp), None, None
    p1, p99 = [], []
    for i in range(nsteps):
        vals = x[:, i * width:(i + 1) * width].reshape(-1)
        p1.append(torch.quantile(vals, 0.01))
        p99.append(torch.quantile(vals, 0.99))
    p1, p99 = torch.stack(p1), torch.stack(p99)
    s = torch.maximum(p1.abs(), p99.abs()) / qp if signed else p99 / qp
    return floor_step(s), p1, p99


def weight_quant(w, bits, pcts=WEIGHT_PCTS):
    """RepQ-ViT's weight quantizer, symmetric: per row, the clip among the |w| percentiles with
    the lowest sum of squared errors (strictly lower wins, so ties go to the first)."""
    qn, qp = qrange(bits, True)
    rows = w.shape[0]
    clips = torch.stack([torch.quantile(w.abs(), p, dim=1) for p in pcts], 1)  # (rows, npct)
    steps = floor_step(clips / qp)
    mse = torch.zeros(rows, len(pcts), dtype=torch.float64)
    for j in range(len(pcts)):
        sj = steps[:, j:j + 1]
        deq = torch.clamp(torch.round(w / sj), qn, qp) * sj
        mse[:, j] = ((w.double() - deq.double()) ** 2).sum(1)
    choice = torch.zeros(rows, dtype=torch.int64)
    for r in range(rows):
        best = 0
        for j in range(1, len(pcts)):
            if mse[r, j] < mse[r, best]:
                best = j
        choice[r] = best
        # a choice decided by a hair would depend on the order of the sum: refuse
        others = [mse[r, j].item() for j in range(len(pcts))
                  if j != best and mse[r, j].item() != mse[r, best].item()]
        if others and min(others) - mse[r, best].item() <= 1e-7 * max(mse[r, best].item(), 1e-30):
            sys.exit("CHECK FAILED: weight row %d chooses by a margin too small" % r)
    s = steps.gather(1, choice[:, None])  # (rows, 1)
    codes = torch.clamp(torch.round(w / s), qn, qp)
    return dict(clip=clips, step=s[:, 0].contiguous(), codes=codes.to(torch.int64),
                deq=codes * s, choice=choice)


def heavy_tailed(gen, rows, cols, scale):
    """Student-t with 2 degrees of freedom (z / sqrt(chi2_2 / 2)), per-row scales: rows differ
    in how far their outliers stick out, so they choose different clips."""
    z = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    u = torch.rand(rows, cols, generator=gen, dtype=torch.float64).clamp_min(1e-12)
    chi2 = -2.0 * torch.log(u)  # chi-square with 2 dof
    t = z / torch.sqrt(chi2 / 2.0)
    rs = torch.exp(0.5 * torch.randn(rows, 1, generator=gen, dtype=torch.float64))
    return (t * rs * scale).float()


# ----------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    gen = torch.Generator().manual_seed(20250611)

    tensors, meta = [], {"format": FORMAT, "generator": GENERATOR, "torch": torch.__version__,
                         "rows": str(ROWS), "cols": str(COLS), "groups": str(GROUPS)}

    check_quantile_formula(gen)

    # 1. LSQ
    nties = 0
    for signed in (True, False):
        for kind in ("tensor", "channel", "group"):
            for bits in (2, 4, 8):
                case, ties = lsq_case(gen, bits, signed, kind)
                nties += ties
                name = "lsq.%s.%s.b%d" % ("signed" if signed else "unsigned", kind, bits)
                for k in ("x", "dout", "step", "out", "dx", "dstep"):
                    tensors.append(("%s.%s" % (name, k), case[k].detach().float().contiguous()))

    # 2. quantile
    qx = torch.randn(1237, generator=gen) * torch.exp(torch.randn(1237, generator=gen))
    qs = torch.tensor(QUANTILE_QS, dtype=torch.float32)
    qo = torch.stack([torch.quantile(qx, float(q)) for q in QUANTILE_QS])
    tensors += [("quantile.x", qx), ("quantile.q", qs), ("quantile.out", qo)]

    # 3. step initialization from three calibration batches
    sizes = (50, 31, 64)
    colscale = torch.exp(torch.randn(COLS, generator=gen))
    xs = [heavy_tailed(gen, n, COLS, 1.0) * colscale for n in sizes]
    us = [torch.softmax(torch.randn(n, COLS, generator=gen) * 3.0, dim=1) for n in sizes]
    for u in us:
        u[:, 5] = 0.0  # a column that never fires: its per-channel step hits the floor
    for i in range(3):
        tensors += [("calib.x.%d" % i, xs[i]), ("calib.u.%d" % i, us[i])]
    inits = [("channel.signed.b4", xs, 4, True, COLS, "absmax"),
             ("channel.signed.b8", xs, 8, True, COLS, "absmax"),
             ("channel.unsigned.b4", us, 4, False, COLS, "absmax"),
             ("tensor.signed.b4", xs, 4, True, 1, "pct"),
             ("tensor.signed.b8", xs, 8, True, 1, "pct"),
             ("group.signed.b4", xs, 4, True, GROUPS, "pct"),
             ("tensor.unsigned.b4", us, 4, False, 1, "pct"),
             ("tensor.unsigned.b8", us, 8, False, 1, "pct")]
    for name, data, bits, signed, nsteps, how in inits:
        s, p1, p99 = init_steps(data, bits, signed, nsteps, how)
        tensors.append(("init.%s.step" % name, s.float()))
        if p1 is not None:
            tensors += [("init.%s.p1" % name, p1), ("init.%s.p99" % name, p99)]

    # 4. the weight quantizer
    wcfg = [(16, 96, 4, 0.02), (24, 200, 4, 0.05), (12, 1000, 3, 0.01), (9, 77, 8, 0.1)]
    choices = torch.zeros(len(WEIGHT_PCTS), dtype=torch.int64)
    for i, (r, c, bits, scale) in enumerate(wcfg):
        w = heavy_tailed(gen, r, c, scale)
        if i == 0:
            w[3] = 0.0  # all-zero row: every clip is 0, the step must be floored, not 0
        res = weight_quant(w, bits)
        choices += torch.bincount(res["choice"], minlength=len(WEIGHT_PCTS))
        meta["wq.%d.bits" % i] = str(bits)
        tensors.append(("wq.%d.w" % i, w))
        for k in ("clip", "step", "codes", "deq", "choice"):
            tensors.append(("wq.%d.%s" % (i, k), res[k].contiguous()))
    meta["wq.count"] = str(len(wcfg))
    meta["wq.pcts"] = ",".join(repr(p) for p in WEIGHT_PCTS)
    if (choices > 0).sum() < 3:
        sys.exit("CHECK FAILED: weight rows choose fewer than 3 distinct percentiles: %s" % choices)

    path = os.path.join(args.out, "quant_ref.safetensors")
    write_safetensors(path, tensors, meta)
    rmeta, rt = read_safetensors(path)
    assert rmeta == meta, path
    for n, t in tensors:
        assert torch.equal(rt[n], t.detach()), n
    size = os.path.getsize(path)
    assert size < 2 * 1000 * 1000, size
    print("%s: %d tensors, %d bytes; %d exact ties in LSQ inputs; weight rows per percentile %s"
          % (path, len(tensors), size, nties, choices.tolist()))


if __name__ == "__main__":
    main()
