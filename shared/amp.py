"""Mixed precision: one helper for every project.

``amp``: ``bf16`` (autocast to bfloat16 on CUDA), ``fp16`` (autocast to float16 on CUDA; pair it with
``grad_scaler``), ``none``/``fp32``/``None`` (full precision). On the CPU every setting runs in fp32:
CPU autocast is slower than fp32 for these models and would make CPU tests differ from GPU runs in
what they check. Losses and metrics are computed in fp32 by their callers (``.float()``), outside
autocast.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

AMP_CHOICES = ("bf16", "fp16", "none", "fp32")


def check_amp(amp: str | None) -> str:
    amp = "none" if amp is None else str(amp)
    if amp not in AMP_CHOICES:
        raise ValueError(f"train.amp must be one of {AMP_CHOICES}, got {amp!r}")
    return amp


def autocast(device: torch.device, amp: str | None):
    amp = check_amp(amp)
    if device.type != "cuda" or amp in ("none", "fp32"):
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def grad_scaler(device: torch.device, amp: str | None) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 on CUDA (a no-op pass-through otherwise)."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and check_amp(amp) == "fp16")


def fp32_metrics():
    """A block whose ops run in fp32 even inside an autocast region (for metrics and evaluation maps)."""
    return torch.autocast("cuda", enabled=False) if torch.cuda.is_available() else nullcontext()
