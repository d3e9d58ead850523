"""EZ-VSL speed, measured in one run on the device present:

- training-step clips/s in fp32 and in bf16 autocast + channels_last (full EZ-VSL step: both
  ResNet-18s, the MIL loss, backward, Adam), and their ratio;
- data-loader clips/s from the on-disk format (jpg + wav) per worker, decoding and with the
  .npy cache, and with several workers.

    python -m projects.ezvsl.bench [--batch 128] [--workers 8] [--out bench.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from shared.amp import autocast
from shared.benchmark import Timing, count_flops, peak_tflops, time_fn
from shared.config import load_config
from shared.data.robust import collate_skipping_bad
from projects.ezvsl.losses import mil_contrastive_loss
from projects.ezvsl.model import EZVSL


def time_steps(device, batch: int, bf16: bool, channels_last: bool, steps: int, warmup: int,
               spec_frames: int) -> tuple[Timing, float]:
    """The step's timing (median of ``steps`` repeats) and its FLOPs (FlopCounterMode)."""
    torch.manual_seed(0)
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

    timing = time_fn(step, device, warmup=warmup, repeats=steps)
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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=None, help="default: 128 on CUDA, 8 on CPU")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--data-root", default=None, help="an EZ-VSL-layout folder; default: a generated demo set")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    batch = a.batch or (128 if cuda else 8)
    steps = a.steps or (30 if cuda else 3)
    res = {"device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
           "batch": batch, "torch": torch.__version__}
    spec_frames = 200  # 3 s at 16 kHz
    fp32, flops = time_steps(device, batch, False, False, steps, 2, spec_frames)
    bf16, _ = time_steps(device, batch, True, True, steps, 2, spec_frames)
    peak = peak_tflops(device)
    res["step_fp32_clips_s"], res["step_bf16_cl_clips_s"] = fp32.items_per_s(batch), bf16.items_per_s(batch)
    res["step_speedup_bf16_cl"] = fp32.median / bf16.median
    res["step_tflop"] = flops / 1e12
    res["step_bf16_tflops_s"], res["step_bf16_pct_of_peak"] = bf16.tflops(flops), bf16.percent_of_peak(flops, peak)
    res["noise_spread"] = {"fp32": fp32.spread, "bf16": bf16.spread}
    pct = f", {res['step_bf16_pct_of_peak']:.0f} % of bf16 peak" if peak else ""
    print(f"[{res['device']}] train step, batch {batch} (median of {steps}; spread fp32 {fp32.spread:.0%}, "
          f"bf16 {bf16.spread:.0%}): fp32 {res['step_fp32_clips_s']:.1f} clips/s, bf16+channels_last "
          f"{res['step_bf16_cl_clips_s']:.1f} clips/s -> {res['step_speedup_bf16_cl']:.2f}x; "
          f"{bf16.tflops(flops):.2f} TFLOP/s{pct}")

    with tempfile.TemporaryDirectory() as tmp:
        root = a.data_root
        if root is None:
            from shared.data.demo_av import generate

            root = generate(Path(tmp) / "demo", n_train=256, n_val=1, n_test=1, n_objects=6)
        over = [f"data.root={root}", "data.train_dir=train", "data.trainset=demo_train", "data.audio.duration=3.0"]
        cfg = load_config("projects/ezvsl/configs/demo.yaml", over + ["data.image_size=224"])
        nb = 6
        res["loader_1worker_decode_clips_s"] = loader_rate(cfg, 0, nb, 32)
        cached = load_config("projects/ezvsl/configs/demo.yaml", over + ["data.image_size=224", f"data.cache_dir={tmp}/cache"])
        loader_rate(cached, 0, 7, 32)  # one pass over all 256 pairs fills the cache
        res["loader_1worker_cached_clips_s"] = loader_rate(cached, 0, nb, 32)
        res[f"loader_{a.workers}workers_decode_clips_s"] = loader_rate(cfg, a.workers, nb, 32)
    print(f"data loader (jpg + wav -> tensors): 1 worker {res['loader_1worker_decode_clips_s']:.0f} clips/s decoding, "
          f"{res['loader_1worker_cached_clips_s']:.0f} clips/s from the .npy cache; {a.workers} workers "
          f"{res[f'loader_{a.workers}workers_decode_clips_s']:.0f} clips/s decoding")
    need = res["step_bf16_cl_clips_s"] / res["loader_1worker_decode_clips_s"]
    print(f"workers needed to feed the bf16 step while decoding: {need:.1f}; "
          f"from the cache: {res['step_bf16_cl_clips_s'] / res['loader_1worker_cached_clips_s']:.1f}")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
