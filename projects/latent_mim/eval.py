"""Frozen-feature evaluations of a pretrained encoder.

- ``nn_val``: the official monitor: features of the val images only, each classified by its
  nearest *other* val image (cosine, leave-one-out 1-NN);
- ``knn``: weighted k-NN with a train-split memory bank (DINO protocol, k 20, T 0.07);
- ``linear``: a linear probe on the same frozen features (shared.metrics.linear_probe).
The feature is the official one by default: mean of the patch tokens before the final LN (the
encoder's LN and projector are skipped), of the 224-px image without gaps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from shared.metrics.features import extract_features
from shared.metrics.knn import knn_accuracy
from shared.metrics.linear_probe import train_linear_probe
from projects.latent_mim.data import dataset, num_classes

FEATURES = ("patch_mean_prenorm", "patch_mean", "cls")


def encode(encoder, images: torch.Tensor, feature: str = "patch_mean_prenorm") -> torch.Tensor:
    """(B, C, H, W) -> (B, D) features of full images (no gaps)."""
    if feature not in FEATURES:
        raise ValueError(f"eval.feature must be one of {FEATURES}, got {feature!r}")
    tokens = encoder.tokens(images)
    if feature == "patch_mean_prenorm":
        return tokens[:, 1:].mean(1)
    tokens = encoder.norm(tokens)
    return tokens[:, 1:].mean(1) if feature == "patch_mean" else tokens[:, 0]


@torch.no_grad()
def extract(encoder, ds, device, batch_size: int, workers: int = 0, feature: str = "patch_mean_prenorm",
            amp: str = "bf16", desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    return extract_features(encoder, ds, device, batch_size, workers, amp, desc,
                            encode=lambda x: encode(encoder, x, feature))


def leave_one_out_nn(feats: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> float:
    """Top-1 of the official monitor: each sample takes the label of its most similar *other* sample
    (cosine). The official code takes the second of top-2, which is the same unless duplicates tie."""
    f = F.normalize(feats.float(), dim=1)
    correct = 0
    for i in range(0, len(f), chunk):
        sim = f[i:i + chunk] @ f.t()
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + i] = -float("inf")
        correct += int((labels[sim.argmax(1)] == labels[i:i + chunk]).sum())
    return correct / len(f)


def evaluate_encoder(encoder, cfg, device, what: tuple[str, ...] | None = None) -> dict:
    """{nn_val_top1, knn_top1, linear_top1} (those enabled in cfg.eval, or listed in ``what``)."""
    e = cfg.eval
    what = what or tuple(k for k, on in (("nn_val", e.nn_val), ("knn", e.knn), ("linear", e.linear_probe)) if on)
    out = {}
    if not what:
        return out
    val = dataset(cfg, "val", train_aug=False, size=e.val_size, seed_offset=1)
    fv, yv = extract(encoder, val, device, e.batch_size, cfg.data.num_workers, e.feature, cfg.train.amp, "features (val)")
    out["n_val"] = len(yv)
    if "nn_val" in what:
        out["nn_val_top1"] = leave_one_out_nn(fv, yv)
    if "knn" in what or "linear" in what:
        train = dataset(cfg, "train", train_aug=False, size=e.train_size, seed_offset=2)
        ft, yt = extract(encoder, train, device, e.batch_size, cfg.data.num_workers, e.feature, cfg.train.amp,
                         "features (train)")
        out["n_train"] = len(yt)
        c = num_classes(cfg)
        if "knn" in what:
            out["knn_top1"] = knn_accuracy(ft, yt, fv, yv, c, e.knn_k, e.knn_t)
        if "linear" in what:
            out["linear_top1"] = train_linear_probe(ft, yt, fv, yv, c, epochs=e.linear_probe_epochs,
                                                    seed=cfg.run.seed)["top1"]
    return out
