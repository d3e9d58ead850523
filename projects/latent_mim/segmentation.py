"""Unsupervised segmentation by clustering an image's patch features (the paper's visualisation):
agglomerative (Ward) clustering of the L2-normalised patch tokens of one image into k clusters,
the cluster map shown beside the image.

    python -m projects.latent_mim.segmentation --config CFG --checkpoint CKPT [--images 8 --clusters 4]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.config import load_config
from projects.latent_mim.data import _stats, dataset


def cluster_patches(tokens: torch.Tensor, k: int) -> np.ndarray:
    """(N, D) patch features of one image -> (N,) cluster ids in [0, k)."""
    from sklearn.cluster import AgglomerativeClustering

    if not 1 <= k <= tokens.shape[0]:
        raise ValueError(f"cannot make {k} clusters of {tokens.shape[0]} patches")
    x = F.normalize(tokens.float(), dim=-1).cpu().numpy()
    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)


@torch.no_grad()
def segment(encoder, images: torch.Tensor, k: int) -> np.ndarray:
    """(B, C, H, W) -> (B, grid, grid) cluster maps from the pre-final-LN patch tokens."""
    encoder.eval()
    tokens = encoder.tokens(images)[:, 1:]
    g = encoder.grid
    return np.stack([cluster_patches(t, k).reshape(g, g) for t in tokens])


def save_segmentations(encoder, cfg, device, out_dir: Path, n: int | None = None, k: int | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = n or cfg.eval.segmentation_images
    k = k or cfg.eval.segmentation_clusters
    ds = dataset(cfg, "val", train_aug=False, size=n, seed_offset=3)
    items = [ds[i] for i in range(len(ds))]
    imgs = torch.stack([it["views"] for it in items]).to(device)
    maps = segment(encoder, imgs, k)
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in _stats(cfg))
    fig, axes = plt.subplots(2, len(items), figsize=(1.6 * len(items), 3.4), squeeze=False)
    for i, it in enumerate(items):
        img = (it["views"] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        axes[0, i].imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
        axes[1, i].imshow(maps[i], cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
        for a in axes[:, i]:
            a.axis("off")
    fig.suptitle(f"patch clusters (k={k}) of the encoder's patch tokens", fontsize=8)
    out = Path(out_dir) / "segmentation.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv=None) -> Path:
    from projects.latent_mim.convert import load_encoder_state
    from projects.latent_mim.model import build_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", default=None, help="our checkpoint (default: random init)")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--clusters", type=int, default=4)
    p.add_argument("--out", default=None)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    model = build_model(cfg)
    if a.checkpoint:
        model.encoder.load_state_dict(load_encoder_state(a.checkpoint))
    out = save_segmentations(model.encoder, cfg, torch.device("cpu"), Path(a.out or Path(cfg.run.root) / "latent_mim"),
                             a.images, a.clusters)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
