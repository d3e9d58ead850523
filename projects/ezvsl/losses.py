from __future__ import annotations

import torch
import torch.nn.functional as F

from shared import dist


def mil_contrastive_loss(img_maps: torch.Tensor, aud_emb: torch.Tensor, tau: float = 0.03,
                         gather_negatives: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """EZ-VSL's multiple-instance contrastive loss (official ``max_xmil_loss``).

    S[i, j, h, w] = <v_i(h, w), a_j> / tau; s_ij = max over locations; the loss is
    CE(s, diag) + CE(s^T, diag), the two directions summed (not averaged).

    Args:
        img_maps: (B, C, H, W), L2-normalised over C at every location.
        aud_emb: (B, C), L2-normalised.
        gather_negatives: also contrast against the other ranks' samples (the official code uses
            only the local batch; this option is ours).
    Returns:
        loss and av_maps (B, H, W): the matching pairs' maps S[i, i] (divided by tau), detached.
    """
    img_maps, aud_emb = img_maps.float(), aud_emb.float()
    b = img_maps.shape[0]
    if gather_negatives and dist.is_dist():
        all_img, all_aud = dist.all_gather_with_grad(img_maps), dist.all_gather_with_grad(aud_emb)
        offset = dist.rank() * b
    else:
        all_img, all_aud, offset = img_maps, aud_emb, 0
    labels = torch.arange(b, device=img_maps.device) + offset
    # image i (local) against every audio j, and audio j (local) against every image i
    i2a = torch.einsum("nchw,mc->nmhw", img_maps, all_aud).flatten(-2).amax(-1) / tau
    a2i = torch.einsum("nchw,mc->mnhw", all_img, aud_emb).flatten(-2).amax(-1) / tau
    loss = F.cross_entropy(i2a, labels) + F.cross_entropy(a2i, labels)
    with torch.no_grad():
        av_maps = torch.einsum("nchw,nc->nhw", img_maps, aud_emb) / tau
    return loss, av_maps
