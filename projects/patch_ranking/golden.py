"""Phase I: the Golden Ranking, a greedy per-image search over patch removals.

At the pruning layer L the kept patches are partitioned into k x k blocks of the ORIGINAL grid
(block of patch (r, c) = (r // k, c // k)); a block with some kept patches is a candidate. Every
candidate removal (the kept patches minus that block's) is pushed through blocks L.. and scored:

- ``similarity`` (default, the official ``RANK_MODE``): cosine between the candidate's final image
  embedding and the full, unpruned image's (label- and text-free);
- ``label``: the ground-truth class **logit** (logit_scale * cosine), not the probability the paper's
  formula writes: the official code scores logits, and so do we;
- ``max``: the largest class logit of the candidate (the paper's label-free "maximum confidence", on
  logits). The official code reads the logit of the class predicted by the first candidate; we
  take each candidate's own maximum.

A high score means the removal hurts little, so the block's tokens are *unimportant*. Each block's
score is given to each of its kept tokens; the ``tokens_per_step`` highest-scoring kept tokens are
removed (ascending stable sort, the tail removed, as the official prune pass), and the search
re-scores the rest, for ``steps`` steps. Unlike the official code, any kept count works (no square
grid is formed from the kept tokens), and label/max scores are broadcast to the block's tokens.

Speed: blocks 0..L-1 run once per image (cached tokens); all candidates of all images in the batch
with the same length go through blocks L.. together, ``max_batch`` sequences at a time.

Result per image: ``removed_step`` (step at which the patch was removed, -1 if never), ``score`` (its
score at that step, or at the last step for kept patches), and ``order``: every patch, most
important first = the kept ones by ascending score, then the removed ones from the last removed to
the first (within a step by ascending score), so the TAIL holds the least important patches, as the
official ``patch_index`` list.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from projects.patch_ranking.pruning import depth, embed, grid_size, num_patches, pool_project, run_blocks

SCORES = ("similarity", "label", "max")


@dataclass
class GoldenConfig:
    layer: int = 3
    block_size: int = 2
    tokens_per_step: int = 4
    steps: int = 20
    score: str = "similarity"
    max_batch: int = 256       # candidate sequences per forward of blocks L..

    def check(self, n: int, n_layers: int) -> None:
        if self.score not in SCORES:
            raise ValueError(f"golden.score must be one of {SCORES}, got {self.score!r}")
        if self.block_size < 1 or self.tokens_per_step < 1 or self.steps < 1:
            raise ValueError(f"block_size, tokens_per_step and steps must be >= 1: {self}")
        if self.steps * self.tokens_per_step >= n:
            raise ValueError(f"golden search removes steps*tokens_per_step = {self.steps * self.tokens_per_step} "
                             f"patches, must leave at least one of {n}")
        if not 0 <= self.layer < n_layers:
            raise ValueError(f"golden.layer {self.layer} out of range 0..{n_layers - 1}")

    def to_dict(self) -> dict:
        return asdict(self)


def block_ids(grid: tuple[int, int], k: int) -> torch.Tensor:
    """[N] block index of every patch of a row-major grid, blocks k x k (edge blocks may be smaller)."""
    gh, gw = grid
    r = torch.arange(gh).view(-1, 1).expand(gh, gw) // k
    c = torch.arange(gw).view(1, -1).expand(gh, gw) // k
    return (r * ((gw + k - 1) // k) + c).reshape(-1)


def candidates(kept: torch.Tensor, blocks: torch.Tensor):
    """Every candidate removal of every image, grouped by the remaining length (one batch shape each).

    Returns ``groups`` {length: [(image index [R], remaining patch ids [R, length], candidate index [R])]},
    ``per_image`` [(image, kept patch ids, block of each kept patch as a candidate offset, first candidate)],
    and the number of candidates."""
    groups: dict[int, list] = {}
    per_image = []
    c = 0
    for b in range(kept.shape[0]):
        ids = kept[b].nonzero().squeeze(1)
        blk = blocks[ids]
        u, inv = torch.unique(blk, return_inverse=True)
        stays = blk.unsqueeze(0) != u.unsqueeze(1)            # [U, n]: patch stays in candidate u
        lens = stays.sum(1)
        for length in lens.unique().tolist():
            rows = (lens == length).nonzero().squeeze(1)
            rest = ids.unsqueeze(0).expand(len(rows), -1)[stays[rows]].view(len(rows), length)
            groups.setdefault(length, []).append((torch.full((len(rows),), b), rest, c + rows))
        per_image.append((b, ids, inv, c))
        c += len(u)
    return groups, per_image, c


def score_embeddings(e: torch.Tensor, mode: str, ref: torch.Tensor | None = None, classifier: torch.Tensor | None = None,
                     labels: torch.Tensor | None = None, scale: float = 100.0) -> torch.Tensor:
    """Scores of candidate embeddings ``e`` [M, E] (fp32); ``ref`` [M, E] the unpruned embeddings and
    ``labels`` [M] the ground truth of each candidate's image."""
    e = F.normalize(e.float(), dim=-1)
    if mode == "similarity":
        return (e * F.normalize(ref.float(), dim=-1)).sum(-1)
    logits = scale * e @ classifier.float().t().to(e.device)
    if mode == "label":
        return logits.gather(1, labels.view(-1, 1).to(e.device)).squeeze(1)
    return logits.max(dim=1).values


@torch.no_grad()
def golden_ranking(model: nn.Module, images: torch.Tensor, cfg: GoldenConfig, labels: torch.Tensor | None = None,
                   classifier: torch.Tensor | None = None, scale: float | None = None) -> dict[str, torch.Tensor]:
    """Greedy golden ranking of a batch of images: {"order", "removed_step", "score"}, each [B, N] (CPU)."""
    visual = model.visual
    n, d = num_patches(visual), depth(visual)
    cfg.check(n, d)
    if cfg.score in ("label", "max") and classifier is None:
        raise ValueError(f"golden.score={cfg.score} needs the zero-shot classifier (text features)")
    if cfg.score == "label" and labels is None:
        raise ValueError("golden.score=label needs the images' labels")
    if scale is None:
        scale = float(model.logit_scale.exp())
    x0 = run_blocks(visual, embed(visual, images), 0, cfg.layer)                   # cached first L blocks
    full = pool_project(visual, run_blocks(visual, x0, cfg.layer, d)).float()
    B, dev = x0.shape[0], x0.device
    blocks = block_ids(grid_size(visual), cfg.block_size)
    kept = torch.ones(B, n, dtype=torch.bool)
    removed_step = torch.full((B, n), -1, dtype=torch.long)
    score = torch.zeros(B, n)
    labels = labels.cpu() if labels is not None else None
    for step in range(cfg.steps):
        groups, per_image, n_cand = candidates(kept, blocks)
        cand_scores = torch.empty(n_cand)
        for parts in groups.values():
            bi = torch.cat([p[0] for p in parts])
            rest = torch.cat([p[1] for p in parts])
            ci = torch.cat([p[2] for p in parts])
            for j in range(0, len(bi), cfg.max_batch):
                bj, keep = bi[j:j + cfg.max_batch], rest[j:j + cfg.max_batch].to(dev)
                xs = x0[bj.to(dev)]
                patches = torch.gather(xs[:, 1:], 1, keep.unsqueeze(-1).expand(-1, -1, xs.shape[-1]))
                e = pool_project(visual, run_blocks(visual, torch.cat([xs[:, :1], patches], 1), cfg.layer, d))
                sc = score_embeddings(e, cfg.score, ref=full[bj.to(dev)], classifier=classifier,
                                      labels=labels[bj] if labels is not None else None, scale=scale)
                cand_scores[ci[j:j + cfg.max_batch]] = sc.float().cpu()
        for b, ids, inv, first in per_image:   # each kept token gets its block's score
            score[b, ids] = cand_scores[first + inv]
        for b in range(B):
            ids = kept[b].nonzero().squeeze(1)
            asc = torch.sort(score[b, ids], stable=True).indices
            drop = ids[asc[len(ids) - cfg.tokens_per_step:]]
            kept[b, drop] = False
            removed_step[b, drop] = step
    return {"order": ranking_order(removed_step, score), "removed_step": removed_step, "score": score}


def ranking_order(removed_step: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """[B, N] patch ids, most important first (see the module docstring)."""
    orders = []
    for rs, sc in zip(removed_step, score):
        kept = (rs < 0).nonzero().squeeze(1)
        kept = kept[torch.sort(sc[kept], stable=True).indices]
        gone = (rs >= 0).nonzero().squeeze(1)
        # removed later first; within a step the higher score (removed more eagerly) later
        key = sorted(gone.tolist(), key=lambda i: (-int(rs[i]), float(sc[i])))
        orders.append(torch.cat([kept, torch.tensor(key, dtype=torch.long)]))
    return torch.stack(orders)
