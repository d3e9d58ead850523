"""The whole EZ-VSL pipeline and its results table.

    python -m projects.ezvsl.reproduce                      # demo: generate data, pretrain, train, evaluate
    python -m projects.ezvsl.reproduce --config projects/ezvsl/configs/flickr10k.yaml data.root=$DATA_ROOT

Beside the trained model it evaluates the same network untrained (its initialisation) and OGL
alone, and prints one table: our AP50/AUC for AV, OGL and AV+OGL against the paper's AV+OGL.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from shared import dist
from shared.config import load_config
from shared.run import run_dir_of

log = logging.getLogger(__name__)
DEMO_CONFIG = "projects/ezvsl/configs/demo.yaml"


def prepare_demo(cfg) -> None:
    """Demo data and the stand-in 'ImageNet' weights, written once."""
    from shared.data.demo_av import generate
    from projects.ezvsl.pretrain_demo import pretrain

    generate(cfg.data.root)
    weights = Path(cfg.model.image_weights)
    if not weights.is_file():
        info = pretrain(cfg.data.root, weights, image_size=cfg.data.image_size)
        print(f"pretrained the demo image encoder: object-class accuracy {100 * info['val_accuracy']:.1f}% -> {weights}")


def baselines(cfg) -> dict:
    """The untrained network and OGL alone on every test set."""
    from projects.ezvsl.eval import eval_loader, evaluate
    from projects.ezvsl.model import EZVSL, ObjectSaliency

    device = dist.init(cfg.run.device).device
    torch.manual_seed(cfg.run.seed)
    model = EZVSL(cfg.model.out_dim, cfg.model.image_weights).to(device)
    ogl = ObjectSaliency(cfg.model.ogl_weights).to(device)
    out = {}
    for name in cfg.eval.test_sets:
        out[name] = evaluate(model, ogl, eval_loader(cfg, name), device, cfg.eval.alpha, cfg.loss.tau,
                             cfg.train.amp, desc=f"untrained {name}")
    return out


def table(results: dict, untrained: dict) -> str:
    rows = ["| test set | model | AV AP50 | AV AUC | OGL AP50 | OGL AUC | AV+OGL AP50 | AV+OGL AUC | paper AV+OGL AP50 / AUC |",
            "|---|---|---|---|---|---|---|---|---|"]
    pct = lambda m, k, n: f"{100 * m[k][n]:.2f}"
    for name, m in results["sets"].items():
        paper = m.get("paper_av_obj")
        paper_s = f"{100 * paper['ciou_ap50']:.2f} / {100 * paper['auc']:.2f}" if paper else "-"
        for label, r in (("trained", m), ("untrained", untrained[name])):
            rows.append(f"| {name} (n={r['n']}) | {label} | {pct(r, 'av', 'ciou_ap50')} | {pct(r, 'av', 'auc')} | "
                        f"{pct(r, 'obj', 'ciou_ap50')} | {pct(r, 'obj', 'auc')} | {pct(r, 'av_obj', 'ciou_ap50')} | "
                        f"{pct(r, 'av_obj', 'auc')} | {paper_s if label == 'trained' else ''} |")
    return "\n".join(rows)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEMO_CONFIG)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    if Path(a.config).name == "demo.yaml":
        prepare_demo(cfg)
    from projects.ezvsl.train import main as train_main

    results = train_main(cfg)
    untrained = baselines(cfg)
    md = table(results, untrained)
    run_dir = run_dir_of(cfg)
    (run_dir / "results_table.md").write_text(md + "\n")
    (run_dir / "baselines.json").write_text(json.dumps(untrained, indent=2) + "\n")
    print("\n" + md + f"\n\nwritten to {run_dir}/results_table.md; heatmaps in {run_dir}/viz/")
    return {"trained": results, "untrained": untrained}


if __name__ == "__main__":
    main()
