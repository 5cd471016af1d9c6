#!/usr/bin/python3
"""torch_step.py: the PyTorch side of `make bench`: one training step in plain torch.

The same models, batches, step counts and step as bench/bench_train.c, so that bench/run.sh can
put the two side by side: forward, CrossEntropyLoss(label_smoothing=0.1), backward,
clip_grad_norm_(1.0), AdamW (weight decay on matrices only), on random weights and inputs, on
a fixed number of threads. The models are the timm-equivalent VisionTransformer of
tests/ref/gen_vit_ref.py (conv patch embed, class token, position embedding, pre-norm blocks
with fused qkv, exact GELU, final norm, head) and the timm >= 0.9 equivalent SwinTransformer of
tests/ref/gen_swin_ref.py (window attention with relative position bias and shifted windows,
PatchMerging, pooled final norm, head): the very classes whose outputs and gradients the
engine's reference tests are checked against, so both sides compute the same thing.

Each model runs in its own process (this script re-invoked with --child) so that its peak RSS
is its own. Prints one JSON object per model on stdout, one a line; a human summary on stderr.
The JSON also says which BLAS torch runs: torch.__config__.show()'s BLAS_INFO, the BLAS
libraries actually mapped into the process, and, when one of them is OpenBLAS, the kernel it
chose (openblas_get_corename), which must match the C side's for the comparison to be fair.

Usage: /usr/bin/python3 bench/torch_step.py [--models demo,deit-s,swin-t] [--batch N]
                                            [--warmup N] [--steps N] [--threads N]
Exit status: 0, or 1 if a model's run failed.
"""

import argparse
import ctypes
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
from gen_vit_ref import VisionTransformer  # noqa: E402  (needs the path above)
from gen_swin_ref import SwinTransformer, init_params_timm  # noqa: E402

# The models of the benchmark, as in bench_train.c's table (run.sh joins on the name). arch
# "vit": a gen_vit_ref config; "swin": a gen_swin_ref one.
MODELS = {
    "demo": dict(arch="vit",
                 cfg=dict(img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=6,
                          num_heads=3, mlp_hidden=768, num_classes=10, distilled=False),
                 batch=128, warmup=3, steps=10),
    "deit-s": dict(arch="vit",
                   cfg=dict(img_size=224, patch_size=16, in_chans=3, embed_dim=384, depth=12,
                            num_heads=6, mlp_hidden=1536, num_classes=1000, distilled=False),
                   batch=16, warmup=2, steps=5),
    # timm's swin_tiny_patch4_window7_224
    "swin-t": dict(arch="swin",
                   cfg=dict(img_size=224, patch_size=4, in_chans=3, embed_dim=96,
                            depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                            mlp_ratio=4, num_classes=1000),
                   batch=16, warmup=2, steps=5),
}

# gplq train's defaults, as bench_train.c uses them.
LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.999), 1e-8, 0.05
SMOOTHING, CLIP = 0.1, 1.0


def blas_info():
    """Which BLAS this torch runs. Debian's torch is built with BLAS_INFO=generic: it calls
    whatever libblas.so.3 the alternatives system points at, so the build string alone does not
    say OpenBLAS; the libraries mapped into the process and their exported symbols do."""
    show = torch.__config__.show()
    m = re.search(r"BLAS_INFO=([^,\s]+)", show)
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if re.search(r"/lib(open)?blas[^/]*\.so", path):
                libs.add(os.path.realpath(path))
    info = {"torch_blas_info": m.group(1) if m else "unknown", "blas_libs": sorted(libs),
            "is_openblas": False, "blas_core": None, "blas_config": None, "blas_threads": None}
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)  # already loaded: this returns the same library
            corename, config = lib.openblas_get_corename, lib.openblas_get_config
        except (OSError, AttributeError):
            continue
        corename.restype = config.restype = ctypes.c_char_p
        info.update(is_openblas=True, blas_core=corename().decode(),
                    blas_config=config().decode(), blas_threads=lib.openblas_get_num_threads())
        break
    return info


def timm_init(model):
    """timm's initialization, as vit_init_weights does it: trunc_normal(.02) for Linear weights
    and the position embedding, zero biases, unit LayerNorms, 1e-6 normal for the class token,
    PyTorch's default for the patch-embedding conv. Random values at the right scale, so that
    no denormals or overflows make either side's arithmetic unusually slow."""
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            nn.init.trunc_normal_(mod.weight, std=0.02)
            nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.LayerNorm):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)
    nn.init.trunc_normal_(model.pos_embed, std=0.02)
    nn.init.normal_(model.cls_token, std=1e-6)


def make_model(spec):
    """The model of a MODELS entry with timm's initialization, as gplq's model_init_weights
    gives it: timm_init above for a ViT; for a Swin, gen_swin_ref's init_params_timm
    (trunc_normal(.02) for Linear weights and relative position bias tables, zero biases, unit
    LayerNorms, the patch conv at PyTorch's default), drawn from a generator seeded 0."""
    if spec["arch"] == "swin":
        model = SwinTransformer(spec["cfg"])
        init_params_timm(model, torch.Generator().manual_seed(0))
    else:
        model = VisionTransformer(spec["cfg"])
        timm_init(model)
    return model


def feature_dim(spec):
    """Width of the penultimate feature (the head's input)."""
    cfg = spec["cfg"]
    if spec["arch"] == "swin":
        return cfg["embed_dim"] << (len(cfg["depths"]) - 1)
    return cfg["embed_dim"]


def run_model(name, batch, warmup, steps, threads):
    """Trains `name` for warmup + steps steps, returns its result as a dict."""
    rss_base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = MODELS[name]
    cfg = spec["cfg"]
    model = make_model(spec)
    model.train()
    # weight decay on matrices only (Linear and conv weights), as gplq's decay mask (a Swin's
    # relative position bias tables are not decayed, in gplq as in timm)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n.endswith("weight")]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and n.endswith("weight"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": other, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS)
    crit = nn.CrossEntropyLoss(label_smoothing=SMOOTHING)
    x = torch.randn(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"])
    y = torch.randint(0, cfg["num_classes"], (batch,))

    times = []  # (forward, backward, optim) seconds per timed step
    loss_v = float("nan")
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        _, logits, _ = model(x)
        loss = crit(logits, y)
        t1 = time.perf_counter()
        # set_to_none: torch's fastest way to clear gradients, so the comparison does not
        # handicap it (gplq clears with a memset, which is in its timed step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        t3 = time.perf_counter()
        loss_v = loss.item()
        if i >= warmup:
            times.append((t1 - t0, t2 - t1, t3 - t2))
    if loss_v != loss_v:
        raise RuntimeError("loss is NaN: the step is broken, its time means nothing")
    step_s = statistics.median(sum(t) for t in times)
    res = {
        "model": name, "batch": batch, "threads": torch.get_num_threads(),
        "torch_version": torch.__version__, "warmup": warmup, "steps": steps,
        "step_s": step_s, "step_s_min": min(sum(t) for t in times),
        "forward_s": statistics.median(t[0] for t in times),
        "backward_s": statistics.median(t[1] for t in times),
        "optim_s": statistics.median(t[2] for t in times),
        "images_per_s": batch / step_s,
        "params": sum(p.numel() for p in model.parameters()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # the interpreter and torch's libraries alone, before the model: most of a small
        # model's peak, and none of it is the step's
        "rss_base_mb": rss_base_mb,
        "loss": loss_v,
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
        res = run_model(args.child, args.batch or spec["batch"],
                        args.warmup if args.warmup >= 0 else spec["warmup"],
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
            print("torch_step: %s: the run failed (exit %d)" % (name, p.returncode),
                  file=sys.stderr)
            failed = 1
            continue
        print(json.dumps(res), flush=True)
        print("torch %s, %s core %s, threads %s: %-6s batch %3d: step %.1f ms (fwd %.1f / "
              "bwd %.1f / optim %.1f), %.1f img/s, peak RSS %.0f MB"
              % (res["torch_version"], "OpenBLAS" if res["is_openblas"] else "BLAS (not OpenBLAS)",
                 res["blas_core"], res["threads"], name, res["batch"], 1e3 * res["step_s"],
                 1e3 * res["forward_s"], 1e3 * res["backward_s"], 1e3 * res["optim_s"],
                 res["images_per_s"], res["peak_rss_mb"]), file=sys.stderr)
    return failed


if __name__ == "__main__":
    sys.exit(main())
