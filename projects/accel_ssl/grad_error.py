"""Gradient-estimation error of sequence-compression settings at a checkpoint.

For R mini-batches of b images (the same images and augmentations for every setting), the
full-length gradients g_r give the reference g = mean_r g_r (a large-batch estimate, R * b images).
Each setting s gives g_{s,r} on the same mini-batches, and

    bias^2_s = || mean_r g_{s,r} - g ||^2
    var_s    = mean_r || g_{s,r} - mean_r g_{s,r} ||^2          (per mini-batch of b images)
    cost_s   = c_s / c_full                                       (measured step time; FLOPs beside it)
    CA-MSE_s = bias^2_s + cost_s * var_s

the error at equal compute: a setting c times cheaper can average 1/c times more mini-batches,
dividing its variance by that factor. (This is our formalisation of the paper's cost-adjusted
MSE; the paper's exact normalisation is not published in a form we could check.)

    python -m projects.accel_ssl.grad_error --config CFG.yaml [--checkpoint PATH] [--batches 8]
        [--settings '[{"keep_online": 0.5}, {"patch": 32}]'] [key=value ...]

Writes <run>/grad_error/<tag>.json and a plot of bias^2, variance and CA-MSE against cost.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from shared.checkpoint import load_weights
from shared.config import load_config, load_yaml
from shared.data.robust import collate_skipping_bad
from shared.data.sampling import sample_seed
from shared.run import run_dir_of
from projects.accel_ssl.compression import Setting
from projects.accel_ssl.data import pretrain_set, view_sizes
from projects.accel_ssl.frameworks import build_framework

DEFAULT_SETTINGS = [
    {"keep_online": 0.75}, {"keep_online": 0.5}, {"keep_online": 0.25},
    {"keep_online": 0.5, "keep_target": 0.5}, {"patch": "x2"}, {"patch": "x2", "keep_online": 0.5},
]


def _flat_grad(params) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])


def measure(model, batches: list[list[torch.Tensor]], settings: list[Setting], seed: int = 0,
            teacher_temp: float = 0.04, sizes: list[int] | None = None) -> list[dict]:
    """Bias^2, variance, relative cost and CA-MSE of each setting (the first must be the full length)."""
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.train()

    def grads(setting: Setting) -> tuple[torch.Tensor, float]:
        out, secs = [], 0.0
        for r, views in enumerate(batches):
            model.load_state_dict(buffers, strict=False)  # no state carried between batches (BN stats, DINO center)
            gens = [torch.Generator().manual_seed(sample_seed(seed, r, i)) for i in range(len(views) + 2)]
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            loss, _ = model.loss(views, setting, gens, teacher_temp=teacher_temp)
            loss.backward()
            secs += time.perf_counter() - t
            out.append(_flat_grad(params).double())
        model.load_state_dict(buffers, strict=False)
        return torch.stack(out), secs / len(batches)

    # warm-up pass so the first timed setting does not pay for allocation
    grads(settings[0])
    ref, ref_time = grads(settings[0])
    g = ref.mean(0)
    rows = []
    for s in settings:
        gs, secs = (ref, ref_time) if s == settings[0] else grads(s)
        mean = gs.mean(0)
        bias2 = float(((mean - g) ** 2).sum())
        var = float(((gs - mean) ** 2).sum(1).mean())
        cost = secs / ref_time
        row = {"setting": s.to_dict(), "name": s.name, "bias2": bias2, "var": var, "cost_time": cost,
               "step_time_s": secs, "ca_mse": bias2 + cost * var, "grad_norm2": float((g ** 2).sum())}
        if sizes is not None:
            row["cost_flops"] = model.step_flops(sizes, s) / model.step_flops(sizes, settings[0])
        rows.append(row)
    return rows


def resolve(settings: list[dict], base_patch: int) -> list[Setting]:
    out = [Setting()]
    for d in settings:
        d = dict(d)
        if isinstance(d.get("patch"), str) and d["patch"].startswith("x"):
            d["patch"] = int(base_patch * float(d["patch"][1:]))
        s = Setting.from_dict(d)
        if s not in out:
            out.append(s)
    return out


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(rows))
    w = 0.27
    ax.bar([i - w for i in x], [r["bias2"] for r in rows], w, label="bias$^2$")
    ax.bar(list(x), [r["cost_time"] * r["var"] for r in rows], w, label="cost x variance")
    ax.bar([i + w for i in x], [r["ca_mse"] for r in rows], w, label="CA-MSE")
    ax.set_xticks(list(x), [f"{r['name']}\ncost {r['cost_time']:.2f}" for r in rows], fontsize=6, rotation=30)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", default=None, help="a training checkpoint (default: the model at initialisation)")
    p.add_argument("--batches", type=int, default=8, help="R mini-batches (their union is the reference batch)")
    p.add_argument("--batch-size", type=int, default=None, help="b (default: optim.batch_size)")
    p.add_argument("--settings", default=None, help="YAML/JSON list of settings; patch 'x2' = twice the base patch")
    p.add_argument("--tag", default=None)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    torch.manual_seed(cfg.run.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.run.device != "cpu" else "cpu")
    model = build_framework(cfg).to(device)
    progress = 0.0
    if a.checkpoint:
        state = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"] if "model" in state else load_weights(a.checkpoint))
        progress = state.get("step", 0)
    ds = pretrain_set(cfg)
    b = a.batch_size or cfg.optim.batch_size
    batches = []
    for r in range(a.batches):
        items = [ds[(i, sample_seed(cfg.run.seed, 7, i))] for i in range(r * b, (r + 1) * b)]
        views = collate_skipping_bad(items)["views"]
        batches.append([v.to(device) for v in views])
    settings = resolve(load_yaml(a.settings) if a.settings else DEFAULT_SETTINGS, cfg.model.patch_size)
    rows = measure(model, batches, settings, cfg.run.seed, cfg.method.teacher_temp, view_sizes(cfg))
    tag = a.tag or (Path(a.checkpoint).stem if a.checkpoint else "init")
    out_dir = run_dir_of(cfg) / "grad_error"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"config": cfg.run.name, "checkpoint": a.checkpoint, "step": progress, "batches": a.batches,
              "batch_size": b, "rows": rows}
    (out_dir / f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, out_dir / f"{tag}.png", f"{cfg.run.name} @ {tag}: R={a.batches} x b={b}")
    for r in rows:
        print(f"{r['name']:40s} bias2 {r['bias2']:.3e}  var {r['var']:.3e}  cost {r['cost_time']:.2f} "
              f"(flops {r.get('cost_flops', float('nan')):.2f})  CA-MSE {r['ca_mse']:.3e}")
    return result


if __name__ == "__main__":
    main()
