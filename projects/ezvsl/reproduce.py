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
from PIL import Image

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
    if cfg.model.image_weights is None:
        return
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


def figures(cfg, out_dir: Path) -> list[dict]:
    """AP50 of model selection per epoch (the headline curve) and the test heatmap grid, copied to the
    project's figures folder when this is the demo."""
    from shared.logging import read_metrics
    from shared.report import plot_xy, series

    run_dir = run_dir_of(cfg)
    records = read_metrics(run_dir)
    lines = {}
    for k, label in (("av", "AV"), ("obj", "OGL"), ("av_obj", "AV+OGL")):
        xs, ys = series(records, f"val/{k}_ciou_ap50", "train/epoch")
        if ys:
            lines[label] = (xs, [100 * y for y in ys])
    out = []
    if lines:
        path = out_dir / f"{cfg.run.name}_ap50_per_epoch.png"
        plot_xy(lines, path, xlabel="epoch", ylabel=f"cIoU AP50 (%) on {cfg.eval.selection} set",
                title=f"EZ-VSL {cfg.run.name}: model-selection AP50 per epoch")
        out.append({"path": str(path), "caption": "model-selection AP50 after each epoch"})
    for name in cfg.eval.test_sets[:1]:
        src = run_dir / "viz" / f"{name}_heatmaps.png"
        if src.is_file():  # a JPEG copy: the PNG grid is ~1 MB
            dst = out_dir / f"{cfg.run.name}_test_heatmaps.jpg"
            out_dir.mkdir(parents=True, exist_ok=True)
            Image.open(src).convert("RGB").save(dst, quality=85)
            out.append({"path": str(dst), "caption": f"{name}: frame + box, AV, OGL, AV+OGL heatmaps"})
    return out


def result_rows(results: dict, untrained: dict) -> list[dict]:
    rows = []
    for name, m in results["sets"].items():
        paper = m.get("paper_av_obj") or {}
        for label, r in (("EZ-VSL trained", m), ("same network untrained", untrained[name])):
            for k, v in (("av", "AV"), ("obj", "OGL"), ("av_obj", "AV+OGL")):
                for metric, mname in (("ciou_ap50", "cIoU AP50"), ("auc", "AUC")):
                    p_val = paper.get(metric) if k == "av_obj" and label == "EZ-VSL trained" else None
                    rows.append({"setting": f"{name} (n={r['n']})", "method": f"{label}, {v}", "metric": mname,
                                 "ours": round(100 * r[k][metric], 2),
                                 "paper": round(100 * p_val, 2) if p_val is not None else None})
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEMO_CONFIG)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    demo = Path(a.config).name == "demo.yaml"
    # the committed results and figures come from the demo as configured, never from a changed one
    official = demo and not a.overrides
    if demo and not any(o.startswith("data.root=") for o in a.overrides):
        prepare_demo(cfg)
    from projects.ezvsl.train import main as train_main

    results = train_main(cfg)
    untrained = baselines(cfg)
    md = table(results, untrained)
    run_dir = run_dir_of(cfg)
    (run_dir / "results_table.md").write_text(md + "\n")
    (run_dir / "baselines.json").write_text(json.dumps(untrained, indent=2) + "\n")
    out_dir = Path(__file__).parent / "figures" if official else run_dir / "figures"
    figs = figures(cfg, out_dir) if dist.is_main() else []
    if official and dist.is_main():
        from shared.report import write_results

        write_results("ezvsl", "demo", result_rows(results, untrained), command="make reproduce-ezvsl",
                      scale=f"generated demo set ({cfg.optim.epochs} epochs, {cfg.data.image_size} px, "
                            f"batch {cfg.optim.batch_size}, CPU)", figures=figs,
                      title="Demo (generated audio-visual set, CPU)")
    print("\n" + md + f"\n\nwritten to {run_dir}/results_table.md; heatmaps in {run_dir}/viz/")
    return {"trained": results, "untrained": untrained, "figures": figs}


if __name__ == "__main__":
    main()
