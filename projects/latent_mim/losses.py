"""Latent MIM's objectives, the pixel-MAE loss of the baseline, and the collapse monitors.

All take fp32 inputs (callers cast outside autocast) and return scalars.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_infonce_loss(pred: torch.Tensor, target: torch.Tensor, tau: float = 0.2, standardize: bool = True) -> torch.Tensor:
    """Patch discrimination within each image (the official ``infonce_patches``).

    pred, target: (B, N, D), prediction i belongs to target i. Predictions are first standardised
    across the N patches of their image (mean and unbiased std over the patch axis, + 1e-4), both
    sides are L2-normalised, and each prediction must pick its own target among the image's N
    targets with logits <pred_i, target_j> / tau. The mean cross-entropy is scaled by 2 * tau.
    Negatives never cross images: the loss does not depend on the batch composition.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must both be (B, N, D); got {tuple(pred.shape)} and {tuple(target.shape)}")
    b, n, _ = pred.shape
    if standardize:
        pred = (pred - pred.mean(1, keepdim=True)) / (pred.std(1, keepdim=True) + 1e-4)
    pred = F.normalize(pred, dim=-1)
    target = F.normalize(target, dim=-1)
    logits = pred @ target.transpose(1, 2) / tau  # (B, N, N)
    labels = torch.arange(n, device=pred.device).repeat(b)
    return F.cross_entropy(logits.flatten(0, 1), labels) * (2 * tau)


def norm_l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Direct regression (the official ``norm_l2``): MSE to targets layer-normalised per patch
    (unbiased variance, eps 1e-6), the failure mode the paper says collapses."""
    mean = target.mean(-1, keepdim=True)
    var = target.var(-1, keepdim=True)
    return F.mse_loss(pred, (target - mean) / (var + 1e-6) ** 0.5)


def avg_pairwise_sim(x: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over all (i, j) pairs of tokens of the same image, diagonal included,
    averaged over the batch: (B, N, D) -> scalar. 1 means every patch has the same direction."""
    x = F.normalize(x, dim=-1)
    return (x @ x.transpose(1, 2)).mean()


def avg_sim_regularizer(pred: torch.Tensor, vis: torch.Tensor, sim_target: float) -> torch.Tensor:
    """(S(pred) - s_t)^2 + (S(vis) - s_t)^2 (to be multiplied by ``avg_sim_coeff``)."""
    return (avg_pairwise_sim(pred) - sim_target) ** 2 + (avg_pairwise_sim(vis) - sim_target) ** 2


def pixel_mae_loss(pred: torch.Tensor, target_pixels: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """MAE: MSE on the masked patches' pixels, each patch normalised by its own mean and
    (unbiased) variance + 1e-6 when ``norm_pix`` (MAE's norm_pix_loss); averaged over masked patches."""
    if norm_pix:
        mean = target_pixels.mean(-1, keepdim=True)
        var = target_pixels.var(-1, keepdim=True)
        target_pixels = (target_pixels - mean) / (var + 1e-6) ** 0.5
    return ((pred - target_pixels) ** 2).mean()
