"""The official optimisation recipe: AdamW parameter groups and the per-step schedules.

Schedules are functions of the fractional epoch ``ep`` (optimizer steps done / steps per epoch),
evaluated once per optimizer step, so a resumed run recomputes exactly the same values.
"""
from __future__ import annotations

import math

import torch
from timm.optim import param_groups_weight_decay


def no_decay_names(model: torch.nn.Module, patterns=("bias", "norm", "embed")) -> list[str]:
    """Parameter names that contain any of ``patterns`` (the official list: 'bias', 'norm', 'embed')."""
    return [n for n, _ in model.named_parameters() if any(p in n for p in patterns)]


def param_groups(model: torch.nn.Module, weight_decay: float, patterns=("bias", "norm", "embed")) -> list[dict]:
    """timm's ``param_groups_weight_decay`` with the official exclusions: no decay for 1-D parameters,
    biases and every name containing one of ``patterns`` (so the Linear patch embedding and the
    decoder's input projection are not decayed); 3-D tokens (CLS, mask) are decayed. Frozen
    parameters (the EMA target) are left out."""
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_decay_names(model, patterns))


def peak_lr(o, world_size: int) -> float:
    eff = o.batch_size * o.accum_iter * world_size
    return float(o.lr) if o.lr is not None else float(o.blr) * eff / 256


def lr_at(ep: float, peak: float, epochs: float, warmup_epochs: float, min_lr_frac: float) -> float:
    """Linear warm-up from min_lr (not 0) to the peak, then half-cosine to min_lr = frac * peak."""
    low = peak * min_lr_frac
    if ep < warmup_epochs:
        return low + (peak - low) * ep / warmup_epochs
    t = (ep - warmup_epochs) / (epochs - warmup_epochs)
    return low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * t))


def momentum_at(ep: float, epochs: float, m0: float) -> float:
    """EMA momentum: 1 - (1 - m0) * (1 + cos(pi ep / epochs)) / 2, m0 -> 1."""
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * ep / epochs)) * (1.0 - m0)


def sim_target_at(ep: float, epochs: float, start: float, end: float) -> float:
    """Target of the average-similarity regulariser: cosine from ``start`` to ``end``."""
    return 0.5 * (1.0 + math.cos(math.pi * ep / epochs)) * (start - end) + end


def build_optimizer(model: torch.nn.Module, o, world_size: int = 1) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, o.weight_decay, tuple(o.wd_exclude)), lr=peak_lr(o, world_size),
                             betas=tuple(o.betas))
