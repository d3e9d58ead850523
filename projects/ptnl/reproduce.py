"""The whole PTNL pipeline on the demo, and its table of test accuracy against noise rate.

    python -m projects.ptnl.reproduce            # CPU, no download: Fashion-MNIST from shared.data.fashion_mnist

1. writes Fashion-MNIST in CoOp's layout (``data/ptnl_demo/fashion_mnist``, split_zhou json), every
   image in the demo's look (``demo.look``: dark) under ``images_dark`` (``demo_data.py``);
2. trains the demo CLIP's "looks" variant from scratch on 50,000 other Fashion-MNIST images in five
   looks with captions naming class and look (``shared/clip/demo_clip.py``, minutes; skipped when its
   cache ``data/demo_clip/demo-clip-fmnist-looks.pt`` holds a model trained with the current recipe;
   the Patch Ranking demo uses the default demo CLIP, another file);
3. runs the demo grid (``configs/sweeps/demo.yaml``) here, one run after another: zero-shot CLIP;
   CoOp prompt tuning with CE and with GCE at noise 0/25/50 % (official sampler, 16 shots) and the
   linear probe on the same noisy shots, seeds 1-4 (the official scripts' seeds); UPL and robust UPL on zero-shot pseudo-labels;
4. prints the tables and writes them to ``runs/ptnl/sweeps/demo/results_table.md``.

A real-data grid: ``python -m shared.sweep --grid projects/ptnl/configs/sweeps/noise_rn50.yaml ...``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from shared.checkpoint import atomic_write_text
from shared.config import load_config
from shared import sweep

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"
DEMO_GRID = Path(__file__).parent / "configs" / "sweeps" / "demo.yaml"
FIGURES = Path(__file__).parent / "figures"


def prepare_demo(cfg, n_train: int, n_val: int, n_test: int, clip_recipe: dict | None = None) -> dict:
    """Writes the few-shot dataset (its images in the look ``cfg.demo.look``, read from ``cfg.data.image_dir``)
    and makes sure the demo CLIP cache (``cfg.clip.pretrained``) holds a model trained with the recipe of
    ``cfg.demo.clip_variant`` (``shared.clip.demo_clip``) updated by ``clip_recipe``."""
    from shared.clip.demo_clip import cached_recipe, ensure_demo_clip, variant_recipe
    from projects.ptnl.demo_data import look_image_dir, write_demo_dataset

    if cfg.data.image_dir != look_image_dir(cfg.demo.look):
        raise ValueError(f"demo.look={cfg.demo.look} writes its images to {look_image_dir(cfg.demo.look)!r}, "
                         f"but data.image_dir={cfg.data.image_dir!r}")
    t = time.time()
    write_demo_dataset(cfg.data.root, n_train, n_val, n_test, cfg.demo.look)
    info = {"data_s": time.time() - t, "look": cfg.demo.look or "plain"}
    recipe = dict(clip_recipe or {})
    weights = Path(cfg.clip.pretrained)
    cached = cached_recipe(weights) == variant_recipe(cfg.demo.clip_variant, **recipe)
    t = time.time()
    ensure_demo_clip(weights, variant=cfg.demo.clip_variant, **recipe)
    if not cached:
        info["pretrain_s"] = time.time() - t
    info["demo_clip"] = {"path": str(weights), "recipe": cached_recipe(weights)}
    return info


def parse_recipe(items: list[str]) -> dict:
    """``["steps=300", "looks=[plain,dark]"]`` -> ``{"steps": 300, "looks": ["plain", "dark"]}`` (YAML values)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--clip-recipe takes KEY=VALUE items, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _cell(rows, **match) -> str:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            s = f"{r['mean']:.1f} ± {r['std']:.1f}"
            return s + (f" ({r['ensemble']:.1f})" if "ensemble" in r else "")
    return "-"


def tables(rows: list[dict]) -> str:
    rates = sorted({r["noise_rate"] for r in rows if isinstance(r["noise_rate"], (int, float))})
    head = "| method | " + " | ".join(f"noise {100 * x:g}%" for x in rates) + " |"
    out = ["Test accuracy (%), mean ± std over seeds (accuracy of the seeds' averaged logits):", "",
           head, "|---|" + "---|" * len(rates)]
    zs = [r for r in rows if r["method"] == "zeroshot"]
    if zs:
        out.append("| zero-shot CLIP (no training) | " + " | ".join(f"{zs[0]['mean']:.1f}" for _ in rates) + " |")
    out.append("| linear probe (LogReg C=1e3) | " + " | ".join(
        _cell(rows, method="linear_probe", noise_rate=x) for x in rates) + " |")
    losses = sorted({r["loss"] for r in rows if r["method"] == "coop"})
    for loss in losses:
        label = "GCE, " + loss.split(" ", 1)[1] if loss.startswith("gce") else loss.upper()
        out.append(f"| CoOp prompt tuning, {label} | " + " | ".join(
            _cell(rows, method="coop", noise_rate=x, loss=loss) for x in rates) + " |")
    upl = [r for r in rows if r["method"] in ("upl", "robust_upl")]
    if upl:
        out += ["", "Unsupervised prompt tuning on zero-shot pseudo-labels:", "",
                "| method | pseudo-label noise of the training set | seeds | accuracy mean ± std | ensemble |",
                "|---|---|---|---|---|"]
        names = {"upl": "UPL (top-16 confident per class, CE)", "robust_upl": "robust UPL (16 random per class, GCE)"}
        for r in upl:
            out.append(f"| {names[r['method']]} | {100 * r['train_noise']:.1f}% | {r['seeds']} | "
                       f"{r['mean']:.1f} ± {r['std']:.1f} | {r.get('ensemble', float('nan')):.1f} |")
    return "\n".join(out)


def result_rows(rows: list[dict]) -> list[dict]:
    """The gathered grid as shared.report rows: test top-1 mean over seeds, its std, the ensemble in the note."""
    out = []
    names = {"zeroshot": "zero-shot CLIP (no training)", "linear_probe": "linear probe (LogReg C=1e3)",
             "upl": "UPL (top-16 confident per class, CE)", "robust_upl": "robust UPL (16 random per class, GCE)"}
    order = {"zeroshot": 0, "linear_probe": 1, "coop": 2, "upl": 3, "robust_upl": 4}
    for r in sorted(rows, key=lambda r: (order.get(r["method"], 9), str(r["loss"]), str(r["noise_rate"]))):
        m = r["method"]
        if m == "coop":
            name = "CoOp prompt tuning, " + ("GCE " + r["loss"].split(" ", 1)[1] if r["loss"].startswith("gce")
                                             else r["loss"].upper())
        else:
            name = names.get(m, m)
        if isinstance(r["noise_rate"], (int, float)):
            setting = f"{100 * r['noise_rate']:g} % wrong labels ({r['noise_type']})"
        elif m in ("upl", "robust_upl"):
            setting = f"zero-shot pseudo-labels ({100 * r['train_noise']:.1f} % wrong)"
        else:
            setting = "no training"
        note = f"{r['seeds']} seed{'s' if r['seeds'] > 1 else ''}"
        if "ensemble" in r:
            note += f"; averaged-logits ensemble {r['ensemble']:.1f}"
        out.append({"setting": setting, "method": name, "metric": "test top-1 (%)", "ours": round(r["mean"], 2),
                    "std": round(r["std"], 2) if r["seeds"] > 1 else None, "note": note})
    return out


def _label(r: dict) -> str:
    if r["method"] == "linear_probe":
        return "linear probe (LogReg C=1e3)"
    loss = r["loss"]
    return "CoOp, " + ("GCE " + loss.split(" ", 1)[1] if loss.startswith("gce") else loss.upper())


def headline_figure(rows: list[dict], out_png: Path, tb_dir: Path | None = None):
    """The paper's Figure 1 at demo scale: test accuracy against the noise rate, one line per method
    (seed mean), zero-shot CLIP as a reference line. Saved as a PNG and, with ``tb_dir``, to TensorBoard."""
    from shared.report import figure_to_tensorboard, plot_xy

    lines: dict[str, tuple[list, list]] = {}
    for r in sorted((r for r in rows if isinstance(r["noise_rate"], (int, float))), key=lambda r: r["noise_rate"]):
        xs, ys = lines.setdefault(_label(r), ([], []))
        xs.append(100 * r["noise_rate"])
        ys.append(r["mean"])
    zs = [r["mean"] for r in rows if r["method"] == "zeroshot"]
    fig = plot_xy(lines, out_png, xlabel="wrong labels among the 16 shots per class (%)", ylabel="test accuracy (%)",
                  title="PTNL demo: accuracy vs label noise (Fashion-MNIST, demo CLIP)",
                  hlines={f"zero-shot CLIP {zs[0]:.1f}": zs[0]} if zs else None)
    if tb_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(tb_dir)) as w:
            figure_to_tensorboard(w, "demo/accuracy_vs_noise", fig, 0)
    else:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return out_png


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default=str(DEMO_GRID))
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="replace the grid's seeds (e.g. 1 2)")
    p.add_argument("--n-train", type=int, default=200, help="demo train images per class (few-shot pool)")
    p.add_argument("--n-val", type=int, default=20)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--clip-recipe", action="append", default=[], metavar="KEY=VALUE",
                   help="a change of the demo CLIP's pre-training recipe, repeatable: --clip-recipe steps=300 "
                        "--clip-recipe looks=[plain,dark] "
                        "(keys of shared.clip.demo_clip.RECIPE and its variant; another recipe retrains the cache)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run only every N-th job from the I-th (several processes at once), then stop; a last "
                        "call without --shard skips the finished runs and writes the tables")
    p.add_argument("--figures-dir", default=str(FIGURES), help="where the headline figure's PNG goes")
    p.add_argument("overrides", nargs="*", help="key=value for every run (e.g. optim.epochs=5)")
    a = p.parse_args(argv)
    t0 = time.time()
    grid = sweep.read_grid(a.grid)
    if a.seeds:
        for sub in grid["grids"]:
            if "run.seed" in (sub.get("axes") or {}) and len(sub["axes"]["run.seed"]) > 1:
                sub["axes"]["run.seed"] = list(a.seeds)
    cfg = load_config(DEMO_CONFIG, a.overrides)
    info = prepare_demo(cfg, a.n_train, a.n_val, a.n_test, parse_recipe(a.clip_recipe) or None)
    jobs = sweep.expand(grid, None, a.overrides)
    t1 = time.time()
    if a.shard:
        i0, n = (int(x) for x in a.shard.split("/"))
        if not 0 <= i0 < n:
            raise ValueError(f"--shard I/N needs 0 <= I < N, got {a.shard}")
        for j in jobs[i0::n]:
            print(f"[shard {a.shard}] {j['name']}", flush=True)
            sweep.Job(j["entry"], j["config"], j["overrides"])()
        return {"shard": a.shard, "jobs": len(jobs[i0::n])}
    reused = sum((Path(j["run_dir"]) / "results.json").is_file() for j in jobs)
    for i, j in enumerate(jobs):
        print(f"[{i + 1}/{len(jobs)}] {j['name']}", flush=True)
        sweep.Job(j["entry"], j["config"], j["overrides"])()
    rows = sweep.gather(jobs)
    out_dir = Path(cfg.run.root) / cfg.run.project / "sweeps" / grid["name"]
    sweep.write_tables(rows, out_dir)
    md = tables(rows)
    wall = time.time() - t0
    md += (f"\n\nWall time {wall / 60:.1f} min on this machine (runs {(time.time() - t1) / 60:.1f} min, "
           f"{len(jobs)} runs; CLIP pre-training included if it ran: {'pretrain_s' in info}).")
    figure = headline_figure(rows, Path(a.figures_dir) / f"{grid['name']}_accuracy_vs_noise.png", out_dir / "tb")
    atomic_write_text(out_dir / "results_table.md", md + "\n")
    atomic_write_text(out_dir / "demo_info.json", json.dumps({"wall_s": wall, **info}, indent=2) + "\n")
    if Path(a.grid).resolve() == DEMO_GRID.resolve() and not a.overrides and not a.seeds \
            and Path(a.figures_dir).resolve() == FIGURES.resolve():
        write_demo_results(rows, figure, info, wall, len(jobs), cfg, reused)
    print("\n" + md + f"\n\nwritten to {out_dir}/results_table.md "
          f"(per-run folders in {Path(cfg.run.root) / cfg.run.project})")
    return {"rows": rows, "table": md, "wall_s": wall, "figure": figure}


def write_demo_results(rows: list[dict], figure: Path, info: dict, wall_s: float, n_runs: int, cfg,
                       n_reused: int = 0) -> Path:
    """projects/ptnl/results/demo.json (shared.report) and the README's ``results:demo`` block from it."""
    from shared.report import table_block, update_readme, write_results

    recipe = info["demo_clip"]["recipe"] or {}
    path = write_results(
        "ptnl", "demo", result_rows(rows), command="make reproduce-ptnl  (= python -m projects.ptnl.reproduce)",
        title="Demo (Fashion-MNIST in CoOp's layout, the demo CLIP, CPU)", figures=[(figure, "accuracy vs label noise")],
        scale=f"Fashion-MNIST in CoOp's layout, every image in the look '{info.get('look', 'plain')}', "
              f"{cfg.fewshot.shots} shots per class, 1,000 test images; the demo CLIP"
              f"{' (variant ' + repr(cfg.demo.clip_variant) + ')' if cfg.demo.clip_variant else ''} "
              f"({recipe.get('steps')} steps of {recipe.get('batch_size')} on {recipe.get('images'):,} captioned "
              f"Fashion-MNIST images{', looks ' + '/'.join(recipe['looks']) if recipe.get('looks') else ''}); "
              f"zero-shot with '{cfg.data.template}'; the official CoOp recipe but RandomResizedCrop scale "
              f"{tuple(cfg.data.train_scale)}; CPU",
        notes=f"{n_runs} runs ({n_reused} of them finished by an earlier call and reused), {wall_s / 60:.1f} min of "
              f"wall time for this call on this machine (demo CLIP pre-training included: {'pretrain_s' in info}). "
              "Chance is 10 %.")
    import json as _json

    update_readme(Path(__file__).parent / "README.md", "demo", table_block(_json.loads(path.read_text()), "../../"))
    return path


if __name__ == "__main__":
    main()
