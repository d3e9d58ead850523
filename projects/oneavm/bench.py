"""OneAVM speed, measured in one run on the device present (shared/benchmark.py timing):

- the full joint training step (three objectives, backward, Adam) in fp32 and in bf16 autocast +
  channels_last: clips/s and their ratio (the goal on a GPU: bf16 at least 2x fp32);
- the data loader from the on-disk format (jpg decode + crop, wav decode + resample + crop) with 0
  and ``--workers`` workers, against the step's clips/s: does it keep up? (The STFT, mixing and
  masks run on the training device inside the step, so they are part of the step time.)

    python -m projects.oneavm.bench [--config projects/oneavm/configs/demo.yaml] [--batch 32] [--workers 8]
        [--budget-s S] [--summary-json PATH] [key=value ...]

Random weights (``model.image_weights=null`` before the overrides: speed does not depend on them).
``--budget-s`` (``make bench``): the seconds the whole bench may take; the repeats stop when a
measurement's share is spent, and on the CPU the batch defaults to 4. ``--summary-json``: the common
record (shared.benchmark.summary) of the training step, fp32 against bf16 + channels_last (on the CPU,
where shared.amp runs fp32, the fp32 step alone).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from shared.benchmark import (count_flops, peak_memory_gb, peak_tflops, reset_peak_memory, summary, time_fn,
                              add_output_args, parse_bench_args, write_outputs)
from shared.config import load_config
from shared.data.robust import collate_skipping_bad


def step_timing(cfg, device, batch: int, amp: str, channels_last: bool, warmup: int, repeats: int,
                budget_s: float | None = None) -> dict:
    from projects.oneavm.model import build_model
    from projects.oneavm.objective import JointObjective, make_optimizer, train_step

    cfg.train.amp, cfg.train.channels_last = amp, channels_last
    torch.manual_seed(0)
    reset_peak_memory(device)
    model = build_model(cfg, device)
    opt = make_optimizer(model, cfg)
    obj = JointObjective(model, cfg).train()
    s, n = cfg.data.image_size, cfg.data.audio.n_samples
    fake = {"image": torch.randn(batch, 3, s, s), "wave": 0.3 * torch.randn(batch, n),
            "audio_key": [str(i) for i in range(batch)]}
    t = time_fn(lambda: train_step(obj, fake, opt, cfg, device, 0), device, warmup=warmup, repeats=repeats,
                budget_s=budget_s)
    mem = peak_memory_gb(device)
    flops = count_flops(lambda: train_step(obj, fake, opt, cfg, device, 0))
    out = {"clips_per_s": t.items_per_s(batch), "median_s": t.median, "spread": t.spread, "repeats": len(t.seconds),
           "tflops": t.tflops(flops), "percent_of_peak": t.percent_of_peak(flops, peak_tflops(device))}
    if mem is not None:
        out["peak_mem_gb"] = mem
    return out


def loader_rate(cfg, workers: int, batches: int, batch: int) -> float:
    import time

    from projects.oneavm.data import train_set

    ds = train_set(cfg)
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                    collate_fn=collate_skipping_bad, drop_last=True)
    it = iter(dl)
    next(it)  # the first batch pays the worker start-up
    n, t0 = 0, time.perf_counter()
    for i, b in enumerate(it):
        n += len(b.get("index", []))
        if i + 1 >= batches:
            break
    return n / max(time.perf_counter() - t0, 1e-9)


def common_record(res: dict, budget_s: float | None) -> dict:
    """The joint training step in clips/s: fp32 against bf16 + channels_last on CUDA; on the CPU the fp32
    step (the other run is fp32 there: in the detail, not a bf16 number)."""
    cuda = res["device"] != "cpu"
    run = res["bf16_channels_last"] if cuda else res["fp32"]
    what = (f"OneAVM joint training step (3 objectives, Adam), {res['image_size']} px, {res['n_samples']} audio "
            f"samples, batch {res['batch']}")
    return summary(what, "clips/s", res["fp32"]["clips_per_s"], run["clips_per_s"] if cuda else None, run["tflops"],
                   run["percent_of_peak"], run.get("peak_mem_gb"), budget_s, res)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="projects/oneavm/configs/demo.yaml")
    p.add_argument("--batch", type=int, default=None,
                   help="clips per step (default: the config's batch; 4 on the CPU with --budget-s)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--data-root", default=None, help="clips for the loader test (default: a generated tuxpaint set)")
    add_output_args(p)
    p.add_argument("overrides", nargs="*")
    a, budget = parse_bench_args(p, argv)
    cfg = load_config(a.config, ["model.image_weights=null", *a.overrides])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = a.batch or (4 if device.type == "cpu" and a.budget_s is not None else cfg.optim.batch_size)
    workers = a.workers if a.workers is not None else cfg.data.num_workers
    res = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "batch": batch,
           "image_size": cfg.data.image_size, "n_samples": cfg.data.audio.n_samples}
    # three shares: the two steps, then the loader set's generation and its runs
    res["fp32"] = step_timing(cfg, device, batch, "none", False, 2, a.repeats, budget.share(3))
    res["bf16_channels_last"] = step_timing(cfg, device, batch, "bf16", True, 2, a.repeats, budget.share(2))
    res["bf16_speedup"] = res["bf16_channels_last"]["clips_per_s"] / res["fp32"]["clips_per_s"]
    with tempfile.TemporaryDirectory() as tmp:
        root = a.data_root
        if root is None:
            from shared.data.tuxpaint import make_tuxpaint_av

            root = make_tuxpaint_av(Path(tmp) / "tux", n_train=4 * batch, n_test=4, n_duet=2, n_pairs=2,
                                    size=cfg.data.image_size * 2,
                                    duration=cfg.data.audio.n_samples / cfg.data.audio.sample_rate + 0.05)
            cfg.data.train.dir, cfg.data.train.list = "train", "demo_train.txt"
        cfg.data.root = str(root)
        res["loader_clips_per_s"] = {f"{w}_workers": loader_rate(cfg, w, 3, batch) for w in sorted({0, workers})}
    best = max(res["loader_clips_per_s"].values())
    res["loader_keeps_up_with_bf16_step"] = bool(best >= res["bf16_channels_last"]["clips_per_s"])
    print(json.dumps(res, indent=2))
    return write_outputs(a, res, lambda: common_record(res, a.budget_s))


if __name__ == "__main__":
    main()
