"""The minred demo: SimSiam on a correlated Fashion-MNIST stream (64-image single-class chunks, like
the videos of the paper's Kinetics stream) at equal compute, with

- sequential: conventional training on the correlated stream (num_updates epochs);
- decorrelated: conventional training on the shuffled stream (num_updates epochs);
- fifo / minred (/ reservoir): one pass over the correlated stream, num_updates batches per chunk;

then weighted k-NN and the LARS linear probe on the test set, beside the same network at random
init and the raw pixels; and a plot of the buffer's class histogram along the stream (FIFO vs MinRed).

    python -m projects.minred.reproduce [--settings sequential,decorrelated,fifo,minred] [key=value ...]

Writes runs/minred/demo_table.md, demo_results.json and buffer_classes.png.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from shared.config import load_config
from shared.run import run_dir_of
from projects.minred.data import eval_sets, probe_sets
from projects.minred.model import build_model
from projects.minred.probes import evaluate_backbone, evaluate_features
from projects.minred.train import main as train_main

SETTINGS = {
    "sequential": ["buffer.type=none", "data.stream=class_sequential"],
    "decorrelated": ["buffer.type=none", "data.stream=iid"],
    "fifo": ["buffer.type=fifo", "data.stream=class_sequential"],
    "minred": ["buffer.type=minred", "data.stream=class_sequential"],
    "reservoir": ["buffer.type=reservoir", "data.stream=class_sequential"],
}


def setting_config(path: str, name: str, overrides: list[str]):
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
    out["raw_pixels"] = {f"fashion_mnist/{k}": v for k, v in evaluate_features(pix[0], pix[1], 10, cfg).items()
                         if not k.startswith("_")}
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def classes_in_buffer(cfg) -> float:
    """Mean number of classes present in the buffer over the second half of the stream."""
    rows = [json.loads(x) for x in (run_dir_of(cfg) / "buffer_histogram.jsonl").read_text().splitlines()]
    rows = rows[len(rows) // 2:]
    return float(np.mean([sum(c > 0 for c in r["hist"]) for r in rows]))


def table(res: dict, base: dict) -> str:
    key = "fashion_mnist"
    out = ["| setting | steps | k-NN top-1 | linear top-1 | classes in buffer (2nd half) | train time (s) |",
           "|---|---|---|---|---|---|"]
    for name in ("raw_pixels", "random_init"):
        r = base[name]
        out.append(f"| {name.replace('_', ' ')} | - | {100 * r[key + '/knn_top1']:.2f} | "
                   f"{100 * r.get(key + '/linear_top1', float('nan')):.2f} | - | - |")
    for name, r in res.items():
        out.append(f"| {name} | {r['steps']} | {100 * r[key + '/knn_top1']:.2f} | "
                   f"{100 * r.get(key + '/linear_top1', float('nan')):.2f} | {r.get('classes_in_buffer', '-')} | "
                   f"{r['train_time_s']:.0f} |")
    return "\n".join(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="projects/minred/configs/demo.yaml")
    p.add_argument("--settings", default="minred,fifo,sequential,decorrelated", help="comma-separated")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
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
    md = table(res, base)
    (out / "demo_table.md").write_text(md + "\n")
    (out / "demo_results.json").write_text(json.dumps({"runs": res, "baselines": base}, indent=2, default=str) + "\n")
    if any(n in cfgs and cfgs[n].train.buffer_log_every for n in ("fifo", "minred")):
        plot_histograms({n: c for n, c in cfgs.items() if n in ("fifo", "minred", "reservoir")}, out / "buffer_classes.png")
    print("\n" + md + f"\n\nwritten to {out}/demo_table.md")
    return {"runs": res, "baselines": base}


if __name__ == "__main__":
    main()
