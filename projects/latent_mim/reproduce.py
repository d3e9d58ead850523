"""The latent_mim demo: Latent MIM vs pixel MAE vs direct regression (norm_l2) on Fashion-MNIST at
equal steps, each probed (official leave-one-out 1-NN on val, weighted k-NN, linear probe) against
the same encoder at random init and against raw pixels; collapse monitors; patch-cluster figures.

    python -m projects.latent_mim.reproduce [key=value ...]              # the demo (CPU)
    python -m projects.latent_mim.reproduce --config projects/latent_mim/configs/in100_vitb16_300ep.yaml data.root=$IMAGENET

Writes runs/latent_mim/demo_table.md and demo_results.json. A finished run is not retrained: its
results.json is reused when its saved config equals the requested one (--retrain to redo).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from shared.checkpoint import CheckpointManager
from shared.config import config_diff, load_config, load_yaml
from shared.logging import read_metrics
from shared.metrics.knn import knn_accuracy
from shared.metrics.linear_probe import train_linear_probe
from shared.run import run_dir_of
from projects.latent_mim.data import dataset, num_classes
from projects.latent_mim.eval import evaluate_encoder, leave_one_out_nn
from projects.latent_mim.segmentation import save_segmentations
from projects.latent_mim.model import build_model
from projects.latent_mim.train import main as train_main

VARIANTS = {"latent_mim": [], "pixel_mae": ["model.method=mae"], "regression": ["loss.name=norm_l2"]}


def run_or_reuse(cfg, retrain: bool) -> dict:
    rd = run_dir_of(cfg)
    res, saved = rd / "results.json", rd / "config.yaml"
    if not retrain and res.is_file() and saved.is_file():
        changed = [d for d in config_diff(load_yaml(saved.read_text()), cfg.to_dict()) if not d.startswith("run.")]
        if not changed:
            return json.loads(res.read_text())
    return train_main(cfg)


def final_monitors(cfg) -> dict:
    """The last logged collapse monitors (avg pairwise cosine of predictions / visible / targets)."""
    keys = ("train/avg_sim_pred", "train/avg_sim_vis", "train/avg_sim_trg", "train/loss_main")
    last = {}
    for m in read_metrics(run_dir_of(cfg)):
        last.update({k: m[k] for k in keys if k in m})
    return last


def raw_pixel_probes(cfg) -> dict:
    """The same probes on the normalised pixels of the evaluation images."""
    e = cfg.eval

    def pixels(split, size, offset):
        ds = dataset(cfg, split, train_aug=False, size=size, seed_offset=offset)
        items = [ds[i] for i in range(len(ds))]
        return torch.stack([it["views"].flatten() for it in items]), torch.stack([it["label"] for it in items])

    fv, yv = pixels("val", e.val_size, 1)
    ft, yt = pixels("train", e.train_size, 2)
    c = num_classes(cfg)
    return {"nn_val_top1": leave_one_out_nn(fv, yv), "knn_top1": knn_accuracy(ft, yt, fv, yv, c, e.knn_k, e.knn_t),
            "linear_top1": train_linear_probe(ft, yt, fv, yv, c, epochs=e.linear_probe_epochs, seed=cfg.run.seed)["top1"]}


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table(rows: dict) -> str:
    out = ["| encoder | steps | LOO 1-NN (val) | k-NN (k 20) | linear probe | avg_sim pred / vis / trg | final loss |",
           "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        mon = r.get("monitors") or {}
        sims = " / ".join(f"{mon[k]:.2f}" if k in mon else "-" for k in
                          ("train/avg_sim_pred", "train/avg_sim_vis", "train/avg_sim_trg")) if mon else "-"
        loss = f"{mon['train/loss_main']:.3f}" if "train/loss_main" in mon else "-"
        out.append(f"| {name} | {r.get('steps', 0)} | {pct(r.get('nn_val_top1'))} | {pct(r.get('knn_top1'))} | "
                   f"{pct(r.get('linear_top1'))} | {sims} | {loss} |")
    return "\n".join(out)


METRICS = {"nn_val_top1": "LOO 1-NN (val) top-1 %", "knn_top1": "k-NN (k 20) top-1 %", "linear_top1": "linear probe top-1 %"}
PAPER = {"nn_val_top1": 50.1, "linear_top1": 72.0}  # official README, ViT-B/16 800 ep IN-1K (not this scale)


def write_report(rows: dict, cfg, table: str) -> None:
    """The shared results contract (projects/latent_mim/results/<table>.json), with the figure kept in
    projects/latent_mim/figures/ so the committed table can link it."""
    import shutil

    from shared.report import write_results

    out, figs = [], []
    for name, r in rows.items():
        for key, label in METRICS.items():
            if key in r:
                out.append({"method": name, "metric": label, "ours": 100 * r[key],
                            "paper": PAPER.get(key) if name == "latent_mim" else None,
                            "note": "paper: ViT-B/16, 800 IN-1K epochs" if name == "latent_mim" and key in PAPER else None})
        if r.get("segmentation_figure") and Path(r["segmentation_figure"]).is_file():
            dst = Path("projects/latent_mim/figures") / f"{table}_{name.split()[0].replace('_', '')}_segmentation.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(r["segmentation_figure"], dst)
            figs.append((str(dst), f"patch clusters (k={cfg.eval.segmentation_clusters}): {name}"))
    o, m = cfg.optim, cfg.model
    scale = (f"{cfg.data.dataset}, {cfg.data.train_subset or 'all'} train images, {o.epochs} epochs x batch "
             f"{o.batch_size * o.accum_iter}, ViT {m.arch} (dim {m.dim}, depth {m.depth}), grid {m.grid_size}, gap "
             f"{m.patch_gap}, {m.num_vis} visible; equal steps for the three methods; CPU")
    write_results("latent_mim", table, out, scale=scale, command="python -m projects.latent_mim.reproduce",
                  title="Latent MIM vs pixel MAE vs regression, frozen-feature probes", figures=figs)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="projects/latent_mim/configs/demo.yaml")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {list(VARIANTS)}")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--no-report", action="store_true",
                   help="do not write projects/latent_mim/results/<name>.json (the committed table) and its figures")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    base = load_config(a.config, a.overrides)
    rows, cfg0 = {}, None
    for v in a.variants.split(","):
        if v not in VARIANTS:
            raise ValueError(f"--variants: unknown {v!r} (choose from {list(VARIANTS)})")
        name = base.run.name if v == "latent_mim" else f"{base.run.name}_{'mae' if v == 'pixel_mae' else v}"
        cfg = load_config(a.config, [*a.overrides, *VARIANTS[v], f"run.name={name}", "eval.segmentation_images=0"])
        cfg0 = cfg0 or cfg
        res = run_or_reuse(cfg, a.retrain)
        res["monitors"] = final_monitors(cfg)
        rows[v] = res
        if v == "latent_mim" and base.eval.segmentation_images:
            model = build_model(cfg)
            model.load_state_dict(CheckpointManager(run_dir_of(cfg)).load_latest()["model"])
            res["segmentation_figure"] = str(save_segmentations(model.encoder, base, torch.device("cpu"),
                                                                run_dir_of(cfg)))
    torch.manual_seed(base.run.seed)
    rand = build_model(cfg0)
    rows["random init (same encoder)"] = evaluate_encoder(rand.encoder, cfg0, torch.device("cpu"))
    if base.eval.segmentation_images:
        rows["random init (same encoder)"]["segmentation_figure"] = str(
            save_segmentations(rand.encoder, base, torch.device("cpu"), Path(base.run.root) / "latent_mim" / "random_init"))
    rows["raw pixels"] = raw_pixel_probes(cfg0)
    md = table(rows)
    out = Path(base.run.root) / "latent_mim"
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_table.md").write_text(md + "\n")
    (out / "demo_results.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    if not a.no_report:
        write_report(rows, cfg0, base.run.name)
    print("\n" + md + f"\n\nwritten to {out}/demo_table.md")
    return rows


if __name__ == "__main__":
    main()
