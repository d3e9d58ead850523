"""The accel_ssl demo: each framework pretrained on Fashion-MNIST at full length and with an
acceleration schedule, evaluated by weighted k-NN, against the same network at random init.

    python -m projects.accel_ssl.reproduce [--methods mocov3,simclr,dino] [key=value ...]
    python -m projects.accel_ssl.reproduce --config projects/accel_ssl/configs/mocov3_vitb16_in1k.yaml \
        --accel-config projects/accel_ssl/configs/mocov3_vitb16_in1k_accel.yaml data.root=$IMAGENET

Prints (and writes to runs/accel_ssl/demo_table.md) k-NN accuracy, training wall time, trunk
TFLOPs and the speed-up of the accelerated run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from shared.config import load_config
from shared.logging import read_metrics
from shared.run import run_dir_of
from projects.accel_ssl.evaluate import evaluate_encoder
from projects.accel_ssl.frameworks import build_framework
from projects.accel_ssl.train import main as train_main

# compressed for the first 70 % of training, full length at the end (the shape the paper's analysis gives);
# the accelerated run is given twice the epochs and evaluated along the way: the question is how soon
# it reaches the full-length run's accuracy.
DEMO_SCHEDULE = "[{until: 0.7, patch: 8}, {until: 1.0}]"


def random_init_knn(cfg) -> float:
    torch.manual_seed(cfg.run.seed)
    return evaluate_encoder(build_framework(cfg).encoder(), cfg, torch.device("cpu"))["knn_top1"]


def curve(cfg, final: dict) -> list[tuple[float, float, float]]:
    """(train time s, TFLOPs, k-NN) at every evaluation of a run, the final one included."""
    pts = [(m["budget/train_time_s"], m["budget/tflops"], m["eval/knn_top1"])
           for m in read_metrics(run_dir_of(cfg)) if "eval/knn_top1" in m and "budget/train_time_s" in m]
    return pts + [(final["train_time_s"], final["train_tflops"], final["knn_top1"])]


def time_to(points, target: float):
    """The first (time, TFLOPs) at which the k-NN accuracy reached ``target``, or None."""
    return next(((t, f) for t, f, acc in points if acc >= target), None)


def run_pair(full_cfg, accel_cfg) -> dict:
    """Both runs, and the accelerated run's time to reach the full-length run's final k-NN minus 1 point."""
    full, accel = train_main(full_cfg), train_main(accel_cfg)
    target = full["knn_top1"] - 0.01
    reached = time_to(curve(accel_cfg, accel), target)
    return {"random_init_knn": random_init_knn(full_cfg), "full": full, "accel": accel, "target_knn": target,
            "accel_curve": curve(accel_cfg, accel), "full_curve": curve(full_cfg, full),
            "accel_time_to_target_s": reached[0] if reached else None,
            "speedup_time": full["train_time_s"] / reached[0] if reached else None,
            "speedup_flops": full["train_tflops"] / reached[1] if reached else None,
            "knn_gap": accel["knn_top1"] - full["knn_top1"]}


def table(rows: dict) -> str:
    out = ["| framework | random init k-NN | full length: k-NN, time (s) | accelerated: final k-NN, time (s) "
           "| accelerated: time to full's k-NN - 1 pt | speed-up (time) | speed-up (FLOPs) |",
           "|---|---|---|---|---|---|---|"]
    for m, r in rows.items():
        reached = r["accel_time_to_target_s"]
        out.append(f"| {m} | {100 * r['random_init_knn']:.2f} | {100 * r['full']['knn_top1']:.2f}, "
                   f"{r['full']['train_time_s']:.0f} | {100 * r['accel']['knn_top1']:.2f}, {r['accel']['train_time_s']:.0f} | "
                   + (f"{reached:.0f} s | {r['speedup_time']:.2f}x | {r['speedup_flops']:.2f}x |" if reached else
                      "not reached | - | - |"))
    return "\n".join(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="mocov3,simclr,dino", help="comma-separated")
    p.add_argument("--config", default=None, help="a full-length config (default: the demo configs)")
    p.add_argument("--accel-config", default=None)
    p.add_argument("--schedule", default=DEMO_SCHEDULE, help="the demo's acceleration schedule (YAML list)")
    p.add_argument("--accel-epochs", type=float, default=2.0,
                   help="the accelerated run's epochs as a multiple of the full-length run's (its schedule spans them)")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    rows = {}
    if a.config:
        full = load_config(a.config, a.overrides)
        accel = load_config(a.accel_config, a.overrides) if a.accel_config else load_config(
            a.config, [*a.overrides, f"compression.schedule={a.schedule}", f"run.name={full.run.name}_accel"])
        rows[full.method.name] = run_pair(full, accel)
    else:
        for m in a.methods.split(","):
            if m not in ("mocov3", "simclr", "dino"):
                raise ValueError(f"--methods: unknown framework {m!r}")
            path = f"projects/accel_ssl/configs/demo_{m}.yaml"
            full = load_config(path, [*a.overrides, f"run.name=demo_{m}_full"])
            epochs = load_config(path, a.overrides).optim.epochs
            accel = load_config(path, [*a.overrides, f"run.name=demo_{m}_accel", f"compression.schedule={a.schedule}",
                                       f"optim.epochs={epochs * a.accel_epochs:g}"])
            rows[m] = run_pair(full, accel)
    md = table(rows)
    out = Path(full.run.root) / "accel_ssl"
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_table.md").write_text(md + "\n")
    (out / "demo_results.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print("\n" + md + f"\n\nwritten to {out}/demo_table.md")
    return rows


if __name__ == "__main__":
    main()
