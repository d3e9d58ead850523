"""Training-step throughput of each framework at full length and under the compression settings the
configs run (token dropout on the online branch, the momentum branch / teacher full length; patch
scaling, which applies to both) and, beside them, the same keep ratios on both branches. Measured in
one process on the device present with shared/benchmark.py (warm-up, CUDA synchronisation, median of
repeats): images/s, FLOPs per image counted by torch's FlopCounterMode, achieved TFLOP/s, % of the
bf16 peak, and the speed-up beside the FLOP ratio.

    python -m projects.accel_ssl.bench [--arch vit_base] [--batch 256] [--methods mocov3,simclr,dino] [--compile]
        [--check-graph-breaks] [--out bench.json] [--budget-s S] [--summary-json PATH]

The batch is per device: the largest of --batch, --batch/2, ... whose full-length step fits in memory
(DINO's 12-crop step needs a smaller one than MoCo v3's 2 views). The token-dropout noise is drawn on
the device before the (compiled) step and the sin-cos tables are cached there, so the compiled loss
has no graph break (``--check-graph-breaks`` counts them with torch._dynamo.explain).

``--budget-s`` (``make bench``): the seconds the whole bench may take, shared over the methods and
their settings; the repeats stop when a measurement's share is spent, and on the CPU the batch
defaults to 4. ``--summary-json``: the common record (shared.benchmark.summary) of the first method's
full-length step, fp32 against the configs' bf16 autocast (on CUDA the bench times that step once more
without autocast: the "full fp32" row).
"""
from __future__ import annotations

import argparse

import torch

from shared.amp import autocast
from shared.benchmark import (Budget, count_flops, peak_memory_gb, peak_tflops, reset_peak_memory, summary, time_fn,
                              add_output_args, parse_bench_args, write_outputs)
from shared.config import load_config
from projects.accel_ssl.compression import Setting
from projects.accel_ssl.model import build_model


def settings(base_patch: int) -> dict[str, Setting]:
    """Full length; what the configs run (online keep 0.5 / 0.25, target full; twice the patch); and the
    both-branches twins of the keep settings."""
    p2 = 2 * base_patch
    return {"full": Setting(),
            "keep0.5 online": Setting(keep_online=(0.5,)), "keep0.25 online": Setting(keep_online=(0.25,)),
            f"patch{p2}": Setting(patch=p2), f"patch{p2}+keep0.5 online": Setting(patch=p2, keep_online=(0.5,)),
            "keep0.5 both": Setting(keep_online=(0.5,), keep_target=(0.5,)),
            "keep0.25 both": Setting(keep_online=(0.25,), keep_target=(0.25,))}


class Bench:
    """One framework's training step (forward, backward, AdamW, momentum update) on fixed random views."""

    def __init__(self, cfg, batch: int, device, use_compile: bool):
        torch.manual_seed(0)
        self.cfg, self.device, self.batch = cfg, device, batch
        self.model = build_model(cfg).to(device)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)
        n_local = cfg.data.n_local_crops if cfg.method.name == "dino" else 0
        self.sizes = [cfg.data.img_size] * 2 + [cfg.data.local_size] * n_local
        self.views = [torch.randn(batch, cfg.model.in_chans, s, s, device=device) for s in self.sizes]
        self.gens = [torch.Generator(device).manual_seed(i) for i in range(len(self.views) + 2)]
        self.model.precompute([2 * cfg.model.patch_size], device)
        self.loss_fn = torch.compile(self.model.loss, dynamic=False) if use_compile else self.model.loss

    def fits(self, s: Setting) -> bool:
        return not any(v % (s.patch or self.cfg.model.patch_size) for v in self.sizes)

    def step(self, s: Setting) -> None:
        noise = self.model.draw_noise(self.views, s, self.gens)
        with autocast(self.device, self.cfg.train.amp):
            loss, _ = self.loss_fn(self.views, s, noise, teacher_temp=0.04)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.model.update_target(0.99)

    def graph_breaks(self, s: Setting) -> int:
        import torch._dynamo

        torch._dynamo.reset()
        noise = self.model.draw_noise(self.views, s, self.gens)
        with autocast(self.device, self.cfg.train.amp):
            return torch._dynamo.explain(self.model.loss)(self.views, s, noise, teacher_temp=0.04).graph_break_count


def fit_batch(cfg, start: int, device, use_compile: bool) -> Bench:
    """The largest batch start, start/2, ... whose full-length step runs on this device."""
    batch = start
    while True:
        try:
            b = Bench(cfg, batch, device, use_compile)
            b.step(Setting())
            return b
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            del b
            torch.cuda.empty_cache()
            batch //= 2


def measure(b: Bench, s: Setting, steps: int, device, budget_s: float | None, check_breaks: bool) -> dict:
    """One setting's row: images/s, FLOPs per image, TFLOP/s, % of the bf16 peak (peak CUDA memory on CUDA)."""
    flops = count_flops(lambda: b.step(s))
    reset_peak_memory(device)
    # at least 3 repeats (steps are short): one stalled step must not become the baseline of every speed-up
    t = time_fn(lambda: b.step(s), device, warmup=3, repeats=steps, budget_s=budget_s, min_repeats=min(3, steps))
    mem = peak_memory_gb(device)
    row = {"img_s": t.items_per_s(b.batch), "step_s": t.median, "spread": t.spread, "repeats": len(t.seconds),
           "gflops_per_img": flops / b.batch / 1e9, "trunk_gflops_per_img": b.model.step_flops(b.sizes, s) / 1e9,
           "tflops_s": t.tflops(flops), "pct_bf16_peak": t.percent_of_peak(flops, peak_tflops(device))}
    if mem is not None:
        row["peak_mem_gb"] = mem
    if check_breaks:
        row["graph_breaks"] = b.graph_breaks(s)
    return row


def bench_method(cfg, batch: int, steps: int, use_compile: bool, device, check_breaks: bool = False,
                 budget_s: float | None = None, fp32_twin: bool = False) -> dict:
    """Every setting that fits the crops; ``fp32_twin``: the full-length step once more without autocast
    ("full fp32"); ``budget_s``: the seconds for this method, shared over its settings."""
    budget = Budget(budget_s)
    b = fit_batch(cfg, batch, device, use_compile)
    todo = [(name, s) for name, s in settings(cfg.model.patch_size).items() if b.fits(s)]
    out = {"batch": b.batch}
    for i, (name, s) in enumerate(todo):
        out[name] = measure(b, s, steps, device, budget.share(len(todo) - i + fp32_twin), check_breaks)
    if fp32_twin:
        amp, cfg.train.amp = cfg.train.amp, "none"
        try:
            out["full fp32"] = measure(b, Setting(), steps, device, budget.share(1), check_breaks)
        finally:
            cfg.train.amp = amp
    full = out["full"]
    for name, r in out.items():
        if name != "batch":
            r["speedup"] = r["img_s"] / full["img_s"]
            r["flop_ratio"] = full["gflops_per_img"] / r["gflops_per_img"]
    return out


def common_record(res: dict, budget_s: float | None) -> dict:
    """The first method's full-length step in images/s: fp32 ("full fp32", CUDA) against the configs'
    bf16 autocast ("full"); on the CPU, where shared.amp runs fp32, the one fp32 run."""
    m, r = next(iter(res["results"].items()))
    full, full32 = r["full"], r.get("full fp32")
    fp32, bf16 = (full32["img_s"], full["img_s"]) if full32 else (full["img_s"], None)
    what = f"{m} training step at full length, {res['arch']}, batch {r['batch']} (detail: the compression settings)"
    return summary(what, "images/s", fp32, bf16, full["tflops_s"], full["pct_bf16_peak"], full.get("peak_mem_gb"),
                   budget_s, res)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=None, help="default: vit_base at 224 px on CUDA; the demo's ViT at 32 px on CPU")
    p.add_argument("--batch", type=int, default=None,
                   help="per device, the largest tried (default 256 CUDA / 64 CPU, 4 on the CPU with --budget-s)")
    p.add_argument("--steps", type=int, default=None, help="timed repeats (default 10 CUDA / 3 CPU)")
    p.add_argument("--img-size", type=int, default=None, help="default: the config's (224 / 32)")
    p.add_argument("--methods", default="mocov3,simclr,dino", help="comma-separated")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--check-graph-breaks", action="store_true", help="count torch.compile graph breaks per setting")
    add_output_args(p)
    p.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    a, budget = parse_bench_args(p, argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    arch = a.arch or ("vit_base" if cuda else "vit_demo")
    batch = a.batch or (256 if cuda else 4 if a.budget_s is not None else 64)
    steps = a.steps or (10 if cuda else 3)
    res = {"device": torch.cuda.get_device_name() if cuda else "cpu", "arch": arch, "compile": a.compile,
           "peak_bf16_tflops": peak_tflops(device), "results": {}}
    methods = a.methods.split(",")
    for i, m in enumerate(methods):
        config = (f"projects/accel_ssl/configs/{m}_vitb16_in1k.yaml" if cuda else
                  f"projects/accel_ssl/configs/demo_{m}.yaml")
        over = [f"model.arch={arch}", "run.device=" + device.type, *a.overrides] + (
            [f"model.img_size={a.img_size}", f"data.img_size={a.img_size}"] if a.img_size else [])
        res["results"][m] = r = bench_method(load_config(config, over), batch, steps, a.compile, device,
                                             a.check_graph_breaks, budget.share(len(methods) - i), cuda and i == 0)
        for name, v in r.items():
            if name == "batch":
                continue
            pct = f"{v['pct_bf16_peak']:5.1f} % of bf16 peak" if v["pct_bf16_peak"] is not None else "peak n/a (CPU)"
            gb = f"  graph breaks {v['graph_breaks']}" if "graph_breaks" in v else ""
            print(f"[{res['device']}] {m:7s} {arch} b={r['batch']:<4d} {name:24s} {v['img_s']:9.1f} img/s  "
                  f"{v['gflops_per_img']:8.2f} GFLOP/img  {v['tflops_s']:7.2f} TFLOP/s  {pct}  "
                  f"speed-up {v['speedup']:.2f}x (FLOP ratio {v['flop_ratio']:.2f}x, spread {100 * v['spread']:.0f} %){gb}")
    return write_outputs(a, res, lambda: common_record(res, a.budget_s))


if __name__ == "__main__":
    main()
