"""The accel_ssl demo: each framework pretrained on Fashion-MNIST at full length and with an
acceleration schedule (for twice the epochs), both evaluated by weighted k-NN on the same cadence
in training steps, against the same network at random init and k-NN on raw pixels.

    python -m projects.accel_ssl.reproduce [--methods mocov3,simclr,dino] [--seeds 0,1] [key=value ...]
    # the two runs of a pair in parallel processes (both see the same machine load), then the table:
    python -m projects.accel_ssl.reproduce --methods mocov3 --only full &
    python -m projects.accel_ssl.reproduce --methods mocov3 --only accel; wait
    python -m projects.accel_ssl.reproduce --methods mocov3 --collect
    python -m projects.accel_ssl.reproduce --config projects/accel_ssl/configs/mocov3_vitb16_in1k.yaml \
        --accel-config projects/accel_ssl/configs/mocov3_vitb16_in1k_accel.yaml data.root=$IMAGENET

Time to target is measured the same way for both runs: the training time (the shared loop's clock:
evaluation and checkpoints excluded) and the trunk FLOPs at the first evaluation whose k-NN reaches
the target. The targets are the full-length run's final k-NN minus 0, 1, 2 and 3 points; the
speed-up at a target is the full run's time to it over the accelerated run's. Writes
runs/accel_ssl/demo_table.md, demo_results.json, the accuracy-vs-training-time figure
(projects/accel_ssl/figures/demo_knn_vs_time.png, also in TensorBoard under runs/accel_ssl/demo_report)
and, when the table has all three frameworks (one run of the demo, or --merge of the per-framework
demo_results_*.json), projects/accel_ssl/results/demo.json for ``shared.report`` (the README's
``results:demo`` block; mean and sample std over seeds, every seed's speed-ups in its notes).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from shared.config import load_config
from shared.logging import read_metrics
from shared.metrics.knn import knn_accuracy
from shared.run import run_dir_of
from projects.accel_ssl.data import eval_sets, num_classes
from projects.accel_ssl.eval import evaluate_encoder
from projects.accel_ssl.model import build_model
from projects.accel_ssl.train import main as train_main

# compressed for the first 70 % of training, full length at the end (the shape the paper's analysis gives);
# the accelerated run is given twice the epochs and evaluated along the way on the same step cadence.
DEMO_SCHEDULE = "[{until: 0.7, patch: 8}, {until: 1.0}]"
TARGET_OFFSETS = (0.0, 0.01, 0.02, 0.03)  # below the full-length run's final k-NN
FIGURE = Path("projects/accel_ssl/figures/demo_knn_vs_time.png")


def random_init_knn(cfg) -> float:
    torch.manual_seed(cfg.run.seed)
    return evaluate_encoder(build_model(cfg).encoder(), cfg, torch.device("cpu"), linear_probe=False)["knn_top1"]


def raw_pixel_knn(cfg) -> float:
    """The same k-NN (bank, test set, k, T) on the flattened normalised pixels."""
    train, test = eval_sets(cfg, cfg.eval.knn_train_size, cfg.eval.knn_test_size)
    feats = lambda ds: (torch.stack([ds[(i, 0)]["views"].flatten() for i in range(len(ds))]),
                        torch.tensor([int(ds[(i, 0)]["label"]) for i in range(len(ds))]))
    (ftr, ytr), (fte, yte) = feats(train), feats(test)
    return knn_accuracy(ftr, ytr, fte, yte, num_classes(cfg), cfg.eval.knn_k, cfg.eval.knn_t)


def curve(cfg, final: dict, start_knn: float | None = None) -> list[tuple[float, float, float]]:
    """(train time s, TFLOPs, k-NN) at every evaluation of a run (at 0 with ``start_knn``), the final one included."""
    pts = [(m["budget/train_time_s"], m["budget/tflops"], m["eval/knn_top1"])
           for m in read_metrics(run_dir_of(cfg)) if "eval/knn_top1" in m and "budget/train_time_s" in m]
    return ([(0.0, 0.0, start_knn)] if start_knn is not None else []) + pts + [
        (final["train_time_s"], final["train_tflops"], final["knn_top1"])]


def time_to(points, target: float):
    """The first (time, TFLOPs) at which the k-NN accuracy reached ``target``, or None."""
    return next(((t, f) for t, f, acc in points if acc >= target), None)


def speedups(full_curve, accel_curve, full_final: float, offsets=TARGET_OFFSETS) -> list[dict]:
    """At each target (full-length final k-NN minus an offset): both runs' time and FLOPs to it and the ratios."""
    rows = []
    for d in offsets:
        target = full_final - d
        f, a = time_to(full_curve, target), time_to(accel_curve, target)
        rows.append({"offset": d, "target": target, "full_time_s": f[0] if f else None,
                     "accel_time_s": a[0] if a else None, "full_tflops": f[1] if f else None,
                     "accel_tflops": a[1] if a else None,
                     "speedup_time": f[0] / a[0] if f and a and a[0] > 0 else None,
                     "speedup_flops": f[1] / a[1] if f and a and a[1] > 0 else None})
    return rows


def _results(cfg, allow_partial: bool = False) -> dict:
    """A finished run's results.json; with ``allow_partial``, a run stopped early is read from its last
    periodic evaluation (its curve up to there is the same as a finished run's: the schedule is fixed)."""
    path = run_dir_of(cfg) / "results.json"
    if path.is_file():
        return json.loads(path.read_text())
    evals = [m for m in read_metrics(run_dir_of(cfg)) if "eval/knn_top1" in m and "budget/train_time_s" in m] \
        if allow_partial and run_dir_of(cfg).is_dir() else []
    if not evals:
        raise FileNotFoundError(f"--collect: {path} does not exist (train that run first, e.g. with --only)")
    last = evals[-1]
    return {"knn_top1": last["eval/knn_top1"], "train_time_s": last["budget/train_time_s"],
            "train_tflops": last["budget/tflops"], "steps": last["step"], "partial": True}


def run_pair(full_cfg, accel_cfg, train: bool = True) -> dict:
    """Both runs (or, with ``train=False``, their finished run folders), their curves and the speed-ups."""
    full, accel = ((train_main(full_cfg), train_main(accel_cfg)) if train else
                   (_results(full_cfg), _results(accel_cfg, allow_partial=True)))
    init = random_init_knn(full_cfg)  # both runs start from this network (same seed)
    fc, ac = curve(full_cfg, full, init), curve(accel_cfg, accel, init)
    if accel.get("partial"):
        ac = ac[:-1]  # its last evaluation is already on the curve
    return {"random_init_knn": init, "full": full, "accel": accel, "full_curve": fc, "accel_curve": ac,
            "targets": speedups(fc, ac, full["knn_top1"]), "knn_gap": accel["knn_top1"] - full["knn_top1"]}


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def table(rows: dict, raw_knn: float | None) -> str:
    """One line per framework: k-NN (median over seeds, range), train time, and the speed-up at each target."""
    heads = " | ".join(f"speed-up at full - {100 * d:g} pt: time (FLOPs)" for d in TARGET_OFFSETS)
    out = [f"| framework | seeds | random init k-NN | raw pixels k-NN | full: final k-NN, train time | "
           f"accelerated: final k-NN, train time | {heads} |", "|---" * (6 + len(TARGET_OFFSETS)) + "|"]
    fmt_x = lambda v: f"{v:.2f}x" if v is not None else "not reached"
    for m, seeds in rows.items():
        rs = list(seeds.values())
        rng = lambda key, sub, rs=rs: [r[sub][key] for r in rs]
        k = lambda xs: f"{100 * statistics.median(xs):.2f}" + (f" ({100 * min(xs):.1f}-{100 * max(xs):.1f})" if len(xs) > 1 else "")
        cells = []
        for i, _ in enumerate(TARGET_OFFSETS):
            st = [r["targets"][i]["speedup_time"] for r in rs]
            sf = [r["targets"][i]["speedup_flops"] for r in rs]
            reached = sum(x is not None for x in st)
            per_seed = "/".join(fmt_x(x) for x in st) if len(rs) > 1 else ""
            cells.append(f"{fmt_x(_median(st))} ({fmt_x(_median(sf))})" + (f"; seeds {per_seed}" if per_seed else "")
                         + ("" if reached == len(rs) else f"; reached {reached}/{len(rs)}"))
        raw_cell = f"{100 * raw_knn:.2f}" if raw_knn is not None else "-"
        partial = [r["accel"]["steps"] for r in rs if r["accel"].get("partial")]
        note = f" (stopped at step {'/'.join(map(str, partial))}: last evaluation)" if partial else ""
        out.append(f"| {m} | {len(rs)} | {k([r['random_init_knn'] for r in rs])} | {raw_cell} | "
                   f"{k(rng('knn_top1', 'full'))}, {_median(rng('train_time_s', 'full')):.0f} s | "
                   f"{k(rng('knn_top1', 'accel'))}, {_median(rng('train_time_s', 'accel')):.0f} s{note} | "
                   + " | ".join(cells) + " |")
    return "\n".join(out)


METHOD_NAMES = {"mocov3": "MoCo v3", "simclr": "SimCLR", "dino": "DINO"}
DEMO_COMMAND = ("python -m projects.accel_ssl.reproduce (all three frameworks in one process), or per framework and "
                "seed: --methods M --seeds S --only full & --only accel; then --collect, and --merge of the "
                "runs/accel_ssl/demo_results_*.json (README: Demo)")


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def result_rows(rows: dict, raw_knn: float | None) -> tuple[list[dict], str]:
    """The demo table as ``shared.report`` rows (mean over seeds, sample std when there are several) and a
    note with every seed's value: per framework, random init / raw pixels / full / accelerated k-NN with
    their training time and TFLOPs, then the time and FLOP speed-up at each target."""
    out, notes = [], []
    pct = lambda x: None if x is None else round(100 * x, 2)
    for m, seeds in rows.items():
        rs, name = list(seeds.values()), METHOD_NAMES.get(m, m)

        def add(method, metric, xs, scale=100.0, digits=2, name=name):
            mean, std = _mean_std(xs)
            rd = lambda v: None if v is None else round(scale * v, digits)
            reached = sum(x is not None for x in xs)
            out.append({"setting": name, "method": method, "metric": metric, "ours": rd(mean), "std": rd(std),
                        "note": None if reached == len(xs) else f"reached by {reached} of {len(xs)} seeds"})

        add("random init", "k-NN top-1 (%)", [r["random_init_knn"] for r in rs])
        if raw_knn is not None:
            add("raw pixels", "k-NN top-1 (%)", [raw_knn])
        for key, label in (("full", "full length"), ("accel", "accelerated")):
            add(label, "k-NN top-1 (%)", [r[key]["knn_top1"] for r in rs])
            add(label, "train time (s)", [r[key]["train_time_s"] for r in rs], 1.0, 0)
            add(label, "trunk TFLOPs", [r[key]["train_tflops"] for r in rs], 1.0, 2)
        for i, d in enumerate(TARGET_OFFSETS):
            method = f"speed-up to full - {100 * d:g} pt"
            st = [r["targets"][i]["speedup_time"] for r in rs]
            sf = [r["targets"][i]["speedup_flops"] for r in rs]
            add(method, "speed-up: train time (x)", st, 1.0, 2)
            add(method, "speed-up: FLOPs (x)", sf, 1.0, 2)
            if len(rs) > 1:
                fx = lambda v: f"{v:.2f}x" if v is not None else "not reached"
                notes.append(f"{name}, full - {100 * d:g} pt, seeds {'/'.join(map(str, seeds))}: time "
                             f"{' / '.join(fx(x) for x in st)}, FLOPs {' / '.join(fx(x) for x in sf)}")
        if len(rs) > 1:
            notes.append(f"{name} final k-NN, seeds {'/'.join(map(str, seeds))}: full "
                         + " / ".join(f"{pct(r['full']['knn_top1']):.2f}" for r in rs) + ", accelerated "
                         + " / ".join(f"{pct(r['accel']['knn_top1']):.2f}" for r in rs))
    return out, "; ".join(notes)


def write_demo_results(rows: dict, raw_knn: float | None, cfg, figure_path: Path | None, command: str = DEMO_COMMAND,
                       root=None) -> Path | None:
    """``projects/accel_ssl/results/demo.json`` (``shared.report``) from the rows of all three frameworks;
    a table missing one of them is not written (a partial ``--collect`` must not replace the whole table)."""
    from shared.report import REPO, write_results

    missing = [m for m in METHOD_NAMES if m not in rows]
    if missing:
        print(f"results/demo.json not written: no rows for {', '.join(missing)} (merge all three with --merge)")
        return None
    data, notes = result_rows(rows, raw_knn)
    seeds = {m: len(s) for m, s in rows.items()}
    scale = (f"Fashion-MNIST at {cfg.data.img_size} px, {cfg.data.train_subset} training images, batch "
             f"{cfg.optim.batch_size}, demo ViT (4 blocks, dim 128, patch {cfg.model.patch_size}); full length vs the "
             f"schedule {DEMO_SCHEDULE} for twice the epochs; k-NN ({cfg.eval.knn_train_size}-image bank, "
             f"{cfg.eval.knn_test_size} test images) every {cfg.eval.every_steps} steps; seeds per framework: "
             + ", ".join(f"{METHOD_NAMES[m]} {n}" for m, n in seeds.items()) + "; CPU (training times depend on the machine's load: see the README)")
    figs = [(str(figure_path), "k-NN vs training time and vs trunk FLOPs")] if figure_path and figure_path.is_file() else []
    return write_results("accel_ssl", "demo", data, scale=scale, command=command, figures=figs, notes=notes or None,
                         title="Demo: full length vs accelerated (Fashion-MNIST, CPU)", root=REPO if root is None else root)


def figure(rows: dict, path: Path, tb_dir: Path | None = None) -> None:
    """k-NN against training time (and against TFLOPs), full-length vs accelerated, one panel per framework."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(rows), figsize=(4.2 * len(rows), 6.4), squeeze=False)
    for j, (m, seeds) in enumerate(rows.items()):
        for s, r in seeds.items():
            for key, color, label in (("full_curve", "tab:blue", "full length"), ("accel_curve", "tab:orange", "accelerated")):
                t, f, acc = zip(*r[key])
                lab = f"{label}" if s == next(iter(seeds)) else None
                axes[0, j].plot(t, [100 * a for a in acc], "o-", ms=2.5, lw=1, color=color, alpha=0.8, label=lab)
                axes[1, j].plot(f, [100 * a for a in acc], "o-", ms=2.5, lw=1, color=color, alpha=0.8, label=lab)
            axes[0, j].axhline(100 * r["full"]["knn_top1"], color="gray", lw=0.5, ls=":")
        axes[0, j].set_title(f"{m} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})", fontsize=9)
        axes[0, j].set_xlabel("training time (s, eval/ckpt excluded)", fontsize=8)
        axes[1, j].set_xlabel("trunk TFLOPs", fontsize=8)
        for i in range(2):
            axes[i, j].set_ylabel("k-NN top-1 (%)", fontsize=8)
            axes[i, j].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    if tb_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(tb_dir)) as w:
            w.add_figure("demo/knn_vs_training_time", fig, close=False)
    plt.close(fig)


def merge(paths: list[str], fig: Path | None, overrides: list[str], results: bool = True) -> dict:
    rows: dict[str, dict] = {}
    raw = None
    for path in paths:
        data = json.loads(Path(path).read_text())
        raw = data["raw_pixel_knn"] if data.get("raw_pixel_knn") is not None else raw
        for m, seeds in data["rows"].items():
            for seed, r in seeds.items():
                r["full_curve"] = [tuple(x) for x in r["full_curve"]]
                r["accel_curve"] = [tuple(x) for x in r["accel_curve"]]
                rows.setdefault(m, {})[int(seed)] = r
    order = [m for m in ("mocov3", "simclr", "dino") if m in rows]
    rows = {m: dict(sorted(rows[m].items())) for m in order}
    md = table(rows, raw)
    out = Path(load_config("projects/accel_ssl/configs/demo_mocov3.yaml", overrides).run.root) / "accel_ssl"
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_table.md").write_text(md + "\n")
    (out / "demo_results.json").write_text(json.dumps({"raw_pixel_knn": raw, "rows": rows}, indent=2, default=str) + "\n")
    if fig is not None:
        figure(rows, fig, out / "demo_report")
    if results:
        write_demo_results(rows, raw, load_config("projects/accel_ssl/configs/demo_mocov3.yaml", overrides), fig)
    print("\n" + md + f"\n\nwritten to {out}/demo_table.md")
    return {"raw_pixel_knn": raw, "rows": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="mocov3,simclr,dino", help="comma-separated")
    p.add_argument("--seeds", default="0", help="comma-separated run.seed values (each seed: both runs)")
    p.add_argument("--config", default=None, help="a full-length config (default: the demo configs)")
    p.add_argument("--accel-config", default=None)
    p.add_argument("--schedule", default=DEMO_SCHEDULE, help="the demo's acceleration schedule (YAML list)")
    p.add_argument("--accel-epochs", type=float, default=2.0,
                   help="the accelerated run's epochs as a multiple of the full-length run's (its schedule spans them)")
    p.add_argument("--figure", default=str(FIGURE), help="where the accuracy-vs-time figure goes ('' for none)")
    p.add_argument("--merge", nargs="+", default=None, metavar="DEMO_RESULTS_JSON",
                   help="train nothing: merge the rows of earlier demo_results.json files (methods or seeds run in "
                        "separate processes) into one table and figure")
    p.add_argument("--only", choices=("full", "accel"), default=None,
                   help="train only this run of each pair (to run the two in parallel processes); then --collect")
    p.add_argument("--collect", action="store_true", help="train nothing: read the finished runs' folders")
    p.add_argument("--no-results", dest="results", action="store_false",
                   help="do not write projects/accel_ssl/results/demo.json (written when the demo table has all three "
                        "frameworks)")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    if a.merge:
        return merge(a.merge, Path(a.figure) if a.figure else None, a.overrides, results=a.results)
    seeds = [int(s) for s in a.seeds.split(",")]
    rows: dict[str, dict[int, dict]] = {}
    raw = None
    for seed in seeds:
        so = [*a.overrides, f"run.seed={seed}"]
        sfx = f"_s{seed}" if len(seeds) > 1 or seed != 0 else ""
        if a.config:
            full = load_config(a.config, [*so, f"run.name={load_config(a.config, so).run.name}{sfx}"])
            accel = (load_config(a.accel_config, [*so, f"run.name={load_config(a.accel_config, so).run.name}{sfx}"])
                     if a.accel_config else load_config(a.config, [*so, f"compression.schedule={a.schedule}",
                                                                    f"run.name={full.run.name}_accel"]))
            if a.only:
                train_main(full if a.only == "full" else accel)
                continue
            rows.setdefault(full.method.name, {})[seed] = run_pair(full, accel, train=not a.collect)
            continue
        for m in a.methods.split(","):
            if m not in ("mocov3", "simclr", "dino"):
                raise ValueError(f"--methods: unknown framework {m!r}")
            path = f"projects/accel_ssl/configs/demo_{m}.yaml"
            full = load_config(path, [*so, f"run.name=demo_{m}_full{sfx}"])
            epochs = full.optim.epochs * a.accel_epochs
            if epochs != int(epochs):
                raise ValueError(f"--accel-epochs {a.accel_epochs} gives {epochs} epochs: choose a whole number")
            accel = load_config(path, [*so, f"run.name=demo_{m}_accel{sfx}", f"compression.schedule={a.schedule}",
                                       f"optim.epochs={int(epochs)}"])
            if a.only:
                train_main(full if a.only == "full" else accel)
                continue
            rows.setdefault(m, {})[seed] = run_pair(full, accel, train=not a.collect)
    if a.only:
        return {}
    if full.data.dataset == "fashion_mnist":
        raw = raw_pixel_knn(full)
    md = table(rows, raw)
    out = Path(full.run.root) / "accel_ssl"
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_table.md").write_text(md + "\n")
    result = json.dumps({"raw_pixel_knn": raw, "rows": rows}, indent=2, default=str) + "\n"
    (out / "demo_results.json").write_text(result)
    (out / f"demo_results_{'-'.join(rows)}_s{'-'.join(map(str, seeds))}.json").write_text(result)  # for --merge
    if a.figure:
        figure(rows, Path(a.figure), out / "demo_report")
    if a.results and not a.config:
        write_demo_results(rows, raw, full, Path(a.figure) if a.figure else None)
    print("\n" + md + f"\n\nwritten to {out}/demo_table.md" + (f" and {a.figure}" if a.figure else ""))
    return {"raw_pixel_knn": raw, "rows": rows}


if __name__ == "__main__":
    main()
