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
    def __init__(self, max_fraction: float = 0.01, name: str = "train"):
        self.max_fraction, self.name = max_fraction, name
        self.reset()

    def reset(self) -> None:
        self.seen, self.bad = 0, []

    def update(self, n_good: int, bad: list[BadSample]) -> None:
        self.seen += n_good + len(bad)
        for b in bad:
            log.warning("[%s] unreadable sample %s: %s", self.name, b.key, b.error)
        self.bad += bad
        if self.seen and len(self.bad) / self.seen > self.max_fraction and len(self.bad) > 0:
            raise TooManyBadSamples(
                f"[{self.name}] {len(self.bad)} of {self.seen} samples unreadable "
                f"(> data.max_bad_fraction={self.max_fraction}); first: "
                + "; ".join(f"{b.key}: {b.error}" for b in self.bad[:3]))

    def summary(self) -> dict:
        return {f"{self.name}/bad_samples": len(self.bad), f"{self.name}/samples_seen": self.seen}
