"""EZ-VSL speed, measured in one run on the device present:

- training-step clips/s in fp32 and in bf16 autocast + channels_last (full EZ-VSL step: both
  ResNet-18s, the MIL loss, backward, Adam), and their ratio;
- data-loader clips/s from the on-disk format (jpg + wav) per worker, decoding and with the
  .npy cache, and with several workers.

    python -m projects.ezvsl.bench [--batch 128] [--workers 8] [--out bench.json] [--budget-s S] [--summary-json PATH]

``--budget-s`` (``make bench``): the seconds the whole bench may take; the repeats stop when a
measurement's share is spent, and on the CPU the sizes default to batch 2, at most as many loader
workers as cores and a 64-pair loader set read in batches of 8. ``--summary-json``: the common record
(shared.benchmark.summary) of the training step, fp32 against bf16 + channels_last (on the CPU, where
shared.amp runs fp32, the fp32 step alone).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from shared.amp import autocast
from shared.benchmark import (Timing, count_flops, peak_memory_gb, peak_tflops, reset_peak_memory, summary,
                              time_fn, add_output_args, parse_bench_args, write_outputs)
from shared.config import load_config
from shared.data.robust import collate_skipping_bad
from projects.ezvsl.losses import mil_contrastive_loss
from projects.ezvsl.model import EZVSL


def time_steps(device, batch: int, bf16: bool, channels_last: bool, steps: int, warmup: int,
               spec_frames: int, budget_s: float | None = None) -> tuple[Timing, float]:
    """The step's timing (median of ``steps`` repeats, fewer when ``budget_s`` is spent) and its FLOPs
    (FlopCounterMode)."""
    torch.manual_seed(0)
    reset_peak_memory(device)
    model = EZVSL(512, None).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    image = torch.randn(batch, 3, 224, 224, device=device)
    spec = torch.randn(batch, 1, 257, spec_frames, device=device)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    amp = "bf16" if bf16 else "none"

    def step():
        with autocast(device, amp):
            img, aud = model(image, spec)
        loss, _ = mil_contrastive_loss(img, aud, 0.03)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    timing = time_fn(step, device, warmup=warmup, repeats=steps, budget_s=budget_s)
    return timing, count_flops(step)


def loader_rate(cfg, workers: int, batches: int, batch: int) -> float:
    from projects.ezvsl.data import train_set

    ds = train_set(cfg)
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate_skipping_bad,
                    drop_last=True)
    it = iter(dl)
    next(it)  # worker start-up is not throughput
    t, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it)["index"])
    return n / (time.perf_counter() - t)


def common_record(res: dict, budget_s: float | None) -> dict:
    """The training step in clips/s: fp32 against bf16 + channels_last on CUDA; on the CPU the fp32 step
    (the other run is fp32 + channels_last there: in the detail, not a bf16 number)."""
    cuda = not res["device"].startswith("cpu")
    what = f"EZ-VSL training step (two ResNet-18s, MIL loss, Adam), 224 px, 3 s audio, batch {res['batch']}"
    tflops = res["step_bf16_tflops_s"] if cuda else res["step_fp32_tflops_s"]
    return summary(what, "clips/s", res["step_fp32_clips_s"], res["step_bf16_cl_clips_s"] if cuda else None, tflops,
                   res["step_bf16_pct_of_peak"], res.get("step_bf16_peak_mem_gb"), budget_s, res)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=None, help="default: 128 on CUDA, 8 on CPU (2 with --budget-s)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--workers", type=int, default=None,
                   help="default 8 (on the CPU with --budget-s at most the number of cores)")
    p.add_argument("--data-root", default=None, help="an EZ-VSL-layout folder; default: a generated demo set")
    add_output_args(p)
    a, budget = parse_bench_args(p, argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    small = not cuda and a.budget_s is not None
    batch = a.batch or (128 if cuda else 2 if small else 8)
    steps = a.steps or (30 if cuda else 3)
    a.workers = a.workers if a.workers is not None else min(8, os.cpu_count() or 1) if small else 8
    n_pairs, loader_batch = (64, 8) if small else (256, 32)
    res = {"device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
           "batch": batch, "torch": torch.__version__}
    spec_frames = 200  # 3 s at 16 kHz
    # four shares: the two steps, the loader set's generation and the loader runs
    fp32, flops = time_steps(device, batch, False, False, steps, 2, spec_frames, budget.share(4))
    bf16, _ = time_steps(device, batch, True, True, steps, 2, spec_frames, budget.share(3))
    if cuda:
        res["step_bf16_peak_mem_gb"] = peak_memory_gb(device)
    peak = peak_tflops(device)
    res["step_fp32_clips_s"], res["step_bf16_cl_clips_s"] = fp32.items_per_s(batch), bf16.items_per_s(batch)
    res["step_speedup_bf16_cl"] = fp32.median / bf16.median
    res["step_tflop"] = flops / 1e12
    res["step_bf16_tflops_s"], res["step_bf16_pct_of_peak"] = bf16.tflops(flops), bf16.percent_of_peak(flops, peak)
    res["step_fp32_tflops_s"] = fp32.tflops(flops)
    res["noise_spread"] = {"fp32": fp32.spread, "bf16": bf16.spread}
    res["repeats"] = {"fp32": len(fp32.seconds), "bf16": len(bf16.seconds)}
    pct = f", {res['step_bf16_pct_of_peak']:.0f} % of bf16 peak" if peak else ""
    print(f"[{res['device']}] train step, batch {batch} (median of {len(fp32.seconds)}; spread fp32 {fp32.spread:.0%}, "
          f"bf16 {bf16.spread:.0%}): fp32 {res['step_fp32_clips_s']:.1f} clips/s, bf16+channels_last "
          f"{res['step_bf16_cl_clips_s']:.1f} clips/s -> {res['step_speedup_bf16_cl']:.2f}x; "
          f"{bf16.tflops(flops):.2f} TFLOP/s{pct}")

    with tempfile.TemporaryDirectory() as tmp:
        root = a.data_root
        if root is None:
            from shared.data.demo_av import generate

            root = generate(Path(tmp) / "demo", n_train=n_pairs, n_val=1, n_test=1, n_objects=6)
        over = [f"data.root={root}", "data.train_dir=train", "data.trainset=demo_train", "data.audio.duration=3.0"]
        cfg = load_config("projects/ezvsl/configs/demo.yaml", over + ["data.image_size=224"])
        nb = 6 if not small else 2
        res["loader_1worker_decode_clips_s"] = loader_rate(cfg, 0, nb, loader_batch)
        cached = load_config("projects/ezvsl/configs/demo.yaml", over + ["data.image_size=224", f"data.cache_dir={tmp}/cache"])
        loader_rate(cached, 0, n_pairs // loader_batch - 1, loader_batch)  # one pass over all pairs fills the cache
        res["loader_1worker_cached_clips_s"] = loader_rate(cached, 0, nb, loader_batch)
        res[f"loader_{a.workers}workers_decode_clips_s"] = loader_rate(cfg, a.workers, nb, loader_batch)
    print(f"data loader (jpg + wav -> tensors): 1 worker {res['loader_1worker_decode_clips_s']:.0f} clips/s decoding, "
          f"{res['loader_1worker_cached_clips_s']:.0f} clips/s from the .npy cache; {a.workers} workers "
          f"{res[f'loader_{a.workers}workers_decode_clips_s']:.0f} clips/s decoding")
    need = res["step_bf16_cl_clips_s"] / res["loader_1worker_decode_clips_s"]
    print(f"workers needed to feed the bf16 step while decoding: {need:.1f}; "
          f"from the cache: {res['step_bf16_cl_clips_s'] / res['loader_1worker_cached_clips_s']:.1f}")
    return write_outputs(a, res, lambda: common_record(res, a.budget_s))


if __name__ == "__main__":
    main()
