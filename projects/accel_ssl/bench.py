"""Training-step throughput of each framework at full length and under sequence compression,
measured in one run on the device present, with FLOPs per image, achieved TFLOP/s, and the
speed-up beside the FLOP ratio.

    python -m projects.accel_ssl.bench [--arch vit_base] [--batch 256] [--methods mocov3,simclr,dino] [--compile]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from shared.config import load_config
from projects.accel_ssl.compression import Setting
from projects.accel_ssl.frameworks import build_framework

def settings(base_patch: int) -> dict[str, Setting]:
    """Full length, keep 0.5 / 0.25 (both branches), twice the patch (32 for ViT-B/16), and both."""
    p2 = 2 * base_patch
    return {"full": Setting(), "keep0.5": Setting(keep_online=(0.5,), keep_target=(0.5,)),
            "keep0.25": Setting(keep_online=(0.25,), keep_target=(0.25,)), f"patch{p2}": Setting(patch=p2),
            f"patch{p2}+keep0.5": Setting(patch=p2, keep_online=(0.5,), keep_target=(0.5,))}


def bench_method(method: str, config: str, overrides: list[str], batch: int, steps: int, use_compile: bool,
                 device) -> dict:
    cfg = load_config(config, overrides)
    img = cfg.data.img_size
    torch.manual_seed(0)
    model = build_framework(cfg).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    n_views = 2 + (cfg.data.n_local_crops if method == "dino" else 0)
    sizes = [img] * 2 + [cfg.data.local_size] * (n_views - 2)
    views = [torch.randn(batch, cfg.model.in_chans, s, s, device=device) for s in sizes]
    loss_fn = torch.compile(model.loss, dynamic=False) if use_compile else model.loss
    out = {}
    for name, s in settings(cfg.model.patch_size).items():
        if any(v % (s.patch or cfg.model.patch_size) for v in sizes):
            continue

        def step():
            gens = [torch.Generator().manual_seed(i) for i in range(n_views + 2)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss, _ = loss_fn(views, s, gens, teacher_temp=0.04)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.update_target(0.99)

        for _ in range(3):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs = (time.perf_counter() - t) / steps
        flops = model.step_flops(sizes, s)
        out[name] = {"img_s": batch / secs, "gflops_per_img": flops / 1e9, "tflops_s": flops * batch / secs / 1e12}
    full = out["full"]
    for r in out.values():
        r["speedup"] = r["img_s"] / full["img_s"]
        r["flop_ratio"] = full["gflops_per_img"] / r["gflops_per_img"]
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=None, help="default: vit_base at 224 px on CUDA; the demo's ViT at 32 px on CPU")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--img-size", type=int, default=None, help="default: the config's (224 / 32)")
    p.add_argument("--methods", default="mocov3,simclr,dino", help="comma-separated")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    arch = a.arch or ("vit_base" if cuda else "vit_demo")
    batch, steps = a.batch or (256 if cuda else 64), a.steps or (20 if cuda else 3)
    res = {"device": torch.cuda.get_device_name() if cuda else "cpu", "arch": arch, "batch": batch,
           "compile": a.compile, "results": {}}
    for m in a.methods.split(","):
        config = (f"projects/accel_ssl/configs/{m}_vitb16_in1k.yaml" if cuda else
                  f"projects/accel_ssl/configs/demo_{m}.yaml")
        over = [f"model.arch={arch}"] + ([f"model.img_size={a.img_size}", f"data.img_size={a.img_size}"] if a.img_size else [])
        res["results"][m] = r = bench_method(m, config, over, batch, steps, a.compile, device)
        for name, v in r.items():
            print(f"[{res['device']}] {m:7s} {arch} {name:16s} {v['img_s']:9.1f} img/s  {v['gflops_per_img']:8.2f} GFLOP/img"
                  f"  {v['tflops_s']:7.2f} TFLOP/s  speed-up {v['speedup']:.2f}x (FLOP ratio {v['flop_ratio']:.2f}x)")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
