"""Sequence-compression settings and schedules.

A Setting fixes, for one training step, the patch size (null: the base patch) and the token keep
ratio of every view in each branch: ``online`` (the branch that gets gradients: MoCo v3's query
encoder, SimCLR's encoder, DINO's student) and ``target`` (MoCo v3's momentum encoder, DINO's
teacher; unused by SimCLR). A keep list shorter than the number of views is cycled, so ``[0.25]``
compresses every view and ``[0.25, 1.0]`` only the first.

A Schedule is a list of stages ``{until: fraction of training, patch, keep_online, keep_target}``;
the step at progress t uses the first stage with t < until.
"""
from __future__ import annotations

from dataclasses import dataclass, field


def _as_tuple(v) -> tuple[float, ...]:
    vals = tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
    if not vals or any(not 0.0 < x <= 1.0 for x in vals):
        raise ValueError(f"keep ratios must be in (0, 1], got {v!r}")
    return vals


@dataclass(frozen=True)
class Setting:
    patch: int | None = None
    keep_online: tuple[float, ...] = (1.0,)
    keep_target: tuple[float, ...] = (1.0,)

    @classmethod
    def from_dict(cls, d: dict) -> "Setting":
        unknown = set(d) - {"patch", "keep_online", "keep_target", "until"}
        if unknown:
            raise ValueError(f"unknown compression keys {sorted(unknown)}; valid: patch, keep_online, keep_target, until")
        patch = d.get("patch")
        if patch is not None and (isinstance(patch, bool) or not isinstance(patch, int) or patch <= 0):
            raise ValueError(f"a compression stage's patch must be a positive whole number of pixels or null "
                             f"(the base patch), got {patch!r}")
        return cls(patch=patch, keep_online=_as_tuple(d.get("keep_online", 1.0)),
                   keep_target=_as_tuple(d.get("keep_target", 1.0)))

    def keep(self, branch: str, view: int) -> float:
        ks = self.keep_online if branch == "online" else self.keep_target
        return ks[view % len(ks)]

    @property
    def name(self) -> str:
        fmt = lambda ks: "/".join(f"{k:g}" for k in ks)
        return f"p{self.patch or 'base'}_keep{fmt(self.keep_online)}_t{fmt(self.keep_target)}"

    def to_dict(self) -> dict:
        return {"patch": self.patch, "keep_online": list(self.keep_online), "keep_target": list(self.keep_target)}


@dataclass
class Schedule:
    stages: list[tuple[float, Setting]] = field(default_factory=lambda: [(1.0, Setting())])

    @classmethod
    def from_config(cls, stages: list[dict] | None) -> "Schedule":
        if not stages:
            return cls()
        if not isinstance(stages, (list, tuple)):
            raise ValueError(f"compression.schedule must be a list of stages, got {stages!r}")
        out, last = [], 0.0
        for s in stages:
            if not isinstance(s, dict):
                raise ValueError(f"a compression stage must be a mapping {{until, patch, keep_online, keep_target}}, got {s!r}")
            until = float(s.get("until", 1.0))
            if until <= last:
                raise ValueError(f"schedule stages must have increasing 'until' in (0, 1]; got {until} after {last}")
            out.append((until, Setting.from_dict(s)))
            last = until
        if abs(last - 1.0) > 1e-9:
            raise ValueError(f"the last schedule stage must reach until: 1.0 (got {last})")
        return cls(out)

    def validate(self, view_sizes: list[int], base_patch: int) -> "Schedule":
        """Every stage's patch must tile every view (global and local crops) exactly: checked when the
        config is read, not when training reaches the stage."""
        for until, s in self.stages:
            p = s.patch or base_patch
            bad = sorted({v for v in view_sizes if v % p})
            if bad:
                raise ValueError(f"compression stage until {until:g}: patch {p} does not divide the view size(s) "
                                 f"{bad} px (views: {sorted(set(view_sizes))}); choose a patch that divides them")
        return self

    def patch_sizes(self) -> list[int]:
        return sorted({s.patch for _, s in self.stages if s.patch is not None})

    def at(self, progress: float) -> Setting:
        for until, setting in self.stages:
            if progress < until:
                return setting
        return self.stages[-1][1]

    def to_config(self) -> list[dict]:
        return [{"until": u, **s.to_dict()} for u, s in self.stages]
