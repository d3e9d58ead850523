"""OneAVM's three objectives.

1. Localized audio-visual correspondence: EZ-VSL's multiple-instance contrastive loss.
2. Mix-and-separate: Sound-of-Pixels' mask loss (weighted BCE for binary masks, weighted L1 for ratio
   masks, averaged over the sources of the mixture).
3. Pixel-space image mixing: the mixed frame's local features against the batch's audio, with BOTH
   sources' audio as positives (a multi-positive InfoNCE with a target distribution over the audio).

All are computed in fp32 (the callers' autocast region ends before them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def av_scores(img_maps: torch.Tensor, aud: torch.Tensor, tau: float) -> torch.Tensor:
    """S[i, j] = max_p <v_i(p), a_j> / tau for (B, D, h, w) maps and (B', D) audio: (B, B')."""
    return torch.einsum("nchw,mc->nmhw", img_maps.float(), aud.float()).flatten(-2).amax(-1) / tau


def av_maps(img_maps: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
    """The localization map of each image with its own audio: <v_i(p), a_i>, (B, h, w)."""
    return torch.einsum("nchw,nc->nhw", img_maps.float(), aud.float())


def mil_contrastive_loss(img_maps: torch.Tensor, aud: torch.Tensor, tau: float = 0.03) -> torch.Tensor:
    """EZ-VSL: CE over audio for each image + CE over images for each audio (summed), with the
    max-over-locations score."""
    s = av_scores(img_maps, aud, tau)
    labels = torch.arange(s.shape[0], device=s.device)
    return F.cross_entropy(s, labels) + F.cross_entropy(s.t(), labels)


def mixing_targets(partner: torch.Tensor, lam: float, target: str = "lambda") -> torch.Tensor:
    """The (B, B) target distribution of mixed image i = lam * I_i + (1 - lam) * I_partner[i] over the
    batch's audio: ``lambda`` puts lam on a_i and 1 - lam on a_partner[i]; ``uniform`` 1/2 on each."""
    b = partner.shape[0]
    if target not in ("lambda", "uniform"):
        raise ValueError(f"mix.target must be lambda or uniform, got {target!r}")
    w_self = lam if target == "lambda" else 0.5
    t = torch.zeros(b, b, device=partner.device)
    idx = torch.arange(b, device=partner.device)
    t[idx, idx] += w_self
    t[idx, partner] += 1.0 - w_self
    return t


def multi_positive_contrastive_loss(mix_maps: torch.Tensor, aud: torch.Tensor, targets: torch.Tensor,
                                    tau: float = 0.03) -> torch.Tensor:
    """Soft-target InfoNCE in both directions with the max-over-locations score S[i, j] of mixed image i
    and audio j: -sum_j T[i, j] log softmax_j S[i, :] averaged over images, plus, for each audio j,
    -sum_i T'[j, i] log softmax_i S[:, j] with T' the column-normalised targets (the mixed images
    that contain source j). Each source can light up its own region because the max is per audio."""
    s = av_scores(mix_maps, aud, tau)
    img_to_aud = -(targets * F.log_softmax(s, dim=1)).sum(1).mean()
    col = targets.t()
    col_sum = col.sum(1, keepdim=True)
    has = col_sum.squeeze(1) > 0
    col = col / col_sum.clamp_min(1e-12)
    aud_to_img = -(col * F.log_softmax(s.t(), dim=1)).sum(1)[has].mean()
    return img_to_aud + aud_to_img


def separation_loss(mask_logits: torch.Tensor, gt_masks: torch.Tensor, weight: torch.Tensor,
                    kind: str = "bce", valid: torch.Tensor | None = None) -> torch.Tensor:
    """Sound-of-Pixels' loss. ``mask_logits`` and ``gt_masks`` (N, B, F, T), ``weight`` (B, F, T);
    ``bce``: weighted BCE of sigmoid(logits) against (binary) masks; ``l1``: weighted |sigmoid - gt|
    (SoP's ratio-mask setting, whose sigmoid output caps predicted ratios at 1). Per-source means,
    then the mean over sources. ``valid`` (B,) drops mixtures from the average (silent sources, a clip
    mixed with itself)."""
    w = weight.unsqueeze(0).expand_as(gt_masks).float()
    logits, gt = mask_logits.float(), gt_masks.float()
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, gt.clamp(0, 1), weight=w, reduction="none")
    elif kind == "l1":
        per = w * (torch.sigmoid(logits) - gt).abs()
    else:
        raise ValueError(f"separation loss must be bce or l1, got {kind!r}")
    per = per.flatten(2).mean(-1)  # (N, B)
    if valid is not None:
        if not bool(valid.any()):
            return per.sum() * 0.0
        per = per[:, valid]
    return per.mean(1).mean()
