"""PTNL training speed on the device present, random weights (no download):

for RN50 and ViT-B/16 at 100 classes (Caltech101-size), batch 32, one full CoOp training step
(image tower forward without grad, the 100 prompts through the text tower forward and backward,
GCE, SGD on the context vectors), in fp32 and, on CUDA, in bf16 autocast and with the official fp16
weights; steps/s, images/s, TFLOP/s (and % of bf16 peak on a known GPU), and the share of the step
spent in the text tower. Timing: shared.benchmark (warm-up, CUDA synchronisation, median of repeats).

    python -m projects.ptnl.bench [--archs RN50 ViT-B-16] [--classes 100] [--batch 32] [--steps N] [--out bench.json]
        [--budget-s S] [--summary-json PATH]

``--budget-s`` (``make bench``): the seconds the whole bench may take; the repeats stop when a
measurement's share is spent, and on the CPU the sizes default to ViT-B/16 alone, 10 classes, batch 4.
``--summary-json``: the common record (shared.benchmark.summary) of ViT-B/16's step (else the first
arch's), fp32 against bf16 autocast.
"""
from __future__ import annotations

import argparse

import torch

from shared.amp import autocast
from shared.benchmark import (Budget, count_flops, peak_memory_gb, peak_tflops, reset_peak_memory, summary, time_fn,
                              add_output_args, parse_bench_args, write_outputs)
from shared.clip.models import load_clip
from projects.ptnl.losses import gce_loss
from projects.ptnl.model import CoOpCLIP


def bench_arch(arch: str, device: torch.device, classes: int, batch: int, steps: int, warmup: int,
               variant: str, budget: Budget | None = None, measurements_left: int = 2) -> dict:
    """One (arch, precision) row; ``budget`` shares its time over the ``measurements_left`` timings
    still to come (this row's two included)."""
    budget = budget or Budget(None)
    torch.manual_seed(0)
    bundle = load_clip(arch, None, precision="fp16" if variant == "fp16_weights" else "fp32", device=device,
                       quick_gelu=True)
    names = [f"object number {i}" for i in range(classes)]
    model = CoOpCLIP(bundle.model, bundle.tokenizer, names, n_ctx=16).to(device)
    opt = torch.optim.SGD([model.prompt_learner.ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, bundle.image_size, bundle.image_size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    amp = "bf16" if variant == "bf16_autocast" else "none"

    def step():
        with autocast(device, amp):
            logits = model(x)  # fp32 logits
        loss = gce_loss(logits, y, 0.7)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def text_only():
        with autocast(device, amp):
            feats = model.text_features()
        feats.float().sum().backward()

    reset_peak_memory(device)
    t = time_fn(step, device, warmup=warmup, repeats=steps, budget_s=budget.share(measurements_left))
    mem = peak_memory_gb(device)
    text = time_fn(text_only, device, warmup=1, repeats=max(1, steps // 2), budget_s=budget.share(measurements_left - 1))
    flops = count_flops(step)
    out = {"arch": arch, "variant": variant, "steps_per_s": 1 / t.median, "images_per_s": t.items_per_s(batch),
           "step_s": t.median, "spread": t.spread, "repeats": len(t.seconds), "text_tower_share": min(1.0, text.median / t.median),
           "tflops": t.tflops(flops), "percent_of_bf16_peak": t.percent_of_peak(flops, peak_tflops(device))}
    if mem is not None:
        out["max_mem_gb"] = mem
    return out


def common_record(res: dict, budget_s: float | None) -> dict:
    """ViT-B/16's step (else the first arch's): fp32 against bf16 autocast (CUDA only: on the CPU
    shared.amp runs fp32) in images/s."""
    archs = [r["arch"] for r in res["results"]]
    arch = "ViT-B-16" if "ViT-B-16" in archs else archs[0]
    rows = {r["variant"]: r for r in res["results"] if r["arch"] == arch}
    fp32, bf16 = rows["fp32"], rows.get("bf16_autocast")
    run = bf16 or fp32
    return summary(f"CoOp training step, CLIP {arch}, {res['classes']} classes, batch {res['batch']}", "images/s",
                   fp32["images_per_s"], bf16 and bf16["images_per_s"], run["tflops"], run["percent_of_bf16_peak"],
                   run.get("max_mem_gb"), budget_s, res)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=None, help="default RN50 ViT-B-16 (CPU with --budget-s: ViT-B-16)")
    p.add_argument("--classes", type=int, default=None, help="default 100 (CPU with --budget-s: 10)")
    p.add_argument("--batch", type=int, default=None, help="default 32 (CPU with --budget-s: 4)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 1 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3 on CUDA, 1 on CPU)")
    add_output_args(p)
    a, budget = parse_bench_args(p, argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    small = not cuda and a.budget_s is not None
    a.archs = a.archs or (["ViT-B-16"] if small else ["RN50", "ViT-B-16"])
    a.classes, a.batch = a.classes or (10 if small else 100), a.batch or (4 if small else 32)
    steps = a.steps or (20 if cuda else 1)
    warmup = a.warmup if a.warmup is not None else (3 if cuda else 1)
    # shared.amp runs every setting in fp32 on the CPU, so the precision variants exist on CUDA only
    variants = ["fp32", "bf16_autocast", "fp16_weights"] if cuda else ["fp32"]
    res = {"device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
           "torch": torch.__version__, "classes": a.classes, "batch": a.batch, "steps": steps, "results": []}
    print(f"[{res['device']}] CoOp training step, {a.classes} classes, batch {a.batch}, random weights", flush=True)
    left = 2 * len(a.archs) * len(variants)
    for arch in a.archs:
        base = None
        for v in variants:
            r = bench_arch(arch, device, a.classes, a.batch, steps, warmup, v, budget, left)
            left -= 2
            base = base or r["steps_per_s"]
            r["speedup_vs_fp32"] = r["steps_per_s"] / base
            res["results"].append(r)
            peak = r["percent_of_bf16_peak"]
            print(f"  {arch:9s} {v:14s} {r['steps_per_s']:8.3f} steps/s {r['images_per_s']:9.1f} images/s  "
                  f"x{r['speedup_vs_fp32']:.2f} vs fp32  text tower {100 * r['text_tower_share']:.0f}% of the step  "
                  f"{r['tflops']:.3f} TFLOP/s" + (f" ({peak:.1f}% of bf16 peak)" if peak is not None else "")
                  + (f"  {r['max_mem_gb']:.1f} GB" if "max_mem_gb" in r else ""), flush=True)
    return write_outputs(a, res, lambda: common_record(res, a.budget_s))


if __name__ == "__main__":
    main()
