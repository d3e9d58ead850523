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
from projects.accel_ssl.evaluate import evaluate_encoder
from projects.accel_ssl.frameworks import build_framework
from projects.accel_ssl.train import main as train_main

# compressed for the first 70 % of training, full length at the end (the shape the paper's analysis gives)
DEMO_SCHEDULE = "[{until: 0.7, patch: 8}, {until: 1.0}]"


def random_init_knn(cfg) -> float:
    torch.manual_seed(cfg.run.seed)
    return evaluate_encoder(build_framework(cfg).encoder(), cfg, torch.device("cpu"))["knn_top1"]


def run_pair(full_cfg, accel_cfg) -> dict:
    full, accel = train_main(full_cfg), train_main(accel_cfg)
    return {"random_init_knn": random_init_knn(full_cfg), "full": full, "accel": accel,
            "speedup_time": full["train_time_s"] / accel["train_time_s"],
            "speedup_flops": full["train_tflops"] / accel["train_tflops"],
            "knn_gap": accel["knn_top1"] - full["knn_top1"]}


def table(rows: dict) -> str:
    out = ["| framework | random init k-NN | full: k-NN | full: time (s) | accelerated: k-NN | accelerated: time (s) "
           "| speed-up (time) | speed-up (FLOPs) | k-NN gap |", "|---|---|---|---|---|---|---|---|---|"]
    for m, r in rows.items():
        out.append(f"| {m} | {100 * r['random_init_knn']:.2f} | {100 * r['full']['knn_top1']:.2f} | "
                   f"{r['full']['train_time_s']:.0f} | {100 * r['accel']['knn_top1']:.2f} | "
                   f"{r['accel']['train_time_s']:.0f} | {r['speedup_time']:.2f}x | {r['speedup_flops']:.2f}x | "
                   f"{100 * r['knn_gap']:+.2f} |")
    return "\n".join(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="mocov3,simclr,dino", help="comma-separated")
    p.add_argument("--config", default=None, help="a full-length config (default: the demo configs)")
    p.add_argument("--accel-config", default=None)
    p.add_argument("--schedule", default=DEMO_SCHEDULE, help="the demo's acceleration schedule (YAML list)")
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
            accel = load_config(path, [*a.overrides, f"run.name=demo_{m}_accel", f"compression.schedule={a.schedule}"])
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
