"""Training-step speed of Latent MIM vs the pixel-MAE baseline on the same ViT encoder, on the device
present (shared/benchmark.py: warm-up, CUDA synchronisation, median of repeats): images/s, FLOPs per
image (torch's FlopCounterMode: forward + backward of the step, target encoder forward included),
achieved TFLOP/s and % of the bf16 peak.

    python -m projects.latent_mim.bench [--batch 128] [--arch vit_base] [--compile] [--out bench.json] [key=value ...]

A step is what train.py does for one micro-batch: EMA update, patchify (280-px crops with gaps; MAE
224 px), target encoder on the 176 masked patches, online encoder on the 20 visible ones, decoder,
loss, backward, AdamW step; bf16 autocast on CUDA (fp32 on the CPU).

``--budget-s S`` (``make bench``): the seconds the whole bench may take; the repeats stop when a
measurement's share is spent, and on the CPU the encoder defaults to vit_small. ``--summary-json
PATH``: the common record (shared.benchmark.summary) of the first method's step, fp32 against bf16
(on CUDA the bench times that method once more without autocast).
"""
from __future__ import annotations

import argparse

import torch

from shared.amp import autocast
from shared.benchmark import (count_flops, peak_memory_gb, peak_tflops, reset_peak_memory, summary, time_fn,
                              add_output_args, parse_bench_args, write_outputs)
from shared.config import load_config
from projects.latent_mim.optim import build_optimizer
from projects.latent_mim.model import build_model

CONFIGS = {"latent_mim": "projects/latent_mim/configs/in1k_vitb16_800ep.yaml",
           "mae": "projects/latent_mim/configs/mae_vitb16_in100.yaml"}


def bench_one(cfg, batch: int, device: torch.device, compile_: bool, repeats: int,
              budget_s: float | None = None) -> dict:
    torch.manual_seed(0)
    reset_peak_memory(device)
    model = build_model(cfg).to(device)
    opt = build_optimizer(model, cfg.optim)
    fwd = torch.compile(model) if compile_ else model
    s = model.train_crop
    x = torch.randn(batch, model.encoder.in_chans, s, s, device=device)
    gen = torch.Generator().manual_seed(0)

    def step():
        model.update_target(0.996)
        with autocast(device, cfg.train.amp):
            loss, _ = fwd(x, gen, 0.5)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t = time_fn(step, device, warmup=3, repeats=repeats, budget_s=budget_s)
    flops = count_flops(step)
    peak = peak_tflops(device)
    out = {"batch": batch, "crop_px": s, "seconds_per_step": t.median, "spread": t.spread, "repeats": len(t.seconds),
           "images_per_s": t.items_per_s(batch), "gflops_per_image": flops / batch / 1e9, "tflops": t.tflops(flops),
           "percent_of_bf16_peak": t.percent_of_peak(flops, peak),
           "params_trained_M": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6}
    mem = peak_memory_gb(device)
    if mem is not None:
        out["max_memory_gb"] = mem
    return out


def common_record(result: dict, budget_s: float | None) -> dict:
    """The first method's step in images/s: fp32 and bf16 on CUDA; on the CPU, where shared.amp runs
    fp32, the one fp32 run."""
    m, r = next(iter(result["rows"].items()))
    r32 = result.get("fp32_rows", {}).get(m)
    fp32, bf16 = (r32["images_per_s"], r["images_per_s"]) if r32 else (r["images_per_s"], None)
    what = f"{m} training step, {result['arch']}, {r['crop_px']}-px crops, batch {r['batch']}"
    return summary(what, "images/s", fp32, bf16, r["tflops"], r["percent_of_bf16_peak"], r.get("max_memory_gb"),
                   budget_s, result)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=None, help="per step (default: 128 on CUDA, 2 on the CPU)")
    p.add_argument("--arch", default=None, help="default vit_base (vit_small on the CPU with --budget-s)")
    p.add_argument("--methods", default="latent_mim,mae")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    add_output_args(p)
    p.add_argument("overrides", nargs="*")
    a, budget = parse_bench_args(p, argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    a.arch = a.arch or ("vit_small" if device.type == "cpu" and a.budget_s is not None else "vit_base")
    batch = a.batch or (128 if device.type == "cuda" else 2)
    repeats = a.repeats or (10 if device.type == "cuda" else 2)
    methods = a.methods.split(",")
    for m in methods:
        if m not in CONFIGS:
            raise ValueError(f"--methods: unknown {m!r} (choose from {list(CONFIGS)})")
    rows, fp32_rows = {}, {}
    left = len(methods) + (device.type == "cuda")  # on CUDA the first method also runs without autocast
    for m in methods:
        cfg = load_config(CONFIGS[m], [f"model.arch={a.arch}", *a.overrides])
        rows[m] = bench_one(cfg, batch, device, a.compile, repeats, budget.share(left))
        left -= 1
        if device.type == "cuda" and not fp32_rows:
            cfg.train.amp = "none"
            fp32_rows[m] = bench_one(cfg, batch, device, a.compile, repeats, budget.share(left))
            left -= 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, {a.arch}, batch {batch}, compile {a.compile}")
    print("| method | crop | images/s | GFLOPs/img | TFLOP/s | % bf16 peak |\n|---|---|---|---|---|---|")
    for m, r in rows.items():
        pk = "-" if r["percent_of_bf16_peak"] is None else f"{r['percent_of_bf16_peak']:.1f}"
        print(f"| {m} | {r['crop_px']} | {r['images_per_s']:.1f} | {r['gflops_per_image']:.1f} | {r['tflops']:.3f} | {pk} |")
    for m, r in fp32_rows.items():
        print(f"{m} without autocast (fp32): {r['images_per_s']:.1f} images/s; bf16 autocast is "
              f"{rows[m]['images_per_s'] / r['images_per_s']:.2f}x that")
    result = {"device": name, "arch": a.arch, "compile": a.compile, "rows": rows}
    if fp32_rows:
        result["fp32_rows"] = fp32_rows
    return write_outputs(a, result, lambda: common_record(result, a.budget_s))


if __name__ == "__main__":
    main()
