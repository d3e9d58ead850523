"""Stream orders and their distribution to processes (official ``MyDistributedSampler`` and the
sequential branch of ``ResumableDistributedSampler``; ``ClassSequentialDataset``'s order).

A stream is a list of dataset indices in the order the learner sees them. Kinds:

- ``iid``: a random permutation (torch.randperm seeded with seed + epoch), Flickr-style lists;
  also the "decorrelated source" (official ``none_noseq``) of a sequential dataset;
- ``sequential``: the dataset holds ``n_seq`` consecutive items per video (index = video * n_seq +
  k); the videos come in random order, each as a contiguous block (Kinetics);
- ``temporal``: the dataset's own order, no shuffling (KrishnaCam, continual ImageNet lists,
  whose split order is the file's order);
- ``class_sequential``: images shuffled within each class, then repeatedly a random class that still
  has images contributes its next ``n_seq`` images (official ClassSequentialDataset).

Processes get whole units round-robin (a unit is a per-process batch, or a video block for
``sequential``), so with sequential data every per-process batch comes from one video.
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch

KINDS = ("iid", "sequential", "temporal", "class_sequential")


def stream_order(kind: str, n: int, seed: int = 0, epoch: int = 0, n_seq: int = -1, labels=None) -> list[int]:
    """The whole stream (all processes) of epoch ``epoch``."""
    if kind == "iid":
        g = torch.Generator().manual_seed(seed + epoch)
        return torch.randperm(n, generator=g).tolist()
    if kind == "temporal":
        return list(range(n))
    if kind == "sequential":
        if n_seq <= 0 or n % n_seq:
            raise ValueError(f"a sequential stream needs data.n_seq_samples > 0 dividing the dataset ({n} items, "
                             f"n_seq_samples={n_seq})")
        g = torch.Generator().manual_seed(seed + epoch)
        # the official sampler keeps the block starts in the order a random permutation of all items visits them
        starts = [i for i in torch.randperm(n, generator=g).tolist() if i % n_seq == 0]
        return [s + k for s in starts for k in range(n_seq)]
    if kind == "class_sequential":
        if labels is None or n_seq <= 0:
            raise ValueError("a class_sequential stream needs the dataset's labels and data.n_seq_samples > 0")
        return class_sequential_order(np.asarray(labels), n_seq, seed + epoch)
    raise ValueError(f"data.stream must be one of {KINDS}, got {kind!r}")


def class_sequential_order(labels: np.ndarray, n_per_chunk: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    per_class = {}
    for c in sorted(set(labels.tolist())):
        items = np.flatnonzero(labels == c).tolist()
        rng.shuffle(items)
        per_class[c] = items
    out = []
    while per_class:
        c = rng.choice(sorted(per_class))
        out += per_class[c][:n_per_chunk]
        per_class[c] = per_class[c][n_per_chunk:]
        if not per_class[c]:
            del per_class[c]
    return out


def split_for_rank(order: list[int], batch_size: int, rank: int, world_size: int, n_seq: int = -1) -> list[int]:
    """This process's share of the stream: whole units round-robin. Units are per-process batches
    (the tail that does not fill a round of world_size batches is dropped, as the official drop_last),
    or, with ``n_seq`` > 0 (sequential), video blocks, of which the official code keeps
    ceil((V - W) / W) * W (one round fewer than all when V divides evenly: kept as it is)."""
    if n_seq > 0:
        blocks = [order[i:i + n_seq] for i in range(0, len(order), n_seq)]
        keep = math.ceil((len(blocks) - world_size) / world_size) * world_size if world_size > 1 else len(blocks)
        return [i for b in blocks[:keep][rank::world_size] for i in b]
    full = len(order) // (batch_size * world_size) * batch_size * world_size
    batches = [order[i:i + batch_size] for i in range(0, full, batch_size)]
    return [i for b in batches[rank::world_size] for i in b]


def rank_stream(kind: str, n: int, total_batch: int, rank: int, world_size: int, seed: int = 0, epoch: int = 0,
                n_seq: int = -1, labels=None) -> list[int]:
    """This process's share of the stream of ``epoch`` (per-process batch = total_batch / world_size)."""
    if total_batch % world_size:
        raise ValueError(f"optim.batch_size={total_batch} is not divisible by {world_size} processes")
    order = stream_order(kind, n, seed, epoch, n_seq, labels)
    return split_for_rank(order, total_batch // world_size, rank, world_size, n_seq if kind == "sequential" else -1)
