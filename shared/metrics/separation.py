"""Source-separation metrics: BSS-Eval v3 (mir_eval ``bss_eval_sources``) as the Sound-of-Pixels
line evaluates it.

- per mixture: ``bss_eval_sources(references (N, L), estimates (N, L), compute_permutation=False)``
  (estimate n is scored against reference n: the visual query fixes the order);
- a mixture whose reference or estimate holds a silent source (sum |x| <= 1e-5, Sound-of-Pixels'
  test) is skipped and counted: mir_eval cannot score a silent reference;
- SDR / SIR / SAR averaged over the mixture's sources, then over mixtures;
- beside them, the SDR of the unseparated mixture used as every source's estimate (the baseline
  a separator has to beat), computed the same way.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

SILENCE = 1e-5


def _bss_eval(refs: np.ndarray, ests: np.ndarray):
    from mir_eval.separation import bss_eval_sources

    with warnings.catch_warnings():  # mir_eval 0.8 marks bss_eval_sources deprecated; it is the papers' metric
        warnings.simplefilter("ignore", FutureWarning)
        sdr, sir, sar, _ = bss_eval_sources(refs, ests, compute_permutation=False)
    return sdr, sir, sar


def is_silent(x: np.ndarray) -> bool:
    return float(np.sum(np.abs(x))) <= SILENCE


def separation_scores(references, estimates, mixture=None) -> dict | None:
    """Scores of one mixture: ``references`` and ``estimates`` (N, L) (N >= 1; the estimates may be
    longer or shorter: both are cut to the shorter length), ``mixture`` (L,) for the mixture's SDR.
    Returns per-source arrays and their means, or None when a source is silent (skipped)."""
    refs = np.atleast_2d(np.asarray(references, dtype=np.float64))
    ests = np.atleast_2d(np.asarray(estimates, dtype=np.float64))
    if refs.shape[0] != ests.shape[0]:
        raise ValueError(f"{refs.shape[0]} references but {ests.shape[0]} estimates")
    n = min(refs.shape[1], ests.shape[1])
    refs, ests = refs[:, :n], ests[:, :n]
    if any(is_silent(r) for r in refs) or any(is_silent(e) for e in ests):
        return None
    sdr, sir, sar = _bss_eval(refs, ests)
    out = {"sdr": sdr, "sir": sir, "sar": sar,
           "sdr_mean": float(np.mean(sdr)), "sir_mean": float(np.mean(sir)), "sar_mean": float(np.mean(sar))}
    if mixture is not None:
        mix = np.asarray(mixture, dtype=np.float64)[:n]
        sdr_mix, _, _ = _bss_eval(refs, np.stack([mix] * refs.shape[0]))
        out["sdr_mix"], out["sdr_mix_mean"] = sdr_mix, float(np.mean(sdr_mix))
    return out


@dataclass
class SeparationMeter:
    """Accumulates ``separation_scores`` over mixtures; ``summary()`` gives the averages over scored
    mixtures and how many were skipped (with their keys)."""

    per_mixture: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def update(self, references, estimates, mixture=None, key: str = "") -> dict | None:
        s = separation_scores(references, estimates, mixture)
        if s is None:
            self.skipped.append(key)
        else:
            self.per_mixture.append({"key": key, **{k: v for k, v in s.items() if k.endswith("_mean")}})
        return s

    def summary(self) -> dict:
        if not self.per_mixture:
            raise ValueError(f"no mixture could be scored ({len(self.skipped)} skipped with silent sources)")
        keys = [k for k in self.per_mixture[0] if k.endswith("_mean")]
        out = {k[: -len("_mean")]: float(np.mean([m[k] for m in self.per_mixture])) for k in keys}
        out.update(n_mixtures=len(self.per_mixture), n_skipped_silent=len(self.skipped))
        return out
