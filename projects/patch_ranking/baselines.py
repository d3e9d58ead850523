"""The baselines at the same token budget and location as the ranking methods (before block ``layer``,
K patch tokens left, CLS kept):

- random: K patches drawn uniformly per image (``pruning.random_scorer``);
- EViT (Liang et al., ICLR 2022): the patches with the highest CLS attention (mean over heads) in
  block ``layer``'s attention are kept, the others fused into one token (their average weighted by
  that attention). The fused token counts in the budget: K-1 attentive patches + 1 fused token.
  EViT fuses inside the block (after attention, before the MLP); here it happens at the block's
  input, with the attention block ``layer`` would compute, so every method changes the same sequence;
- ToMe (Bolya et al., ICLR 2023): bipartite soft matching on the keys (mean over heads) of block
  ``layer``'s attention; the r = N-K most similar (alternate-set) pairs are merged by size-weighted
  averaging (several rounds when r > N/2), and the later blocks use proportional attention
  (log(size) added to the attention logits). ToMe merges a few tokens in every block; here all of it
  happens at one location, to compare at the same budget.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from projects.patch_ranking.pruning import depth, embed, gather_patches, num_patches, pool_project, run_blocks


def _qk(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys [B, heads, L, hd] that ``block``'s attention computes on ``x``."""
    attn = block.attn
    y = block.ln_1(x)
    d = y.shape[-1]
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q = F.linear(y, w[:d], None if b is None else b[:d])
    k = F.linear(y, w[d:2 * d], None if b is None else b[d:2 * d])
    h = attn.num_heads
    split = lambda t: t.view(t.shape[0], t.shape[1], h, d // h).transpose(1, 2)  # noqa: E731
    return split(q), split(k)


def cls_attention(block: nn.Module, x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, n]: attention of CLS to each patch token in ``block`` (softmax over all keys, mean over heads)."""
    q, k = _qk(block, x)
    a = torch.softmax((q[:, :, :1].float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1]), dim=-1)
    return a[:, :, 0, 1:1 + n].mean(1)


def encode_image_evit(model: nn.Module, images: torch.Tensor, keep: int, layer: int = 3) -> torch.Tensor:
    visual = model.visual
    n = num_patches(visual)
    if not 2 <= keep <= n:
        raise ValueError(f"EViT keeps keep-1 attentive patches + 1 fused token; keep must be in 2..{n}, got {keep}")
    x = run_blocks(visual, embed(visual, images), 0, layer)
    if keep < n:
        attn = cls_attention(visual.transformer.resblocks[layer], x, n)
        top = torch.topk(attn, keep - 1, dim=1).indices.sort(dim=1).values
        dropped = torch.ones_like(attn, dtype=torch.bool).scatter_(1, top, False)
        w = (attn * dropped).unsqueeze(-1)
        fused = (x[:, 1:1 + n].float() * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1e-12)
        x = torch.cat([gather_patches(x, top, n), fused.to(x.dtype)], dim=1)
    x = run_blocks(visual, x, layer, depth(visual))
    return pool_project(visual, x)


def bipartite_merge(x: torch.Tensor, metric: torch.Tensor, size: torch.Tensor, r: int):
    """One ToMe round on patch tokens ``x`` [B, n, D] with matching features ``metric`` [B, n, C] and
    token sizes ``size`` [B, n]: set A = even positions, B = odd; every A token's most similar B token
    (cosine); the r best edges are merged into B by size-weighted mean. Returns (x, metric, size) with
    n - r tokens: the unmerged A tokens then the B tokens."""
    a_idx = torch.arange(0, x.shape[1], 2, device=x.device)
    b_idx = torch.arange(1, x.shape[1], 2, device=x.device)
    r = min(r, len(a_idx))
    if r <= 0:
        return x, metric, size
    m = F.normalize(metric.float(), dim=-1)
    scores = m[:, a_idx] @ m[:, b_idx].transpose(1, 2)
    node_max, node_idx = scores.max(dim=-1)
    edge = node_max.argsort(dim=-1, descending=True)
    src, unm = edge[:, :r], edge[:, r:]                      # A tokens merged / kept
    dst = torch.gather(node_idx, 1, src)                     # their B partners

    def take(t, idx):
        return torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))

    xa, xb = x[:, a_idx].float(), x[:, b_idx].float()
    ma, mb = metric[:, a_idx], metric[:, b_idx]
    sa, sb = size[:, a_idx].unsqueeze(-1), size[:, b_idx].unsqueeze(-1)
    xb_sum = (xb * sb).scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, xb.shape[-1]), take(xa * sa, src))
    sb_new = sb.scatter_add(1, dst.unsqueeze(-1), take(sa, src))
    mb_sum = (mb.float() * sb).scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, mb.shape[-1]), take(ma.float() * sa, src))
    x_out = torch.cat([take(xa, unm), xb_sum / sb_new], 1).to(x.dtype)
    m_out = torch.cat([take(ma.float(), unm), mb_sum / sb_new], 1).to(metric.dtype)
    s_out = torch.cat([take(sa, unm), sb_new], 1).squeeze(-1)
    return x_out, m_out, s_out


def tome_merge(x: torch.Tensor, block: nn.Module, keep: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS, K merged patch tokens, extra] and the token sizes [B, 1+K+extra]."""
    _, k = _qk(block, x)
    metric = k.mean(1)[:, 1:1 + n]
    patches, size = x[:, 1:1 + n], torch.ones(x.shape[0], n, device=x.device)
    while patches.shape[1] > keep:
        patches, metric, size = bipartite_merge(patches, metric, size, patches.shape[1] - keep)
    extra = x[:, 1 + n:]
    ones = torch.ones(x.shape[0], 1, device=x.device)
    sizes = torch.cat([ones, size, ones.expand(-1, extra.shape[1])], 1)
    return torch.cat([x[:, :1], patches, extra], 1), sizes


def proportional_mask(sizes: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """ToMe's proportional attention as an additive mask [B*heads, L, L]: log(size of key token)."""
    b, L = sizes.shape
    return sizes.log().to(dtype).view(b, 1, 1, L).expand(b, heads, L, L).reshape(b * heads, L, L)


def encode_image_tome(model: nn.Module, images: torch.Tensor, keep: int, layer: int = 3,
                      proportional_attention: bool = True) -> torch.Tensor:
    visual = model.visual
    n = num_patches(visual)
    if not 1 <= keep <= n:
        raise ValueError(f"ToMe keep must be in 1..{n}, got {keep}")
    x = run_blocks(visual, embed(visual, images), 0, layer)
    mask = None
    if keep < n:
        block = visual.transformer.resblocks[layer]
        x, sizes = tome_merge(x, block, keep, n)
        if proportional_attention:
            mask = proportional_mask(sizes, block.attn.num_heads, x.dtype)
    x = run_blocks(visual, x, layer, depth(visual), attn_mask=mask)
    return pool_project(visual, x)
