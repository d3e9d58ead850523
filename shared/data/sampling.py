"""A sampler whose order and per-sample randomness are functions of (seed, epoch, position), so a
run resumed mid-epoch sees exactly the batches, and the augmentations, the uninterrupted run saw."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch.utils.data import Sampler

from shared import dist


def sample_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions)."""
    h = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


class ResumableSampler(Sampler):
    """Yields ``(index, seed)``: a dataset item and the seed of its augmentation RNG.

    Shards the epoch's permutation across ranks (padding by wrap-around like DistributedSampler,
    or dropping the tail with ``drop_last``). ``set_epoch(e, start=k)`` resumes at the k-th item
    of this rank's share.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = False,
                 rank: int | None = None, world_size: int | None = None):
        if size <= 0:
            raise ValueError("ResumableSampler needs a non-empty dataset")
        self.size, self.seed, self.shuffle, self.drop_last = size, seed, shuffle, drop_last
        self.rank = dist.rank() if rank is None else rank
        self.world = dist.world_size() if world_size is None else world_size
        self.per_rank = size // self.world if drop_last else math.ceil(size / self.world)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> np.ndarray:
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=g).numpy()
        else:
            order = np.arange(self.size)
        total = self.per_rank * self.world
        if total > self.size:
            order = np.concatenate([order, order[: total - self.size]])
        return order[:total][self.rank::self.world]

    def __iter__(self):
        order = self._order()
        for pos in range(self.start, len(order)):
            yield int(order[pos]), sample_seed(self.seed, self.epoch, int(order[pos]), pos, self.rank)

    def __len__(self) -> int:
        return self.per_rank - self.start
