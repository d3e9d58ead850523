"""One timing helper for every project's benchmark: warm-up, CUDA synchronisation, the median of
repeats, items/s, and TFLOP/s with FLOPs counted by torch's FlopCounterMode.

    t = time_fn(lambda: step(batch), device, warmup=3, repeats=10)
    flops = count_flops(lambda: step(batch))          # one call, counted on the real device
    print(t.items_per_s(batch_size), t.tflops(flops), t.percent_of_peak(flops, peak_tflops(device)))

Speed-ups are ratios of two medians measured in one process with the same helper.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

# dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment, for "% of peak"
_BF16_PEAK = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}


@dataclass
class Timing:
    seconds: list[float]  # one entry per repeat

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats: the noise to state beside a ratio."""
        return (max(self.seconds) - min(self.seconds)) / self.median if self.median else 0.0

    def items_per_s(self, items: int) -> float:
        return items / self.median

    def tflops(self, flops: float) -> float:
        return flops / self.median / 1e12

    def percent_of_peak(self, flops: float, peak: float | None) -> float | None:
        return None if not peak else 100.0 * self.tflops(flops) / peak


def _sync(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device | str, warmup: int = 3, repeats: int = 10,
            inner: int = 1) -> Timing:
    """Seconds per call of ``fn`` (each repeat times ``inner`` calls between two synchronisations)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        _sync(device)
        out.append((time.perf_counter() - t0) / inner)
    return Timing(out)


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call of ``fn`` (forward and, if ``fn`` calls backward, backward), as torch counts them
    (2 per multiply-add of matmuls and convolutions; attention included).

    FlopCounterMode has no formula for the fused kernels that eval-mode ``nn.MultiheadAttention``
    (its "fast path": the whole block, projections included, reads 0) and CPU SDPA use; the count runs
    with the fast path off and SDPA's math backend, whose matmuls it does count. The arithmetic is the
    same; only the kernels differ from a timed run."""
    counter = FlopCounterMode(display=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]), counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return float(counter.get_total_flops())


def peak_tflops(device: torch.device | str) -> float | None:
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in _BF16_PEAK.items() if k in name), None)
