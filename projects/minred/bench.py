"""MinRed's eviction cost per incoming chunk against the SimSiam steps that follow it.

For each buffer size N (per process) and feature width D, times ``max_coverage_eviction`` removing
one chunk (= per-process batch) from N trained samples, and one SimSiam training step (two views,
forward + backward + SGD) of the backbone that produces D-wide features; the ratio is eviction /
(num_updates x step), the share of the time the buffer adds. Peak memory of the eviction is reported
on CUDA (the blocked search never holds the N x N similarity matrix).

    python -m projects.minred.bench [--sizes 4096,16384,65536] [--dims 512,2048] [--chunk 64] [--updates 5]
    python -m projects.minred.bench --img-size 64 --sizes 4096 --dims 512   # what a CPU can do in minutes

``--budget-s S`` (``make bench``): the seconds the whole bench may take; the repeats stop when a
measurement's share is spent, and on the CPU the sizes default to ``--dims 512 --img-size 32 --chunk 32``.
``--summary-json PATH``: the common record (shared.benchmark.summary) of the first width's SimSiam step
in chunk samples/s, fp32 against bf16 (on CUDA the bench times that step once more in fp32).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from shared.benchmark import (Timing, count_flops, peak_memory_gb, peak_tflops, reset_peak_memory, summary,
                              time_fn, add_output_args, parse_bench_args, write_outputs)
from projects.minred.buffer import max_coverage_eviction
from projects.minred.model import SimSiam, build_optimizer, simsiam_loss

ARCH_OF_DIM = {512: "resnet18", 2048: "resnet50"}


def eviction_time(n: int, d: int, chunk: int, device, repeats: int, budget_s: float | None = None) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    feats = F.normalize(torch.randn(n, d, generator=g), dim=1).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t = time_fn(lambda: max_coverage_eviction(feats, chunk), device, warmup=1, repeats=repeats, budget_s=budget_s)
    out = {"eviction_s": t.median, "eviction_spread": t.spread, "eviction_repeats": len(t.seconds)}
    if device.type == "cuda":
        out["eviction_peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        out["dense_matrix_mb"] = n * n * 4 / 2**20
    return out


def step_time(arch: str, batch: int, img: int, device, repeats: int, amp: bool, budget_s: float | None = None,
              flops: bool = False) -> tuple[Timing, float | None, float | None]:
    """The SimSiam step's timing, its FLOPs (when ``flops``) and its peak CUDA memory in GiB."""
    torch.manual_seed(0)
    reset_peak_memory(device)
    model = SimSiam(arch).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, 0.05)
    x1, x2 = (torch.randn(batch, 3, img, img, device=device) for _ in range(2))

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            p1, p2, z1, z2 = model(x1, x2)
        loss = simsiam_loss(p1.float(), p2.float(), z1.float(), z2.float()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time_fn(step, device, warmup=2, repeats=repeats, budget_s=budget_s)
    return t, count_flops(step) if flops else None, peak_memory_gb(device)


def step_numbers(arch: str, chunk: int, fp32: Timing, bf16: Timing | None, flops: float, mem: float | None,
                 device) -> dict:
    """The step's numbers for the common record; TFLOP/s of the bf16 run, of the fp32 one without it."""
    run = bf16 or fp32
    return {"arch": arch, "fp32": fp32.items_per_s(chunk), "bf16": bf16 and bf16.items_per_s(chunk),
            "tflops": run.tflops(flops), "pct_bf16_peak": run.percent_of_peak(flops, peak_tflops(device)),
            "peak_mem_gb": mem}


def common_record(res: dict, step: dict, budget_s: float | None) -> dict:
    """The first width's SimSiam step in chunk samples/s (two views each); on the CPU, where the step
    runs fp32, the one fp32 run."""
    what = (f"SimSiam step ({step['arch']}, 2 views of {res['chunk']} x {res['img_size']} px) beside MinRed's "
            f"eviction (detail: its share)")
    return summary(what, "samples/s", step["fp32"], step["bf16"], step["tflops"], step["pct_bf16_peak"],
                   step["peak_mem_gb"], budget_s, res)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    p.add_argument("--sizes", default="4096,16384,65536" if cuda else "4096")
    p.add_argument("--dims", default=None, help="default 512,2048 (512 on the CPU with --budget-s)")
    p.add_argument("--chunk", type=int, default=None,
                   help="per-process batch = samples evicted per chunk (default 64; 32 on the CPU with --budget-s)")
    p.add_argument("--updates", type=int, default=5, help="SimSiam steps per chunk (Kinetics 5, Flickr 10)")
    p.add_argument("--img-size", type=int, default=None, help="default 224 on CUDA, 64 on the CPU (32 with --budget-s)")
    p.add_argument("--repeats", type=int, default=5 if cuda else 2)
    p.add_argument("--fp32", action="store_true", help="official precision for the step (default bf16 on CUDA)")
    add_output_args(p, out_default="runs/minred/bench.json")
    a, budget = parse_bench_args(p, argv)
    small = not cuda and a.budget_s is not None
    a.dims = a.dims or ("512" if small else "512,2048")
    a.chunk = a.chunk or (32 if small else 64)
    a.img_size = a.img_size or (224 if cuda else 32 if small else 64)
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    res = {"device": torch.cuda.get_device_name() if cuda else "cpu", "chunk": a.chunk, "updates": a.updates,
           "img_size": a.img_size, "rows": []}
    dims, sizes = [int(x) for x in a.dims.split(",")], [int(x) for x in a.sizes.split(",")]
    bf16 = cuda and not a.fp32
    left = len(dims) * (1 + len(sizes)) + bf16  # timings to come; on CUDA the first step once more in fp32
    step = None
    for d in dims:
        arch = ARCH_OF_DIM.get(d, "resnet50")
        t, flops, mem = step_time(arch, a.chunk, a.img_size, device, a.repeats, not a.fp32, budget.share(left),
                                  flops=step is None)
        left -= 1
        st = t.median
        if step is None:  # the common record: the first width's step
            t32 = step_time(arch, a.chunk, a.img_size, device, a.repeats, False, budget.share(left))[0] if bf16 else t
            left -= bf16
            step = res["step"] = step_numbers(arch, a.chunk, t32, t if bf16 else None, flops, mem, device)
        for n in sizes:
            ev = eviction_time(n, d, a.chunk, device, a.repeats, budget.share(left))
            left -= 1
            row = {"buffer": n, "dim": d, "arch": arch, "step_s": st, **ev,
                   "eviction_share": ev["eviction_s"] / (ev["eviction_s"] + a.updates * st)}
            res["rows"].append(row)
            print(f"[{res['device']}] buffer {n:6d} x {d:4d}: eviction {1e3 * ev['eviction_s']:9.1f} ms"
                  + (f" (peak {ev['eviction_peak_mb']:.0f} MB; dense matrix {ev['dense_matrix_mb']:.0f} MB)" if cuda else "")
                  + f" | {arch} step at {a.img_size}px x {a.chunk}: {1e3 * st:8.1f} ms | eviction share of a chunk "
                  f"with {a.updates} steps: {100 * row['eviction_share']:.1f} %", flush=True)
    return write_outputs(a, res, lambda: common_record(res, step, a.budget_s))


if __name__ == "__main__":
    main()
