"""EZ-VSL evaluation (official ``test.py``): AV-only, OGL-only and AV+OGL localization on a test set.

    python -m projects.ezvsl.eval --config projects/ezvsl/configs/flickr10k.yaml [eval.checkpoint=PATH] [key=value ...]

Maps are upsampled to 224x224 (bilinear, align_corners=True), min-max normalised per image,
AV+OGL = minmax(alpha * AV + (1 - alpha) * OGL) with alpha 0.4; cIoU at the median threshold;
AP50, AUC and mean cIoU (shared.metrics.localization).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from shared.amp import autocast
from shared.checkpoint import CheckpointManager, load_weights
from shared.config import config_arg_parser, load_config
from shared.data.robust import BadSampleMonitor, collate_skipping_bad
from shared.logging import progress
from shared.metrics.localization import ciou, minmax, summarize, upsample_maps
from shared.run import run_dir_of
from projects.ezvsl.data import IMAGENET_MEAN, IMAGENET_STD, eval_set
from projects.ezvsl.model import EZVSL, ObjectSaliency

log = logging.getLogger(__name__)
VARIANTS = ("av", "obj", "av_obj")


def load_for_eval(cfg, model: EZVSL) -> str:
    """Load eval.checkpoint into ``model``: 'best' / 'last' of this run, 'init' (untrained), or a path
    (ours, or an official release file with the weights under 'model')."""
    which = cfg.eval.checkpoint
    ckpt_dir = run_dir_of(cfg) / "checkpoints"
    if which == "init":
        model.load_state_dict(EZVSL(cfg.model.out_dim, cfg.model.image_weights).state_dict())
        return "init"
    if which == "best":
        path = ckpt_dir / "best.pt"
    elif which == "last":
        path = CheckpointManager(run_dir_of(cfg)).latest_path()
        if path is None:
            raise FileNotFoundError(f"no checkpoint in {ckpt_dir}; train first")
    else:
        path = which
    model.load_state_dict(load_weights(path, key="model", project="ezvsl"))
    return str(path)


def eval_loader(cfg, name: str) -> DataLoader:
    ds = eval_set(cfg, name)
    return DataLoader(ds, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=cfg.data.num_workers,
                      collate_fn=collate_skipping_bad, pin_memory=torch.cuda.is_available())


@torch.no_grad()
def evaluate(model, ogl, loader: DataLoader, device: torch.device, alpha: float = 0.4, tau: float = 0.03,
             amp: str = "none", n_viz: int = 0, viz_path: Path | None = None, max_bad_fraction: float = 0.0,
             desc: str = "eval", upsample: tuple[str, bool] = ("bilinear", True)) -> dict:
    """Metrics of each variant ({'av','obj','av_obj'} -> summary dict); ``model=None`` gives OGL only.

    ``upsample``: (mode, align_corners) of the 7x7 -> 224 resize; the official test script uses
    bilinear/True, its per-epoch validation bicubic/False.
    """
    if model is not None:
        model.eval()
    ogl.eval()
    cious = {v: [] for v in VARIANTS if model is not None or v == "obj"}
    viz = []
    bad = BadSampleMonitor(max_bad_fraction, name=desc)
    for batch in progress(loader, desc=desc):
        bad.update(len(batch.get("index", [])), batch["bad"])
        if "image" not in batch:
            continue
        image = batch["image"].to(device, non_blocking=True)
        with autocast(device, amp):  # the encoders may run in bf16; the maps are made in fp32 below
            obj = ogl(image)
            if model is not None:
                img, aud = model(image, batch["spec"].to(device, non_blocking=True))
        maps = {"obj": upsample_maps(obj, 224, *upsample)}
        if model is not None:
            av = torch.einsum("nchw,nc->nhw", img.float(), aud.float()) / tau
            maps["av"] = upsample_maps(av, 224, *upsample)
        gt = batch["gt_map"].numpy()
        for i in range(len(gt)):
            pred = {k: minmax(m[i]) for k, m in maps.items()}
            if model is not None:
                pred["av_obj"] = minmax(pred["av"] * alpha + pred["obj"] * (1 - alpha))
            for k in cious:
                cious[k].append(ciou(pred[k], gt[i]))
            if len(viz) < n_viz:
                viz.append((batch["image"][i], gt[i], pred))
    if bad.bad:
        log.warning("%s: %d unreadable samples left out of the metrics", desc, len(bad.bad))
    out = {k: summarize(v) for k, v in cious.items()}
    out["n"] = len(next(iter(cious.values())))
    out["bad_samples"] = len(bad.bad)
    if viz and viz_path is not None:
        save_heatmaps(viz, viz_path)
    return out


def save_heatmaps(items, path: Path) -> None:
    """One row per image: the frame with its gt map, then each variant's heatmap overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["gt"] + [k for k in VARIANTS if k in items[0][2]]
    fig, axes = plt.subplots(len(items), len(cols), figsize=(2.2 * len(cols), 2.2 * len(items)), squeeze=False)
    for r, (image, gt, pred) in enumerate(items):
        rgb = (image.permute(1, 2, 0).numpy() * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)).clip(0, 1)
        rgb = np.asarray(torch.nn.functional.interpolate(torch.from_numpy(rgb).permute(2, 0, 1)[None], size=gt.shape,
                                                         mode="bilinear", align_corners=False)[0].permute(1, 2, 0))
        for c, col in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(rgb.clip(0, 1))
            if col == "gt":
                ax.imshow(gt, cmap="Greens", alpha=0.45, vmin=0, vmax=1)
            else:
                ax.imshow(pred[col], cmap="jet", alpha=0.5, vmin=0, vmax=1)
                ax.contour(gt, levels=[0.25], colors="white", linewidths=1)
                ax.set_xlabel(f"cIoU {ciou(pred[col], gt):.2f}", fontsize=8)
            if r == 0:
                ax.set_title({"gt": "frame + gt", "av": "AV", "obj": "OGL", "av_obj": "AV+OGL"}[col], fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def with_paper(cfg, name: str, metrics: dict) -> dict:
    paper = cfg.paper.get(name) if cfg.paper else None
    return {**metrics, "paper_av_obj": dict(paper) if paper else None}


def main(argv=None) -> dict:
    from shared import dist

    p = config_arg_parser(__doc__)
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    logging.basicConfig(level=logging.INFO)
    device = dist.init(cfg.run.device).device
    model = EZVSL(cfg.model.out_dim, None).to(device)
    source = load_for_eval(cfg, model)
    ogl = ObjectSaliency(cfg.model.ogl_weights).to(device)
    run_dir = run_dir_of(cfg)
    results = {"config": cfg.run.name, "checkpoint": source, "sets": {}}
    for name in cfg.eval.test_sets:
        m = evaluate(model, ogl, eval_loader(cfg, name), device, cfg.eval.alpha, cfg.loss.tau, cfg.train.amp,
                     cfg.eval.n_visualizations, run_dir / "viz" / f"{name}_heatmaps.png",
                     cfg.data.max_bad_fraction, desc=name)
        results["sets"][name] = with_paper(cfg, name, m)
        print(format_row(name, m))
    out = run_dir / "eval_results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return results


def format_row(name: str, m: dict) -> str:
    parts = [f"{k}: AP50 {100 * m[k]['ciou_ap50']:.2f} AUC {100 * m[k]['auc']:.2f} mean {100 * m[k]['mean_ciou']:.2f}"
             for k in VARIANTS if k in m]
    return f"[{name}] n={m['n']} | " + " | ".join(parts)


if __name__ == "__main__":
    main()
