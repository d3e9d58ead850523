"""One timing helper for every project's benchmark: warm-up, CUDA synchronisation, the median of
repeats, items/s, and TFLOP/s with FLOPs counted by torch's FlopCounterMode.

    t = time_fn(lambda: step(batch), device, warmup=3, repeats=10)
    flops = count_flops(lambda: step(batch))          # one call, counted on the real device
    print(t.items_per_s(batch_size), t.tflops(flops), t.percent_of_peak(flops, peak_tflops(device)))

Speed-ups are ratios of two medians measured in one process with the same helper.

A bench run by ``make bench`` (shared/bench_suite.py) gets ``--budget-s``: its wall-clock allowance,
shared out over its measurements by ``Budget`` (``time_fn(..., budget_s=budget.share(n_left))`` stops
repeating when the next repeat would not fit, keeping ``min_repeats``), and ``--summary-json``: the
common record (``summary``/``write_summary``) that the suite gathers into results/bench/<device>.json.
"""
from __future__ import annotations

import json
import math
import os
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
            inner: int = 1, budget_s: float | None = None, min_repeats: int = 1) -> Timing:
    """Seconds per call of ``fn`` (each repeat times ``inner`` calls between two synchronisations).

    ``budget_s``: the wall-clock seconds this measurement may take, warm-up included. Warm-up stops
    once another warm-up call and ``min_repeats`` repeats would not fit; repeating stops (``repeats``
    is then the most) once the next repeat would not fit, at the pace of the last one. ``min_repeats``
    repeats (and one warm-up call, if ``warmup`` > 0) always run, so a tight budget can be overrun."""
    device = torch.device(device)
    start = time.perf_counter()

    def fits(calls: float, seconds_per_call: float) -> bool:
        return budget_s is None or time.perf_counter() - start + calls * seconds_per_call <= budget_s

    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if not fits(1 + min_repeats * inner, time.perf_counter() - t0):
            break
    out = []
    for _ in range(max(repeats, min_repeats)):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        _sync(device)
        out.append((time.perf_counter() - t0) / inner)
        if len(out) >= min_repeats and (len(out) >= repeats or not fits(inner, out[-1])):
            break
    return Timing(out)


class Budget:
    """A bench's wall-clock allowance (``--budget-s``; None: no limit), shared out as it goes: each
    measurement gets what is left over the number of measurements still to come, so set-up time
    (building models, counting FLOPs, generating data) is paid from the same allowance."""

    def __init__(self, seconds: float | None):
        if seconds is not None and seconds < 0:
            raise ValueError(f"a time budget is >= 0 seconds, got {seconds}")
        self.seconds = seconds
        self.start = time.perf_counter()

    def left(self) -> float | None:
        return None if self.seconds is None else max(0.0, self.seconds - (time.perf_counter() - self.start))

    def share(self, measurements_left: int) -> float | None:
        """Seconds for the next measurement when ``measurements_left`` (this one included) remain."""
        left = self.left()
        return None if left is None else left / max(1, measurements_left)


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window on CUDA (nothing on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device | str) -> float | None:
    """GiB of CUDA memory allocated at most since the last ``reset_peak_memory``; None on the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2 ** 30


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


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


# ------------------------------------------------------------------ the common record of `make bench`
SUMMARY_KEYS = ("what", "unit", "fp32", "bf16", "ratio", "tflops", "pct_bf16_peak", "peak_mem_gb", "budget_s",
                "detail")
_SUMMARY_NUMBERS = ("fp32", "bf16", "ratio", "tflops", "pct_bf16_peak", "peak_mem_gb", "budget_s")


def summary(what: str, unit: str, fp32: float | None, bf16: float | None, tflops: float | None,
            pct_bf16_peak: float | None, peak_mem_gb: float | None, budget_s: float | None, detail: dict) -> dict:
    """The record every bench writes with ``--summary-json``: ``fp32``/``bf16`` in ``unit`` (samples/s)
    of the one thing ``what`` names, ``ratio`` bf16/fp32, ``tflops`` of the bf16 run (of the fp32 run
    where there is no bf16 one: on the CPU, where shared.amp runs fp32), and the bench's own result."""
    ratio = bf16 / fp32 if fp32 and bf16 is not None else None
    return validate_summary({"what": what, "unit": unit, "fp32": fp32, "bf16": bf16, "ratio": ratio, "tflops": tflops,
                             "pct_bf16_peak": pct_bf16_peak, "peak_mem_gb": peak_mem_gb, "budget_s": budget_s,
                             "detail": detail})


def validate_summary(rec, where: str = "summary") -> dict:
    """``rec`` with exactly SUMMARY_KEYS, text ``what``/``unit``, finite numbers or null, a dict detail."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    missing, unknown = [k for k in SUMMARY_KEYS if k not in rec], sorted(set(rec) - set(SUMMARY_KEYS))
    if missing or unknown:
        raise ValueError(f"{where}: missing keys {missing}, unknown keys {unknown}; a summary has {list(SUMMARY_KEYS)}")
    for k in ("what", "unit"):
        if not isinstance(rec[k], str) or not rec[k]:
            raise ValueError(f"{where}.{k}: expected non-empty text, got {rec[k]!r}")
    for k in _SUMMARY_NUMBERS:
        v = rec[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ValueError(f"{where}.{k}: expected a finite number or null, got {v!r}")
    if not isinstance(rec["detail"], dict):
        raise ValueError(f"{where}.detail: expected the bench's result dict, got {type(rec['detail']).__name__}")
    return {k: (float(rec[k]) if k in _SUMMARY_NUMBERS and rec[k] is not None else rec[k]) for k in SUMMARY_KEYS}


def write_summary(path: str | os.PathLike, record: dict) -> None:
    """Write a ``summary`` record as JSON (values that JSON has no type for are written as text)."""
    from shared.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(validate_summary(record), indent=2, default=str) + "\n")


def add_output_args(parser, out_default: str | None = None) -> None:
    """The options every bench.py takes: ``--out`` (its full result as JSON), and ``--budget-s`` /
    ``--summary-json`` that ``make bench`` (shared/bench_suite.py) passes."""
    parser.add_argument("--out", default=out_default, help="write the bench's full result here (JSON)")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds the bench may take (make bench)")
    parser.add_argument("--summary-json", default=None, help="write make bench's common record here")


def write_outputs(args, result: dict, common_record: Callable[[], dict]) -> dict:
    """Write ``result`` to ``args.out`` and ``common_record()`` to ``args.summary_json`` where given."""
    from shared.checkpoint import atomic_write_text

    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2, default=str) + "\n")
    if args.summary_json:
        write_summary(args.summary_json, common_record())
    return result


def parse_bench_args(parser, argv=None):
    """``(args, Budget(args.budget_s))`` from a bench's parser (which has ``add_output_args``)."""
    args = parser.parse_args(argv)
    return args, Budget(args.budget_s)
