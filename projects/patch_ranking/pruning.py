"""Token pruning inside open_clip's image tower (the ViT of CLIP).

The tower is run in three pieces so that patch tokens can be removed between blocks:

    x = embed(visual, images)                       # conv1, CLS, positional embedding, ln_pre: [B, 1+N, D]
    x = run_blocks(visual, x, 0, L)                 # resblocks[:L]
    x = gather_patches(x, keep_index)               # CLS + K patches per image (each its own positions)
    x = run_blocks(visual, x, L, depth)             # resblocks[L:] on the shorter sequence
    feats = pool_project(visual, x)                 # ln_post(CLS) @ proj = what encode_image returns

``layer = L = 3`` prunes before resblock 3 (0-based), i.e. after three full blocks, as the official
``PRUNING_LOC = [3]``. Token layout everywhere: [CLS, patch tokens, extra tokens], where the extra
tokens are IVLP visual prompts (``n_extra``; kept at every stage, replaced at deep layers) or an
EViT fused token. Baselines at the same budget and location live in ``baselines.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn


def check_vit(visual: nn.Module) -> None:
    """The tower must be open_clip's VisionTransformer with CLS pooling (OpenAI CLIP's layout)."""
    missing = [a for a in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post")
               if not hasattr(visual, a)]
    if missing:
        raise TypeError(f"token pruning needs open_clip's VisionTransformer image tower; {type(visual).__name__} "
                        f"has no {missing} (ResNet CLIPs cannot be pruned by tokens)")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise ValueError("token pruning supports CLS-token pooling only (OpenAI CLIP ViTs); this tower uses "
                         f"pool_type={getattr(visual, 'pool_type', None)!r} / attention pooling")
    if getattr(visual, "final_ln_after_pool", False):
        raise ValueError("final_ln_after_pool towers are not supported")


def grid_size(visual: nn.Module) -> tuple[int, int]:
    g = visual.grid_size
    return (int(g[0]), int(g[1])) if isinstance(g, (tuple, list)) else (int(g), int(g))


def num_patches(visual: nn.Module) -> int:
    gh, gw = grid_size(visual)
    return gh * gw


def depth(visual: nn.Module) -> int:
    return len(visual.transformer.resblocks)


def embed(visual: nn.Module, images: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 1+N(+P), D]: patch embedding, CLS, positional embedding, then (IVLP) the shallow visual
    prompts appended after the positional embedding, then ln_pre, exactly as VisionTransformer._embeds
    (patch dropout is a training-time no-op in eval mode and is not applied)."""
    check_vit(visual)
    w = visual.conv1.weight
    x = visual.conv1(images.to(device=w.device, dtype=w.dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    if prompts is not None:
        x = torch.cat([x, prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
    return visual.ln_pre(x)


def run_blocks(visual: nn.Module, x: torch.Tensor, start: int, end: int, deep_prompts: Sequence[torch.Tensor] = (),
               attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """resblocks[start:end] on batch-first tokens. ``deep_prompts[j]`` replaces the last P tokens before
    block j+1 (IVLP/VPT-deep: block 0 sees the shallow prompts from ``embed``). ``attn_mask``: an
    additive float mask [B*heads, L, L] (ToMe's proportional attention) or None."""
    blocks = visual.transformer.resblocks
    if not 0 <= start <= end <= len(blocks):
        raise ValueError(f"blocks {start}:{end} out of range for a tower of depth {len(blocks)}")
    for i in range(start, end):
        if 1 <= i <= len(deep_prompts):
            p = deep_prompts[i - 1]
            x = torch.cat([x[:, :x.shape[1] - p.shape[0]], p.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], 1)
        x = blocks[i](x, attn_mask=attn_mask)
    return x


def pool_project(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ln_post, the CLS token, the projection: VisionTransformer._pool for pool_type 'tok'."""
    pooled = visual.ln_post(x)[:, 0]
    return pooled @ visual.proj if visual.proj is not None else pooled


def gather_patches(x: torch.Tensor, keep: torch.Tensor, n_patches: int | None = None) -> torch.Tensor:
    """[CLS, x_patches[keep], extra tokens]: ``keep`` [B, K] indexes the current patch tokens (0..n-1,
    ``n_patches`` of them; the tokens after them are extra tokens, carried over)."""
    if keep.dim() != 2 or keep.shape[0] != x.shape[0]:
        raise ValueError(f"keep_index must be [B, K] with B = {x.shape[0]}, got {tuple(keep.shape)}")
    n = x.shape[1] - 1 if n_patches is None else n_patches
    keep = keep.to(x.device).long()
    if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= n):
        raise ValueError(f"keep_index must be patch indices in 0..{n - 1}, got range "
                         f"[{int(keep.min())}, {int(keep.max())}]")
    patches = torch.gather(x[:, 1:1 + n], 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return torch.cat([x[:, :1], patches, x[:, 1 + n:]], dim=1)


def encode_image_pruned(model: nn.Module, images: torch.Tensor, keep_index: torch.Tensor, layer: int = 3) -> torch.Tensor:
    """``model.encode_image(images)`` with only CLS and the patches ``keep_index`` [B, K] (indices in
    0..N-1, per image) passed from block ``layer`` on. Equals ``encode_image`` when every patch is kept."""
    visual = model.visual
    n = num_patches(visual)
    if not 0 <= layer <= depth(visual):
        raise ValueError(f"pruning layer {layer} out of range 0..{depth(visual)}")
    x = run_blocks(visual, embed(visual, images), 0, layer)
    x = gather_patches(x, keep_index, n)
    x = run_blocks(visual, x, layer, depth(visual))
    return pool_project(visual, x)


# ---- several stages, with a selection rule ------------------------------------------------------

@dataclass
class Stage:
    layer: int          # prune before this resblock (0-based)
    keep: float | int   # patches kept: <= 1 a ratio of the original N (1 = all), > 1 a count


def parse_stages(stages, n: int, n_layers: int) -> list[tuple[int, int]]:
    """[(layer, kept count)] from config entries ``[layer, keep]`` (keep <= 1: a ratio of the ORIGINAL
    patch count, so 1 keeps all; keep > 1: a count); layers strictly increasing, counts non-increasing."""
    out = []
    for s in stages:
        layer, keep = (s.layer, s.keep) if isinstance(s, Stage) else (s[0], s[1])
        layer = int(layer)
        k = keep_count(keep, n) if float(keep) <= 1.0 else int(keep)
        if float(keep) > 1.0 and int(keep) != float(keep):
            raise ValueError(f"stage {s}: a kept count must be a whole number, got {keep}")
        if not 1 <= k <= n:
            raise ValueError(f"stage {s}: keeps {k} patches, must be between 1 and {n}")
        if not 0 <= layer < n_layers:
            raise ValueError(f"stage {s}: layer {layer} out of range 0..{n_layers - 1}")
        if out and (layer <= out[-1][0] or k > out[-1][1]):
            raise ValueError(f"stages must have increasing layers and non-increasing kept counts: {stages}")
        out.append((layer, k))
    return out


def keep_count(ratio: float, n: int) -> int:
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"keep ratio must be in (0, 1], got {ratio}")
    return max(1, int(round(float(ratio) * n)))


# A scorer gives, for the tokens at a pruning layer, one importance score per ORIGINAL patch
# ([B, N]; higher = more important). Scores of patches pruned earlier are ignored.
Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def top_k_by_score(scores: torch.Tensor, ids: torch.Tensor, k: int) -> torch.Tensor:
    """Positions (into the current patch list ``ids`` [B, n]) of the k highest-scoring patches, in
    ascending position order (keeps the original token order)."""
    s = torch.gather(scores.to(ids.device).float(), 1, ids)
    pos = torch.topk(s, k, dim=1, sorted=False).indices
    return pos.sort(dim=1).values


def encode_image_staged(model: nn.Module, images: torch.Tensor, stages: list[tuple[int, int]], scorer: Scorer,
                        visual_prompts=None) -> torch.Tensor:
    """The tower with several pruning stages ``[(layer, kept count)]``: at each stage ``scorer(tokens,
    ids)`` ranks the remaining patches (``ids`` [B, n] their original indices; ``tokens`` the sequence
    at that layer) and the top ones are kept. ``visual_prompts``: an IVLP prompt module (shallow +
    deep visual tokens) or None."""
    visual = model.visual
    n, d = num_patches(visual), depth(visual)
    shallow = visual_prompts.shallow if visual_prompts is not None else None
    deep = visual_prompts.deep_list() if visual_prompts is not None else ()
    x = embed(visual, images, shallow)
    ids = torch.arange(n, device=x.device).unsqueeze(0).expand(x.shape[0], -1)
    at = 0
    for layer, k in stages:
        x = run_blocks(visual, x, at, layer, deep)
        at = layer
        if k < ids.shape[1]:
            pos = top_k_by_score(scorer(x, ids), ids, k)
            x = gather_patches(x, pos, ids.shape[1])
            ids = torch.gather(ids, 1, pos)
    x = run_blocks(visual, x, at, d, deep)
    return pool_project(visual, x)


def index_scorer(keep_index: torch.Tensor, n: int) -> Scorer:
    """A scorer that keeps exactly the given patches (score 1 for them, 0 otherwise)."""
    def score(x, ids):
        s = torch.zeros(keep_index.shape[0], n, device=x.device)
        return s.scatter_(1, keep_index.to(x.device).long(), 1.0)
    return score


def order_scorer(order: torch.Tensor) -> Scorer:
    """Scores from rankings [B, N] (patch ids, most important first): earlier = higher."""
    def score(x, ids):
        b, n = order.shape
        s = torch.empty(b, n, device=x.device)
        s.scatter_(1, order.to(x.device).long(), torch.arange(n, 0, -1, device=x.device, dtype=s.dtype).expand(b, -1))
        return s
    return score


def random_scorer(generator: torch.Generator, n: int) -> Scorer:
    """Random pruning: i.i.d. uniform scores per image (a fresh draw at every stage)."""
    def score(x, ids):
        return torch.rand(ids.shape[0], n, generator=generator).to(x.device)
    return score
