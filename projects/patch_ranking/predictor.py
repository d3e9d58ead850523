"""Phase II: the lightweight predictor of the golden ranking, its soft target, loss and metric.

Predictor (official ``train_predictor.py``): the token features [B, 1+N, C] are average-pooled over
channels to 64 (AdaptiveAvgPool1d), mixed by one timm ``MixerBlock(64, 1+N)``, the CLS token is
dropped and a Linear(64 -> 1) gives one importance score per patch [B, N] (higher = keep).
The pooling has no parameters, so training caches the pooled features [B, 1+N, 64] only.

Input features (``predictor.features``):
- ``own`` (default): the pruned model's own tokens at the pruning layer (after blocks 0..L-1), so at
  inference the predictor costs one Mixer block on top of the pruned tower;
- ``timm``: the official variant, the last block's output (no final norm) of a separate timm CLIP ViT
  (``vit_base_patch16_clip_224``; timm's default tag is the LAION-2B, IN-12k/1k fine-tuned model,
  not OpenAI's CLIP), which at inference costs a whole second ViT.

Target: from the ranking (most important first), logits 0 except the last ``tail`` (50) positions p,
which get -5 - 0.1 * p (p = the position in the whole list, 146..195 for N = 196); softmax.
Loss: KL(target || softmax(scores)) summed over patches, averaged over the batch.
Metric: top-50 overlap, |50 lowest predicted scores ∩ last 50 of the ranking| / 50 * 100.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.mlp_mixer import MixerBlock


class MixerPredictor(nn.Module):
    def __init__(self, num_patches: int, pool_dim: int = 64):
        super().__init__()
        self.num_patches, self.pool_dim = num_patches, pool_dim
        self.pool = nn.AdaptiveAvgPool1d(pool_dim)
        self.mixer = MixerBlock(pool_dim, num_patches + 1)
        self.fc = nn.Linear(pool_dim, 1)

    def pool_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, 1+N(+extra), C] -> [B, 1+N, pool_dim] (float32): CLS and patch tokens, channels pooled."""
        return self.pool(tokens[:, :1 + self.num_patches].float())

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        if pooled.shape[1] != self.num_patches + 1:
            raise ValueError(f"the predictor scores {self.num_patches} patches + CLS, got {pooled.shape[1]} tokens "
                             "(it runs at the first pruning stage, on the full token set)")
        return self.fc(self.mixer(pooled)[:, 1:]).squeeze(-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool_features(tokens))


def soft_target(order: torch.Tensor, tail: int = 50) -> torch.Tensor:
    """[B, N] target distribution over patches from rankings ``order`` [B, N] (most important first)."""
    b, n = order.shape
    tail = min(tail, n)
    pos = torch.arange(n, dtype=torch.float32, device=order.device)
    by_pos = torch.where(pos >= n - tail, -5.0 - 0.1 * pos, torch.zeros_like(pos)).expand(b, -1)
    logits = torch.empty(b, n, device=order.device).scatter_(1, order, by_pos)
    return logits.softmax(dim=-1)


def ranking_kl_loss(scores: torch.Tensor, order: torch.Tensor, tail: int = 50) -> torch.Tensor:
    """KL(target || softmax(scores)), summed over patches, mean over the batch (fp32)."""
    target = soft_target(order, tail)
    return F.kl_div(F.log_softmax(scores.float(), dim=-1), target, reduction="sum") / scores.shape[0]


def top_overlap(scores: torch.Tensor, order: torch.Tensor, n: int = 50) -> torch.Tensor:
    """[B] % of the n lowest-scored patches that are among the last n of the golden ranking."""
    n = min(n, scores.shape[1])
    low = torch.topk(scores.float(), n, dim=1, largest=False).indices
    tail = order[:, -n:].to(low.device)
    hit = (low.unsqueeze(2) == tail.unsqueeze(1)).any(-1).sum(1)
    return hit.float() / n * 100.0


class TimmFeatures(nn.Module):
    """The official predictor input: the last block's tokens (before the final norm) of a timm ViT
    (``_intermediate_layers(img, n=10)[-1]`` in timm 0.9, i.e. the output of the last block)."""

    def __init__(self, name: str = "vit_base_patch16_clip_224", pretrained: str | None = None):
        super().__init__()
        import timm

        kw = {"pretrained": pretrained is not None, "num_classes": 0}
        if pretrained not in (None, "hub"):
            kw["pretrained_cfg_overlay"] = {"file": pretrained}
        self.vit = timm.create_model(name, **kw).eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        v = self.vit
        x = v.patch_embed(images)
        x = v._pos_embed(x)
        x = v.patch_drop(x)
        x = v.norm_pre(x)
        return v.blocks(x)
