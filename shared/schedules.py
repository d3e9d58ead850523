"""Per-step schedules of SSL recipes (values as functions of the step, so resume is exact)."""
from __future__ import annotations

import math


def warmup_then_decay(step: int, total: int, warmup: int, peak: float, final: float = 0.0, decay: str = "cosine",
                      power: float = 2.0) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup`` steps, then ``cosine`` (half cycle) or
    ``poly`` ((1 - t)^power) decay to ``final`` at ``total``."""
    if step < warmup:
        return peak * step / max(1, warmup)
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if decay == "cosine":
        f = 0.5 * (1 + math.cos(math.pi * t))
    elif decay == "poly":
        f = (1 - t) ** power
    else:
        raise ValueError(f"decay must be cosine or poly, got {decay!r}")
    return final + (peak - final) * f


def cosine_ramp(step: int, total: int, start: float, end: float) -> float:
    """start -> end along a half cosine (MoCo v3 / DINO momentum, DINO weight decay)."""
    t = min(1.0, step / max(1, total))
    return end - (end - start) * 0.5 * (1 + math.cos(math.pi * t))


def linear_warmup_constant(step: int, warmup: int, start: float, end: float) -> float:
    """start -> end linearly over ``warmup`` steps, then end (DINO teacher temperature)."""
    return end if step >= warmup else start + (end - start) * step / max(1, warmup)
