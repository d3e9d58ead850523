"""Unreadable samples are counted and reported, never silently swapped for another sample.

A dataset returns ``BadSample(key, error)`` where it cannot read an item; ``collate_skipping_bad``
drops those from the batch and records them under ``batch["bad"]``; ``BadSampleMonitor`` counts
them per epoch and stops the run above a fraction.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from torch.utils.data import default_collate

log = logging.getLogger(__name__)


@dataclass
class BadSample:
    key: str
    error: str


def collate_skipping_bad(items: list) -> dict:
    good = [x for x in items if not isinstance(x, BadSample)]
    bad = [x for x in items if isinstance(x, BadSample)]
    batch = default_collate(good) if good else {}
    batch["bad"] = bad
    return batch


class TooManyBadSamples(RuntimeError):
    pass


class BadSampleMonitor:
    """Counts unreadable samples per epoch and stops the run once they exceed ``max_fraction`` of the
    epoch. With ``epoch_size`` (samples per epoch) the limit is ``max_fraction * epoch_size`` from the
    first batch on, so one bad file early in an epoch whose fraction stays under the limit does not stop
    the run; without it the fraction of the samples seen so far is used. Its state goes into checkpoints."""

    def __init__(self, max_fraction: float = 0.01, name: str = "train", epoch_size: int | None = None):
        self.max_fraction, self.name, self.epoch_size = max_fraction, name, epoch_size
        self.reset()

    def reset(self) -> None:
        self.seen, self.bad = 0, []

    def update(self, n_good: int, bad: list[BadSample]) -> None:
        self.seen += n_good + len(bad)
        for b in bad:
            log.warning("[%s] unreadable sample %s: %s", self.name, b.key, b.error)
        self.bad += bad
        if not self.bad:
            return
        denominator = self.epoch_size or self.seen
        if len(self.bad) > self.max_fraction * denominator:
            raise TooManyBadSamples(
                f"[{self.name}] {len(self.bad)} unreadable samples "
                + (f"in an epoch of {self.epoch_size}" if self.epoch_size else f"of {self.seen} seen")
                + f" (> data.max_bad_fraction={self.max_fraction}); first: "
                + "; ".join(f"{b.key}: {b.error}" for b in self.bad[:3]))

    def summary(self) -> dict:
        return {f"{self.name}/bad_samples": len(self.bad), f"{self.name}/samples_seen": self.seen}

    def state_dict(self) -> dict:
        return {"seen": self.seen, "bad": [(b.key, b.error) for b in self.bad]}

    def load_state_dict(self, state: dict) -> None:
        self.seen = int(state["seen"])
        self.bad = [BadSample(k, e) for k, e in state["bad"]]
