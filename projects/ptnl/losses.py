"""Cross-entropy and Generalized Cross-Entropy (Zhang & Sabuncu, 2018).

GCE = mean over the batch of (1 - p_y^q) / q, p_y the softmax probability of the *given* (possibly
noisy) label. q -> 0 gives cross-entropy (-log p_y); q = 1 gives the MAE-like 1 - p_y. Its gradient
w.r.t. the logits is p_y^q times cross-entropy's, so samples the model finds unlikely (often the
mislabelled ones) pull less.

q: the paper reports q = 0.7 (our default); the official code hard-codes 0.5
(``GeneralizedCrossEntropy(q=0.5)`` in UPLTrainer): ``loss.q=0.5``. The official code adds 1e-6 to
p before the power; we compute 1 - p_y^q = -expm1(q log_softmax_y) instead, which is exact and finite
without the offset (the two differ by less than 1e-6 * q * p^(q-1)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gce_loss(logits: torch.Tensor, labels: torch.Tensor, q: float = 0.7) -> torch.Tensor:
    if not q > 0:
        raise ValueError(f"GCE needs q > 0 (q -> 0 is cross-entropy), got {q}")
    logp = F.log_softmax(logits.float(), dim=-1).gather(1, labels.long().view(-1, 1)).squeeze(1)
    return (-torch.expm1(q * logp) / q).mean()  # (1 - p^q) / q without cancellation at small q


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels.long())


def build_loss(name: str, q: float = 0.7):
    if name == "ce":
        return ce_loss
    if name == "gce":
        return lambda logits, labels: gce_loss(logits, labels, q)
    raise ValueError(f"loss.name must be ce or gce, got {name!r}")
