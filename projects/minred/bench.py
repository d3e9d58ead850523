"""MinRed's eviction cost per incoming chunk against the SimSiam steps that follow it.

For each buffer size N (per process) and feature width D, times ``max_coverage_eviction`` removing
one chunk (= per-process batch) from N trained samples, and one SimSiam training step (two views,
forward + backward + SGD) of the backbone that produces D-wide features; the ratio is eviction /
(num_updates x step), the share of the time the buffer adds. Peak memory of the eviction is reported
on CUDA (the blocked search never holds the N x N similarity matrix).

    python -m projects.minred.bench [--sizes 4096,16384,65536] [--dims 512,2048] [--chunk 64] [--updates 5]
    python -m projects.minred.bench --img-size 64 --sizes 4096 --dims 512   # what a CPU can do in minutes
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from shared.benchmark import time_fn
from projects.minred.buffer import max_coverage_eviction
from projects.minred.model import SimSiam, build_optimizer, simsiam_loss

ARCH_OF_DIM = {512: "resnet18", 2048: "resnet50"}


def eviction_time(n: int, d: int, chunk: int, device, repeats: int) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    feats = F.normalize(torch.randn(n, d, generator=g), dim=1).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t = time_fn(lambda: max_coverage_eviction(feats, chunk), device, warmup=1, repeats=repeats)
    out = {"eviction_s": t.median, "eviction_spread": t.spread}
    if device.type == "cuda":
        out["eviction_peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        out["dense_matrix_mb"] = n * n * 4 / 2**20
    return out


def step_time(arch: str, batch: int, img: int, device, repeats: int, amp: bool) -> float:
    torch.manual_seed(0)
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

    return time_fn(step, device, warmup=2, repeats=repeats).median


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    p.add_argument("--sizes", default="4096,16384,65536" if cuda else "4096")
    p.add_argument("--dims", default="512,2048")
    p.add_argument("--chunk", type=int, default=64, help="per-process batch = samples evicted per chunk")
    p.add_argument("--updates", type=int, default=5, help="SimSiam steps per chunk (Kinetics 5, Flickr 10)")
    p.add_argument("--img-size", type=int, default=224 if cuda else 64)
    p.add_argument("--repeats", type=int, default=5 if cuda else 2)
    p.add_argument("--fp32", action="store_true", help="official precision for the step (default bf16 on CUDA)")
    p.add_argument("--out", default="runs/minred/bench.json")
    a = p.parse_args(argv)
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    res = {"device": torch.cuda.get_device_name() if cuda else "cpu", "chunk": a.chunk, "updates": a.updates,
           "img_size": a.img_size, "rows": []}
    for d in (int(x) for x in a.dims.split(",")):
        arch = ARCH_OF_DIM.get(d, "resnet50")
        st = step_time(arch, a.chunk, a.img_size, device, a.repeats, not a.fp32)
        for n in (int(x) for x in a.sizes.split(",")):
            ev = eviction_time(n, d, a.chunk, device, a.repeats)
            row = {"buffer": n, "dim": d, "arch": arch, "step_s": st, **ev,
                   "eviction_share": ev["eviction_s"] / (ev["eviction_s"] + a.updates * st)}
            res["rows"].append(row)
            print(f"[{res['device']}] buffer {n:6d} x {d:4d}: eviction {1e3 * ev['eviction_s']:9.1f} ms"
                  + (f" (peak {ev['eviction_peak_mb']:.0f} MB; dense matrix {ev['dense_matrix_mb']:.0f} MB)" if cuda else "")
                  + f" | {arch} step at {a.img_size}px x {a.chunk}: {1e3 * st:8.1f} ms | eviction share of a chunk "
                  f"with {a.updates} steps: {100 * row['eviction_share']:.1f} %", flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
