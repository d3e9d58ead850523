"""Replay buffers between the stream and the SGD steps (the official ``datasets/mysampler.py``).

Every buffer turns this rank's stream (a list of dataset indices, in stream order) into the
batches the model trains on, one per-rank batch at a time:

- ``none``: consecutive batches of the stream (conventional training; epochs re-read the stream).
- ``fifo``: the last ``size`` stream samples; a chunk of ``batch`` new samples comes in, the oldest
  fall out, then ``num_updates`` batches are drawn uniformly from the buffer.
- ``minred``: a chunk comes in (every lifespan + 1), the buffer is cut back to ``size`` by evicting
  already-trained samples with the greedy max-coverage rule on their features (the oldest while
  fewer than 2 x overflow samples have been trained), then ``num_updates`` batches are drawn.
- ``reservoir`` (not in the official code, an extra baseline): reservoir sampling (Vitter's
  algorithm R) over the stream, same chunk / update cadence.

Buffers train nothing until they are first full; the steps that misses are drawn from the final
buffer after the stream ends, so a run always makes |stream| x num_updates / batch steps.

The whole state (contents, features, lifespans, seen flags, stream position, the random generator
and the yielded-but-untrained batches) is in ``state_dict``, so a resumed run replays exactly.
"""
from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F

from shared.data.sampling import sample_seed

MASK = -10.0  # the official fill value for the diagonal and for evicted rows/columns


# -- the eviction rule ---------------------------------------------------------------------------
def _similarity_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(<x_a, x_b> + 1) / 2 for a in ``rows`` and every b, the official similarity."""
    return (torch.einsum("ad,bd->ab", x[rows], x) + 1) / 2


@torch.no_grad()
def max_coverage_eviction(features: torch.Tensor, n_remove: int, block_rows: int | None = None,
                          max_block_bytes: int = 256 * 2**20) -> list[int]:
    """Greedy max-coverage reduction: ``n_remove`` times, remove the sample whose nearest remaining
    neighbour is the most similar (the first such sample on ties), so the kept set stays spread out.

    Returns the removed row indices in removal order, equal to the official ``max_coverage_reduction``
    (similarity (<a, b> + 1) / 2 with the diagonal masked; a removed sample's row and column masked).
    The full N x N similarity matrix is never held: each row's nearest neighbour is found in blocks of
    rows, and after a removal only the rows whose nearest neighbour was the removed sample are searched
    again (the others' maxima cannot change)."""
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    n = features.shape[0]
    if n_remove <= 0:
        return []
    if n_remove >= n:
        raise ValueError(f"cannot remove {n_remove} of {n} samples by nearest-neighbour similarity")
    x = features
    dev = x.device
    if block_rows is None:
        block_rows = max(1, max_block_bytes // max(1, n * x.element_size()))
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    nn_val = torch.empty(n, dtype=x.dtype, device=dev)
    nn_idx = torch.empty(n, dtype=torch.long, device=dev)

    def search(rows: torch.Tensor) -> None:
        for s in range(0, rows.numel(), block_rows):
            r = rows[s:s + block_rows]
            sim = _similarity_rows(x, r)
            sim[torch.arange(r.numel(), device=dev), r] = MASK
            sim[:, ~alive] = MASK
            v, i = sim.max(dim=1)
            nn_val[r], nn_idx[r] = v, i

    search(torch.arange(n, device=dev))
    removed = []
    for _ in range(n_remove):
        score = torch.where(alive, nn_val, torch.full_like(nn_val, MASK))
        i = int(torch.argmax(score))
        removed.append(i)
        alive[i] = False
        stale = torch.nonzero(alive & (nn_idx == i)).flatten()
        if stale.numel():
            search(stale)
    return removed


@torch.no_grad()
def nearest_neighbor_similarity(features: torch.Tensor, max_block_bytes: int = 256 * 2**20) -> torch.Tensor:
    """Each row's cosine similarity to its nearest other row (the official buffer statistic
    ``neighbor_similarity``: the second of the top-2 of the raw dot products), blockwise."""
    n = features.shape[0]
    if n < 2:
        return torch.zeros(n, device=features.device)
    block = max(1, max_block_bytes // max(1, n * features.element_size()))
    out = []
    for s in range(0, n, block):
        sim = features[s:s + block] @ features.t()
        out.append(torch.topk(sim, k=2, dim=-1, sorted=False)[0].min(dim=1)[0])
    return torch.cat(out)


# -- buffers -------------------------------------------------------------------------------------
class StreamBatches:
    """Batches of dataset indices for one rank, as ``(index, augmentation seed)`` items.

    Use as the DataLoader's ``batch_sampler``; after each training step call ``update`` (MinRed reads
    the projector outputs) and ``mark_trained``. ``__iter__`` first re-yields the batches that were
    yielded but not trained when the state was saved (a DataLoader with workers runs ahead)."""

    kind = "base"

    def __init__(self, stream: list[int], batch_size: int, seed: int = 0, rank: int = 0, epochs: int = 1):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(stream) < batch_size:
            raise ValueError(f"the stream of this process has {len(stream)} samples, fewer than one batch "
                             f"of {batch_size}")
        self.stream = [int(i) for i in stream]
        self.batch_size, self.seed, self.rank, self.epochs = int(batch_size), int(seed), int(rank), int(epochs)
        self.gen = torch.Generator().manual_seed(sample_seed(seed, rank, 93823982))
        self.head = 0                # stream samples consumed
        self.yielded = 0             # batches handed out
        self.trained = 0             # batches trained on
        self.repeats_left = 0        # batches still to draw for the current chunk
        self.history: deque = deque(maxlen=128)

    # subclasses: _next_batch() -> list[int]
    def __len__(self) -> int:
        return len(self.stream) * self.num_updates // self.batch_size

    num_updates = 1

    def __iter__(self):
        for b in list(self.history)[len(self.history) - (self.yielded - self.trained):]:
            yield b
        while self.yielded < len(self):
            idx = self._next_batch()
            batch = [(i, sample_seed(self.seed, self.rank, self.yielded, p)) for p, i in enumerate(idx)]
            self.yielded += 1
            self.history.append(batch)
            yield batch

    def mark_trained(self) -> None:
        self.trained += 1

    def update(self, index: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, loss: torch.Tensor) -> dict:
        """Per-sample statistics after a step (only MinRed keeps features)."""
        return {}

    def _draw(self, n_items: int, k: int) -> list[int]:
        """k positions drawn uniformly: without replacement if the buffer holds k, else with (official sample_k)."""
        if k <= n_items:
            return torch.randperm(n_items, generator=self.gen)[:k].tolist()
        return torch.randint(n_items, (k,), generator=self.gen).tolist()

    def state_dict(self) -> dict:
        return {"kind": self.kind, "head": self.head, "yielded": self.yielded, "trained": self.trained,
                "repeats_left": self.repeats_left, "history": list(self.history), "gen": self.gen.get_state(),
                "stream_len": len(self.stream)}

    def load_state_dict(self, s: dict) -> None:
        if s["kind"] != self.kind or s["stream_len"] != len(self.stream):
            raise ValueError(f"buffer state of a {s['kind']} buffer over {s['stream_len']} samples cannot be loaded "
                             f"into a {self.kind} buffer over {len(self.stream)}: was the config changed?")
        self.head, self.yielded, self.trained = int(s["head"]), int(s["yielded"]), int(s["trained"])
        self.repeats_left = int(s["repeats_left"])
        self.history = deque(s["history"], maxlen=128)
        self.gen.set_state(s["gen"])

    def stats(self) -> dict:
        return {}


class NoBuffer(StreamBatches):
    """Conventional training: consecutive per-rank batches of the stream, ``epochs`` times (official
    ResumableBatchSampler; the stream of epoch e is given by ``stream_of_epoch``)."""

    kind = "none"

    def __init__(self, stream, batch_size, seed=0, rank=0, epochs=1, stream_of_epoch=None):
        super().__init__(stream, batch_size, seed, rank, epochs)
        self.stream_of_epoch = stream_of_epoch
        self.per_epoch = len(self.stream) // self.batch_size
        self._epoch, self._order = 0, self.stream

    def __len__(self) -> int:
        return self.per_epoch * self.epochs

    def _next_batch(self) -> list[int]:
        epoch, pos = divmod(self.yielded, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = self.stream_of_epoch(epoch) if self.stream_of_epoch else self.stream
        self.head = pos * self.batch_size + self.batch_size
        return self._order[pos * self.batch_size:(pos + 1) * self.batch_size]

    def load_state_dict(self, s: dict) -> None:
        super().load_state_dict(s)
        self._epoch = self.yielded // self.per_epoch if self.per_epoch else 0
        self._order = self.stream_of_epoch(self._epoch) if (self.stream_of_epoch and self._epoch) else self.stream


class _ReplayBuffer(StreamBatches):
    """Shared cadence of the replay buffers: add chunks until full, then per chunk ``num_updates``
    draws; when the stream is exhausted, keep drawing from the final buffer."""

    def __init__(self, stream, batch_size, size: int, num_updates: int, seed=0, rank=0):
        super().__init__(stream, batch_size, seed, rank, 1)
        if size < batch_size:
            raise ValueError(f"buffer size per process {size} is smaller than a batch ({batch_size}); "
                             "buffer.size is the total over all processes")
        if size > len(self.stream):
            raise ValueError(f"buffer size per process {size} exceeds this process's stream ({len(self.stream)} samples)")
        if num_updates < 1:
            raise ValueError(f"buffer.num_updates must be >= 1, got {num_updates}")
        self.size, self.num_updates = int(size), int(num_updates)

    def _next_batch(self) -> list[int]:
        while self.repeats_left == 0:
            added = self._add_chunk()
            if added and self.n_items() < self.size:
                continue  # keep adding until the buffer is full
            self._after_add()
            self.repeats_left = self.num_updates
        self.repeats_left -= 1
        return [self.item_index(p) for p in self._draw(self.n_items(), self.batch_size)]

    def _add_chunk(self) -> bool:
        if self.head >= len(self.stream):
            return False
        chunk = self.stream[self.head:self.head + self.batch_size]
        self.head += len(chunk)
        self._insert(chunk)
        return True

    def _after_add(self) -> None:
        pass


class FIFOBuffer(_ReplayBuffer):
    """The official BufferBatchSampler ('simple'): a deque of the last ``size`` stream samples."""

    kind = "fifo"

    def __init__(self, stream, batch_size, size, num_updates, seed=0, rank=0):
        super().__init__(stream, batch_size, size, num_updates, seed, rank)
        self.items: deque = deque(maxlen=self.size)

    def _insert(self, chunk):
        self.items.extend(chunk)

    def n_items(self):
        return len(self.items)

    def item_index(self, p):
        return self.items[p]

    def contents(self) -> list[int]:
        return list(self.items)

    def state_dict(self):
        return {**super().state_dict(), "items": list(self.items)}

    def load_state_dict(self, s):
        super().load_state_dict(s)
        self.items = deque(s["items"], maxlen=self.size)


class ReservoirBuffer(FIFOBuffer):
    """Reservoir sampling: the n-th stream sample (0-based) replaces a uniformly chosen slot with
    probability size / (n + 1) once the buffer is full, so the buffer is a uniform sample of the
    stream so far. Not in the official code."""

    kind = "reservoir"

    def __init__(self, stream, batch_size, size, num_updates, seed=0, rank=0):
        super().__init__(stream, batch_size, size, num_updates, seed, rank)
        self.items = []
        self.n_offered = 0

    def _insert(self, chunk):
        for i in chunk:
            if len(self.items) < self.size:
                self.items.append(i)
            else:
                j = int(torch.randint(self.n_offered + 1, (1,), generator=self.gen))
                if j < self.size:
                    self.items[j] = i
            self.n_offered += 1

    def state_dict(self):
        return {**super().state_dict(), "n_offered": self.n_offered}

    def load_state_dict(self, s):
        StreamBatches.load_state_dict(self, s)
        self.items, self.n_offered = list(s["items"]), int(s["n_offered"])


class MinRedBuffer(_ReplayBuffer):
    """The official MinRedBufferBatchSampler. Per sample: dataset index, lifespan (chunks since it
    arrived), seen / num_seen, EMA of loss, of cos(z1, z2) and of the feature normalise(z1 + z2)."""

    kind = "minred"

    def __init__(self, stream, batch_size, size, num_updates, seed=0, rank=0, gamma: float = 0.5,
                 limit_num_seen_coeff: float = -1, device: str | torch.device = "cpu",
                 max_block_bytes: int = 256 * 2**20):
        super().__init__(stream, batch_size, size, num_updates, seed, rank)
        self.gamma, self.limit_num_seen_coeff = float(gamma), float(limit_num_seen_coeff)
        self.device, self.max_block_bytes = torch.device(device), int(max_block_bytes)
        self.idx = torch.zeros(0, dtype=torch.long)
        self.lifespan = torch.zeros(0, dtype=torch.long)
        self.num_seen = torch.zeros(0, dtype=torch.long)
        self.seen = torch.zeros(0, dtype=torch.bool)
        self.loss = torch.zeros(0)
        self.similarity = torch.zeros(0)
        self.feature: torch.Tensor | None = None  # (n, D) on self.device, rows of unseen samples are zero
        self.last_eviction: list[int] = []  # dataset indices evicted at the last resize (for inspection)

    def n_items(self):
        return self.idx.numel()

    def item_index(self, p):
        return int(self.idx[p])

    def contents(self) -> list[int]:
        return self.idx.tolist()

    def _insert(self, chunk):
        k = len(chunk)
        self.idx = torch.cat([self.idx, torch.tensor(chunk, dtype=torch.long)])
        self.lifespan = torch.cat([self.lifespan, torch.zeros(k, dtype=torch.long)]) + 1
        self.num_seen = torch.cat([self.num_seen, torch.zeros(k, dtype=torch.long)])
        self.seen = torch.cat([self.seen, torch.zeros(k, dtype=torch.bool)])
        self.loss = torch.cat([self.loss, torch.zeros(k)])
        self.similarity = torch.cat([self.similarity, torch.zeros(k)])
        if self.feature is not None:
            self.feature = torch.cat([self.feature, self.feature.new_zeros(k, self.feature.shape[1])])

    def _keep(self, keep: torch.Tensor) -> None:
        for name in ("idx", "lifespan", "num_seen", "seen", "loss", "similarity"):
            setattr(self, name, getattr(self, name)[keep])
        if self.feature is not None:
            self.feature = self.feature[keep.to(self.feature.device)]

    def _after_add(self) -> None:
        self.resize(self.size)

    def eviction_order(self, n2rm: int) -> list[int]:
        """Buffer positions to remove: the ``n2rm`` largest lifespans while fewer than 2 x n2rm samples
        have been trained on, else max-coverage reduction over the trained samples."""
        seen_pos = torch.nonzero(self.seen).flatten()
        if seen_pos.numel() < 2 * n2rm:
            return torch.argsort(self.lifespan, descending=True, stable=True)[:n2rm].tolist()
        feats = self.feature[seen_pos.to(self.feature.device)]
        order = max_coverage_eviction(feats, n2rm, max_block_bytes=self.max_block_bytes)
        return seen_pos[torch.tensor(order, dtype=torch.long)].tolist()

    def resize(self, n: int) -> None:
        n2rm = self.n_items() - n
        if n2rm <= 0:
            self.last_eviction = []
            return
        rm = self.eviction_order(n2rm)
        self.last_eviction = self.idx[torch.tensor(rm, dtype=torch.long)].tolist()
        keep = torch.ones(self.n_items(), dtype=torch.bool)
        keep[rm] = False
        self._keep(keep)

    @torch.no_grad()
    def update(self, index, z1, z2, loss) -> dict:
        """Record the step's projector outputs: f = normalise(z1 + z2); the first time a sample is
        trained its values are set, afterwards f <- normalise((1 - g) f + g f_new), and the loss and
        cos(z1, z2) are averaged the same way (g = 0.5)."""
        z1, z2 = z1.detach().float(), z2.detach().float()
        feats = F.normalize(z1 + z2, dim=-1).to(self.device)
        sim = (F.normalize(z1, dim=-1) * F.normalize(z2, dim=-1)).sum(-1).cpu()
        loss = loss.detach().float().cpu()
        if self.feature is None:
            self.feature = torch.zeros(self.n_items(), feats.shape[1], device=self.device)
        pos_of = {int(d): p for p, d in enumerate(self.idx.tolist())}
        g = self.gamma
        for i, d in enumerate(index.tolist()):
            p = pos_of.get(int(d))
            if p is None:  # evicted since the batch was drawn
                continue
            if not self.seen[p]:
                self.loss[p], self.similarity[p], self.feature[p] = loss[i], sim[i], feats[i]
            else:
                self.loss[p] = (1 - g) * self.loss[p] + g * loss[i]
                self.similarity[p] = (1 - g) * self.similarity[p] + g * sim[i]
                self.feature[p] = F.normalize((1 - g) * self.feature[p] + g * feats[i], dim=-1)
            self.num_seen[p] += 1
            self.seen[p] = True
        if self.limit_num_seen_coeff > 0:
            self._keep(self.num_seen < self.limit_num_seen_coeff * self.num_updates)
        return {}

    def stats(self) -> dict:
        """Buffer statistics of the official log: mean / max times seen, mean cos(z1, z2) and mean
        nearest-neighbour similarity of the trained samples."""
        s = self.seen
        if not bool(s.any()):
            return {}
        nn = nearest_neighbor_similarity(self.feature[s.to(self.feature.device)], self.max_block_bytes)
        return {"buffer/num_seen_mean": float(self.num_seen[s].float().mean()),
                "buffer/num_seen_max": float(self.num_seen[s].max()),
                "buffer/similarity": float(self.similarity[s].mean()),
                "buffer/neighbor_similarity": float(nn.mean())}

    def state_dict(self):
        return {**super().state_dict(), "idx": self.idx, "lifespan": self.lifespan, "num_seen": self.num_seen,
                "seen": self.seen, "loss": self.loss, "similarity": self.similarity,
                "feature": None if self.feature is None else self.feature.cpu()}

    def load_state_dict(self, s):
        super().load_state_dict(s)
        for name in ("idx", "lifespan", "num_seen", "seen", "loss", "similarity"):
            setattr(self, name, s[name].clone())
        self.feature = None if s["feature"] is None else s["feature"].to(self.device)


BUFFERS = {"none": NoBuffer, "fifo": FIFOBuffer, "minred": MinRedBuffer, "reservoir": ReservoirBuffer}


def build_buffer(kind: str, stream: list[int], batch_size: int, size: int, num_updates: int, seed: int, rank: int,
                 world_size: int, epochs: int = 1, stream_of_epoch=None, **minred) -> StreamBatches:
    """The batch source for one rank. ``size`` is the total over ranks (official ``buff_siz``); each rank
    keeps ``size // world_size``."""
    if kind not in BUFFERS:
        raise ValueError(f"buffer.type must be one of {sorted(BUFFERS)}, got {kind!r}")
    if kind == "none":
        return NoBuffer(stream, batch_size, seed, rank, epochs, stream_of_epoch)
    if epochs != 1:
        raise ValueError(f"replay buffers read the stream once (optim.epochs=1); got optim.epochs={epochs}")
    per_rank = int(size) // world_size
    if kind == "minred":
        return MinRedBuffer(stream, batch_size, per_rank, num_updates, seed, rank, **minred)
    return BUFFERS[kind](stream, batch_size, per_rank, num_updates, seed, rank)
