"""The minred demo: SimSiam on a correlated Fashion-MNIST stream (64-image single-class chunks, like
the videos of the paper's Kinetics stream) at equal compute, with

- sequential: conventional training on the correlated stream (num_updates epochs);
- decorrelated: conventional training on the shuffled stream (num_updates epochs);
- fifo / minred (/ reservoir): one pass over the correlated stream, num_updates batches per chunk;

then weighted k-NN and the LARS linear probe on the test set, beside the same network at random
init and the raw pixels; and a plot of the buffer's class histogram along the stream (FIFO vs MinRed).

    python -m projects.minred.reproduce [--settings sequential,decorrelated,fifo,minred] [key=value ...]
    python -m projects.minred.reproduce --paper-table [run.root=<dir>]   # the paper table only (no training)

Always writes runs/minred/demo_table.md, demo_results.json and the tables beside them
(demo_results_table.json/.md, paper_results_table.json/.md). The demo as configured (demo.yaml, the
default settings, no overrides) also writes the committed projects/minred/results/{demo,paper}.json
(``shared.report``: the README's ``results:`` blocks) and figures/buffer_classes.png; a changed demo
never does. The paper table has one row per number in the configs' ``paper:`` blocks, ours read from
that config's run folder (results.json; continual.json for the continual-ImageNet rows) or "not run".
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from shared.checkpoint import atomic_write_text
from shared.config import load_config
from shared.report import markdown_table, save_table
from shared.run import run_dir_of
from projects.minred.data import eval_sets, probe_sets
from projects.minred.model import build_model
from projects.minred.probes import evaluate_backbone, evaluate_features
from projects.minred.train import main as train_main

HERE = Path(__file__).resolve().parent
DEMO_CONFIG = HERE / "configs" / "demo.yaml"
CONFIGS = HERE / "configs"
FIGURES = HERE / "figures"
DEFAULT_SETTINGS = "minred,fifo,sequential,decorrelated"
FMNIST_CLASSES = 10
SETTINGS = {
    "sequential": ["buffer.type=none", "data.stream=class_sequential"],
    "decorrelated": ["buffer.type=none", "data.stream=iid"],
    "fifo": ["buffer.type=fifo", "data.stream=class_sequential"],
    "minred": ["buffer.type=minred", "data.stream=class_sequential"],
    "reservoir": ["buffer.type=reservoir", "data.stream=class_sequential"],
}
SETTING_NAMES = {"sequential": "sequential (conventional, correlated stream)",
                 "decorrelated": "decorrelated (conventional, shuffled stream)",
                 "fifo": "FIFO buffer, correlated stream", "minred": "MinRed buffer, correlated stream",
                 "reservoir": "reservoir buffer, correlated stream"}
ARCHS = {"resnet18": "ResNet-18", "resnet50": "ResNet-50"}
DATASETS = {"flickr": "Flickr-20M", "kinetics": "Kinetics-400 frames", "memmap": "continual ImageNet-21K"}
BUFFERS = {"fifo": "FIFO", "minred": "MinRed", "reservoir": "reservoir"}
LINEAR_KEYS = {"imnet_top1": ("imnet", "ImageNet linear top-1"), "inat_top1": ("inat", "iNat linear top-1")}
KNN, LINEAR = "k-NN top-1 (%)", "linear top-1 (%)"
CLASSES, TIME = f"classes in the buffer, of {FMNIST_CLASSES} (2nd-half mean)", "train time (s)"


def setting_config(path, name: str, overrides: list[str]):
    base = load_config(path, overrides)
    over = list(SETTINGS[name])
    if name in ("sequential", "decorrelated"):  # equal compute: as many epochs as the buffers' updates per chunk
        over.append(f"optim.epochs={base.buffer.num_updates}")
    return load_config(path, [*overrides, *over, f"run.name={base.run.name}_{name}"])


def baselines(cfg) -> dict:
    """Random-init network and raw pixels through the same k-NN and linear probe."""
    torch.manual_seed(cfg.run.seed)
    out = {"random_init": evaluate_backbone(build_model(cfg), cfg, torch.device("cpu"), probe_sets(cfg))}
    tr, te = eval_sets(cfg, "fashion_mnist")
    pix = [(torch.as_tensor(ds.images.reshape(len(ds.images), -1), dtype=torch.float32) / 255.0, ds.labels.long())
           for ds in (tr, te)]
    out["raw_pixels"] = {f"fashion_mnist/{k}": v for k, v in
                         evaluate_features(pix[0], pix[1], FMNIST_CLASSES, cfg).items() if not k.startswith("_")}
    return out


def plot_histograms(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("fifo", "minred", "reservoir") if n in runs]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, n in zip(axes[0], names):
        rows = [json.loads(x) for x in (run_dir_of(runs[n]) / "buffer_histogram.jsonl").read_text().splitlines()]
        h = np.array([r["hist"] for r in rows], dtype=float)
        h /= np.maximum(h.sum(1, keepdims=True), 1)
        im = ax.imshow(h.T, aspect="auto", cmap="viridis", vmin=0, vmax=0.5, interpolation="nearest",
                       extent=[0, len(rows), 9.5, -0.5])
        ticks = np.linspace(0, len(rows) - 1, 5).astype(int)
        ax.set_xticks(ticks + 0.5, [str(rows[t]["stream_pos"]) for t in ticks])
        ax.set_title(f"{n}: class share of the buffer (step {rows[0]['step']}-{rows[-1]['step']})")
        fig.colorbar(im, ax=ax, fraction=0.04)
        ax.set_xlabel("stream position (images arrived) at each record")
        ax.set_ylabel("class")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def classes_in_buffer(cfg) -> float:
    """Mean number of classes present in the buffer over the second half of the stream."""
    rows = [json.loads(x) for x in (run_dir_of(cfg) / "buffer_histogram.jsonl").read_text().splitlines()]
    rows = rows[len(rows) // 2:]
    return float(np.mean([sum(c > 0 for c in r["hist"]) for r in rows]))


# ------------------------------------------------------------------------------------- demo table
def _pct(x):
    return None if x is None else round(100 * x, 2)


def _row(method: str, metric: str, ours, paper=None, setting=None) -> dict:
    return {"setting": setting, "method": method, "metric": metric, "paper": paper, "ours": ours}


def _probe_rows(method: str, r: dict, key: str = "fashion_mnist") -> list[dict]:
    out = [_row(method, KNN, _pct(r[f"{key}/knn_top1"]))]
    if f"{key}/linear_top1" in r:
        out.append(_row(method, LINEAR, _pct(r[f"{key}/linear_top1"])))
    return out


def demo_rows(res: dict, base: dict, arch: str = "resnet18") -> list[dict]:
    """The demo as ``shared.report`` rows: raw pixels and random init, then per setting k-NN and linear
    top-1 (%), classes in the buffer (buffer settings) and training time."""
    rows = _probe_rows("raw pixels (28x28, same k-NN / probe)", base["raw_pixels"])
    rows += _probe_rows(f"random init {ARCHS.get(arch, arch)}", base["random_init"])
    for name, r in res.items():
        label = SETTING_NAMES[name]
        rows += _probe_rows(label, r)
        if r.get("classes_in_buffer") is not None:
            rows.append(_row(label, CLASSES, round(r["classes_in_buffer"], 2)))
        rows.append(_row(label, TIME, round(r["train_time_s"], 1)))
    return rows


def demo_scale(cfg, res: dict) -> str:
    d, o, b, e = cfg.data, cfg.optim, cfg.buffer, cfg.eval
    steps = sorted({r["steps"] for r in res.values()})
    return (f"Fashion-MNIST, {d.train_subset} training images as a class-sequential stream of {d.n_seq_samples}-image "
            f"single-class chunks; {ARCHS.get(cfg.model.arch, cfg.model.arch)} at {d.img_size} px, batch "
            f"{o.batch_size}, lr {o.lr}; buffer {b.size}, {b.num_updates} updates per chunk; "
            f"{'/'.join(map(str, steps))} SGD steps per run (conventional runs: {b.num_updates} epochs, the same "
            f"compute); weighted k-NN (k {e.knn_k}, T {e.knn_t}) and LARS linear probe ({e.lincls_epochs} epochs) "
            f"on {e.train_size} bank / {e.test_size} test images; CPU")


def demo_notes(res: dict, test_size: int) -> str:
    """One binomial standard error of the runs' mean k-NN accuracy on the test set: the noise level."""
    p = float(np.mean([r["fashion_mnist/knn_top1"] for r in res.values()]))
    se = 100 * math.sqrt(p * (1 - p) / test_size)
    return (f"One binomial standard error of a top-1 near {100 * p:.0f} % on {test_size} test images is "
            f"{se:.1f} points. Train time is the shared loop's clock (evaluation and checkpoints excluded) on "
            "this machine.")


# ------------------------------------------------------------------------------------ paper table
def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _at(xs, i):
    return None if xs is None or i >= len(xs) else round(float(xs[i]), 2)


def method_name(cfg) -> str:
    b = cfg.buffer
    if b.type != "none":
        size = f"{b.size // 1024}K" if b.size % 1024 == 0 else str(b.size)
        return f"{BUFFERS.get(b.type, b.type)} buffer {size}, {b.num_updates} updates per chunk"
    source = "decorrelated source" if cfg.data.dataset == "kinetics" and cfg.data.stream == "iid" else "conventional"
    return f"{source}, " + ("single pass" if cfg.optim.epochs == 1 else f"{cfg.optim.epochs} epochs")


def config_paper_rows(cfg, name: str) -> list[dict]:
    """One row per number of ``cfg.paper``, ours from the run folder (results.json, continual.json)."""
    run = run_dir_of(cfg)
    res, cont = _read_json(run / "results.json"), _read_json(run / "continual.json")
    setting = (f"{DATASETS.get(cfg.data.dataset, cfg.data.dataset)}, "
               f"{ARCHS.get(cfg.model.arch, cfg.model.arch)} ({name})")
    method, e = method_name(cfg), cfg.eval
    at_point = lambda i: f"{method}, at {100 * e.continual_points[i]:g} % of the stream"  # noqa: E731
    rows = []
    for key, value in cfg.paper.items():
        if key in LINEAR_KEYS:
            set_name, metric = LINEAR_KEYS[key]
            rows.append(_row(method, metric, _pct(res.get(f"{set_name}/linear_top1")), value, setting))
        elif key == "acc_25_50_75_100":
            _check_len(name, key, value, len(e.continual_points))
            rows += [_row(at_point(i), "IN-21K linear top-1", _at(cont.get("mean_acc"), i), v, setting)
                     for i, v in enumerate(value)]
        elif key.startswith("forgetting_D"):
            # split k is learned in part i of the stream; its forgetting is read after each later part
            k = int(key.removeprefix("forgetting_D"))
            i = list(e.continual_order).index(k)
            _check_len(name, key, value, len(e.continual_points) - i - 1)
            rows += [_row(at_point(i + 1 + j), f"forgetting of D{k} (points)",
                          _at(cont.get("forgetting", {}).get(f"D{k}"), j), v, setting) for j, v in enumerate(value)]
        else:
            raise ValueError(f"configs/{name}.yaml: paper key {key!r} has no metric name here (known: "
                             f"{sorted(LINEAR_KEYS)}, acc_25_50_75_100, forgetting_D<k>)")
    return rows


def _check_len(name: str, key: str, value, n: int) -> None:
    if len(value) != n:
        raise ValueError(f"configs/{name}.yaml: paper.{key} has {len(value)} values, the stream's points give {n}")


def paper_configs(overrides=()) -> list[tuple[str, object]]:
    """(name, config) of every runnable config with a ``paper:`` block (``_*.yaml`` are fragments)."""
    cfgs = [(p.stem, load_config(p, overrides)) for p in sorted(CONFIGS.glob("*.yaml")) if not p.name.startswith("_")]
    order = list(DATASETS)  # the paper's order: Flickr, Kinetics, continual ImageNet
    return sorted(((n, c) for n, c in cfgs if c.paper),
                  key=lambda nc: (order.index(nc[1].data.dataset) if nc[1].data.dataset in order else len(order), nc[0]))


def paper_rows(overrides=()) -> list[dict]:
    return [r for name, cfg in paper_configs(overrides) for r in config_paper_rows(cfg, name)]


def paper_scale(rows: list[dict]) -> str:
    settings = {r["setting"] for r in rows}
    run = {r["setting"] for r in rows if r["ours"] is not None}
    return (f"the paper's settings (official README tables), one config each in projects/minred/configs/; ours from "
            f"runs/minred/<config>/results.json (continual: continual.json after projects.minred.eval): "
            f"{len(run)} of {len(settings)} configs run")


# ----------------------------------------------------------------------------------------- writing
def write_paper_table(overrides, official: bool, out_dir: Path) -> list[dict]:
    rows = paper_rows(overrides)
    save_table("minred", "paper", rows, official, out_dir, scale=paper_scale(rows),
               command="python -m projects.minred.reproduce --paper-table",
               title="Paper tables (official README) and ours",
               notes="Linear top-1 (%) on the frozen backbone; forgetting in absolute points (our definition: README).")
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEMO_CONFIG))
    p.add_argument("--settings", default=DEFAULT_SETTINGS, help="comma-separated")
    p.add_argument("--paper-table", action="store_true",
                   help="train nothing: the paper table from the configs' paper: blocks and their run folders")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    official = not a.overrides
    if a.paper_table:
        out = Path(load_config(DEMO_CONFIG, a.overrides).run.root) / "minred"
        rows = write_paper_table(a.overrides, official, out)
        print(markdown_table(rows, pivot=True))
        return {"paper": rows}
    # the committed results and figure come from the demo as configured, never from a changed one
    official = official and Path(a.config).resolve() == DEMO_CONFIG and a.settings == DEFAULT_SETTINGS
    names = a.settings.split(",")
    for n in names:
        if n not in SETTINGS:
            raise ValueError(f"--settings: unknown setting {n!r} (have {sorted(SETTINGS)})")
    cfgs = {n: setting_config(a.config, n, a.overrides) for n in names}
    res = {}
    for n, cfg in cfgs.items():
        res[n] = train_main(cfg)
        if n in ("fifo", "minred", "reservoir") and cfg.train.buffer_log_every:
            res[n]["classes_in_buffer"] = round(classes_in_buffer(cfg), 2)
    base_cfg = next(iter(cfgs.values()))
    base = baselines(base_cfg)
    out = Path(base_cfg.run.root) / "minred"
    out.mkdir(parents=True, exist_ok=True)
    rows = demo_rows(res, base, base_cfg.model.arch)
    md = markdown_table(rows, pivot=True)
    atomic_write_text(out / "demo_table.md", md + "\n")
    atomic_write_text(out / "demo_results.json",
                      json.dumps({"runs": res, "baselines": base}, indent=2, default=str) + "\n")
    figures = []
    buffers = {n: c for n, c in cfgs.items() if n in ("fifo", "minred", "reservoir") and c.train.buffer_log_every}
    if buffers:
        fig = (FIGURES if official else out) / "buffer_classes.png"
        plot_histograms(buffers, fig)
        figures.append((str(fig), "class share of each buffer along the stream (FIFO vs MinRed)"))
    save_table("minred", "demo", rows, official, out, scale=demo_scale(base_cfg, res), figures=figures,
               command="make reproduce-minred  (= python -m projects.minred.reproduce)",
               title="Demo: buffers on a correlated Fashion-MNIST stream (CPU)",
               notes=demo_notes(res, base_cfg.eval.test_size))
    write_paper_table([o for o in a.overrides if o.startswith("run.root=")], official, out)
    print("\n" + md + f"\n\nwritten to {out}/demo_table.md" + (" and projects/minred/results/" if official else ""))
    return {"runs": res, "baselines": base, "rows": rows}


if __name__ == "__main__":
    main()
