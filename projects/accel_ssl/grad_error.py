"""Gradient-estimation error of sequence-compression settings at a checkpoint.

R mini-batches of b images are drawn at random from the training set (seeded; the same images and
augmentations for every setting). On each, the full-length gradient g_r and each setting's gradient
g_{s,r} are computed. The target is g = E[g_r], the expected full-length mini-batch gradient, and

    bias^2_s = || E[g_s] - g ||^2        variance_s = E || g_s - E[g_s] ||^2  (of one mini-batch of b images)

are estimated without bias from the R pairs:

    d_r = g_{s,r} - g_r  (paired: the same images)     bias^2_s ~ || mean_r d_r ||^2 - tr(S_d) / R
    variance_s ~ tr(S_s) = sum_r || g_{s,r} - mean_r g_{s,r} ||^2 / (R - 1)

with S the sample covariances (divisor R - 1): ||mean d||^2 alone overestimates the squared bias by
tr(Var d) / R, the correction removes it (the estimate can then be slightly negative when the bias is
small; it is reported as measured). The cost of a setting relative to full length is its trunk FLOP
ratio by default, or (``--cost time``) its median training-step time measured with CUDA
synchronisation under the training precision (bf16 autocast on CUDA). Then

    CA-MSE_s = bias^2_s + cost_s * variance_s

the error at equal compute: a setting c times cheaper can average 1/c times more mini-batches. (This is
our formalisation of the paper's cost-adjusted MSE; the paper's exact normalisation is not published
in a form we could check.) ``--micro-batch m`` computes each b-image gradient as the mean of b/m
gradients of m images (each as one of b/m data-parallel processes would, with its own BatchNorm
statistics and its own negatives), so the recipe's batch (4096 for MoCo v3) fits on one device.

    python -m projects.accel_ssl.grad_error --config CFG.yaml [--checkpoint PATH] [--batches 8]
        [--batch-size B] [--micro-batch M] [--cost flops|time]
        [--settings '[{"keep_online": 0.5}, {"patch": 32}]'] [key=value ...]

Writes <run>/grad_error/<tag>.json and a plot of bias^2, cost x variance and CA-MSE per setting.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from shared.amp import autocast
from shared.benchmark import time_fn
from shared.checkpoint import read_checkpoint, state_dict_of
from shared.config import load_config, load_yaml
from shared.data.robust import collate_skipping_bad
from shared.data.sampling import sample_seed
from shared.run import run_dir_of
from projects.accel_ssl.compression import Schedule, Setting
from projects.accel_ssl.data import pretrain_set, view_sizes
from projects.accel_ssl.model import build_model

DEFAULT_SETTINGS = [
    {"keep_online": 0.75}, {"keep_online": 0.5}, {"keep_online": 0.25},
    {"keep_online": 0.5, "keep_target": 0.5}, {"patch": "x2"}, {"patch": "x2", "keep_online": 0.5},
]


def _flat_grad(params) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])


class PairedMoments:
    """Running sums (float64) of one setting's gradients g_{s,r} and of their differences d_r = g_{s,r} - g_r
    from the full-length gradients on the same mini-batches; ``result`` gives the unbiased estimates."""

    def __init__(self):
        self.n, self.sum_s, self.sum_d, self.sq_s, self.sq_d = 0, None, None, 0.0, 0.0

    def add(self, g_s: torch.Tensor, g_ref: torch.Tensor) -> None:
        g_s, d = g_s.double(), g_s.double() - g_ref.double()
        self.sum_s = g_s.clone() if self.sum_s is None else self.sum_s.add_(g_s)
        self.sum_d = d.clone() if self.sum_d is None else self.sum_d.add_(d)
        self.sq_s += float(g_s.square().sum())
        self.sq_d += float(d.square().sum())
        self.n += 1

    def result(self) -> dict:
        r = self.n
        if r < 2:
            raise ValueError("the unbiased estimates need at least 2 mini-batches (--batches)")
        mean_s2 = float((self.sum_s / r).square().sum())
        mean_d2 = float((self.sum_d / r).square().sum())
        var_s = max(self.sq_s - r * mean_s2, 0.0) / (r - 1)  # tr(S_s), divisor R - 1
        var_d = max(self.sq_d - r * mean_d2, 0.0) / (r - 1)
        return {"bias2": mean_d2 - var_d / r, "bias2_plugin": mean_d2, "var": var_s, "var_diff": var_d,
                "grad_norm2": mean_s2}


def unbiased_stats(ref: torch.Tensor, comp: torch.Tensor) -> dict:
    """(R, P) full-length and (R, P) setting gradients on the same R mini-batches -> squared bias and variance."""
    m = PairedMoments()
    for g_s, g in zip(comp, ref):
        m.add(g_s, g)
    return m.result()


def _grad(model, params, views: list[torch.Tensor], setting: Setting, seeds: list[int], teacher_temp: float,
          buffers: dict, micro: int | None) -> torch.Tensor:
    """The flattened gradient of one mini-batch (mean of its micro-batch gradients when ``micro`` is set)."""
    b = views[0].shape[0]
    m = micro or b
    if b % m:
        raise ValueError(f"--micro-batch {m} does not divide the batch of {b}")
    model.zero_grad(set_to_none=True)
    for j, lo in enumerate(range(0, b, m)):
        model.load_state_dict(buffers, strict=False)  # no state carried between batches (BN stats, DINO center)
        part = [v[lo:lo + m] for v in views]
        gens = [torch.Generator(part[0].device).manual_seed(sample_seed(sd, j)) for sd in seeds]
        loss, _ = model.loss(part, setting, gens, teacher_temp=teacher_temp)
        (loss * (m / b)).backward()
    return _flat_grad(params)


def step_time(model, views, setting: Setting, device, amp: str | None, teacher_temp: float, buffers: dict,
              micro: int | None) -> float:
    """Median seconds of one forward + backward under the training precision, CUDA-synchronised."""
    part = [v[: micro or v.shape[0]] for v in views]
    gens = [torch.Generator(part[0].device).manual_seed(i) for i in range(len(part) + 2)]

    def step():
        model.load_state_dict(buffers, strict=False)
        model.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss, _ = model.loss(part, setting, model.draw_noise(part, setting, gens), teacher_temp=teacher_temp)
        loss.backward()

    return time_fn(step, device, warmup=2, repeats=5).median


def measure(model, batches, settings: list[Setting], seed: int = 0, teacher_temp: float = 0.04,
            sizes: list[int] | None = None, cost: str = "flops", micro: int | None = None,
            amp: str | None = None) -> list[dict]:
    """Squared bias, variance, relative cost and CA-MSE of each setting (the first must be the full length).
    ``batches``: R mini-batches (lists of views; an iterable that is read once)."""
    if cost not in ("flops", "time"):
        raise ValueError(f"cost must be 'flops' or 'time', got {cost!r}")
    if cost == "flops" and sizes is None:
        raise ValueError("the FLOP cost needs the view sizes")
    if settings[0] != Setting():
        raise ValueError("the first setting must be the full length (the reference)")
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.train()
    moments = [PairedMoments() for _ in settings]
    first = None
    for r, views in enumerate(batches):
        first = first or views
        seeds = [sample_seed(seed, r, i) for i in range(len(views) + 2)]
        g = _grad(model, params, views, settings[0], seeds, teacher_temp, buffers, micro)
        moments[0].add(g, g)
        for s, mom in zip(settings[1:], moments[1:]):
            mom.add(_grad(model, params, views, s, seeds, teacher_temp, buffers, micro), g)
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    times = ([step_time(model, first, s, device, amp, teacher_temp, buffers, micro) for s in settings]
             if cost == "time" else None)
    model.load_state_dict(buffers, strict=False)
    rows = []
    for i, (s, mom) in enumerate(zip(settings, moments)):
        row = {"setting": s.to_dict(), "name": s.name, **mom.result()}
        if sizes is not None:
            row["cost_flops"] = model.step_flops(sizes, s) / model.step_flops(sizes, settings[0])
        if times is not None:
            row["cost_time"], row["step_time_s"] = times[i] / times[0], times[i]
        row["cost"] = row["cost_" + cost]
        row["ca_mse"] = row["bias2"] + row["cost"] * row["var"]
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
    pos = lambda v: max(v, 1e-12)  # log axis: an unbiased estimate of a zero bias can come out slightly negative
    ax.bar([i - w for i in x], [pos(r["bias2"]) for r in rows], w, label="bias$^2$ (unbiased)")
    ax.bar(list(x), [pos(r["cost"] * r["var"]) for r in rows], w, label="cost x variance")
    ax.bar([i + w for i in x], [pos(r["ca_mse"]) for r in rows], w, label="CA-MSE")
    ax.set_xticks(list(x), [f"{r['name']}\ncost {r['cost']:.2f}" for r in rows], fontsize=6, rotation=30)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def random_batches(cfg, ds, n_batches: int, batch_size: int, device):
    """``n_batches`` mini-batches of images drawn at random from the whole set (seeded: run.seed), with
    seeded augmentations; yields each batch's views on ``device`` and records unreadable images."""
    g = torch.Generator().manual_seed(sample_seed(cfg.run.seed, 11))
    if n_batches * batch_size > len(ds):
        raise ValueError(f"{n_batches} x {batch_size} images asked, the set has {len(ds)}")
    idx = torch.randperm(len(ds), generator=g)[: n_batches * batch_size].tolist()
    pairs = [(i, sample_seed(cfg.run.seed, 7, i)) for i in idx]
    loader = DataLoader(ds, batch_size=batch_size, sampler=pairs, num_workers=cfg.data.num_workers,
                        collate_fn=collate_skipping_bad)
    for batch in loader:
        if batch["bad"]:
            raise RuntimeError(f"{len(batch['bad'])} unreadable images in a gradient-error batch "
                               f"(first: {batch['bad'][0].key}: {batch['bad'][0].error}); fix or remove them")
        yield [v.to(device, non_blocking=True) for v in batch["views"]]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", default=None, help="a training checkpoint (default: the model at initialisation)")
    p.add_argument("--batches", type=int, default=8, help="R mini-batches (at least 2)")
    p.add_argument("--batch-size", type=int, default=None, help="b (default: optim.batch_size, the recipe's)")
    p.add_argument("--micro-batch", type=int, default=None,
                   help="compute each b-image gradient as the mean of b/m gradients of m images (as b/m processes would)")
    p.add_argument("--cost", choices=("flops", "time"), default="flops",
                   help="relative cost: trunk FLOPs (default) or synchronised step time under train.amp")
    p.add_argument("--settings", default=None, help="YAML/JSON list of settings; patch 'x2' = twice the base patch")
    p.add_argument("--tag", default=None)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    torch.manual_seed(cfg.run.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.run.device != "cpu" else "cpu")
    model = build_model(cfg).to(device)
    progress = 0
    if a.checkpoint:
        state = read_checkpoint(a.checkpoint, project="accel_ssl")
        model.load_state_dict(state_dict_of(state, a.checkpoint, key="model"))
        progress = state.get("step", 0) if isinstance(state, dict) else 0
    b = a.batch_size or cfg.optim.batch_size
    settings = resolve(load_yaml(a.settings) if a.settings else DEFAULT_SETTINGS, cfg.model.patch_size)
    Schedule([(1.0, s) for s in settings]).validate(view_sizes(cfg), cfg.model.patch_size)
    model.precompute({s.patch for s in settings if s.patch}, device)
    batches = random_batches(cfg, pretrain_set(cfg), a.batches, b, device)
    rows = measure(model, batches, settings, cfg.run.seed, cfg.method.teacher_temp, view_sizes(cfg), cost=a.cost,
                   micro=a.micro_batch, amp=cfg.train.amp)
    tag = a.tag or (Path(a.checkpoint).stem if a.checkpoint else "init")
    out_dir = run_dir_of(cfg) / "grad_error"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"config": cfg.run.name, "checkpoint": a.checkpoint, "step": progress, "batches": a.batches,
              "batch_size": b, "micro_batch": a.micro_batch, "cost": a.cost,
              "estimator": "paired unbiased: bias2 = ||mean d||^2 - tr(S_d)/R, var = tr(S_s), divisor R-1",
              "rows": rows}
    (out_dir / f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, out_dir / f"{tag}.png", f"{cfg.run.name} @ {tag}: R={a.batches} x b={b}, cost: {a.cost}")
    for r in rows:
        print(f"{r['name']:40s} bias2 {r['bias2']:.3e}  var {r['var']:.3e}  cost {r['cost']:.2f} ({a.cost})  "
              f"CA-MSE {r['ca_mse']:.3e}")
    return result


if __name__ == "__main__":
    main()
