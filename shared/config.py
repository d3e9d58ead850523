"""YAML configs with ``base:`` inheritance, strict keys and dotted command-line overrides.

A project's root config (the one without ``base:``) declares every valid key with its default.
Configs that inherit from it, and ``key.sub=value`` overrides, may only set keys that exist;
an unknown key is an error naming the closest valid ones. An empty mapping (``{}``) in the
root marks a free-form section whose keys are not checked.

Every value is checked against the type of the root's default when the config is loaded (before
any run folder exists): a bool is not an int, an int key takes only ints, a float key takes ints
too (read as floats), a str key takes strings, a list takes a list (its items checked against a
non-empty default's items), a section takes a mapping. A ``null`` default accepts anything, and
``null`` is accepted where the default is a string (an optional path or name). The error names
the key, the value, the expected type and where the value came from. Then the merged config's
numbers are checked against ``RANGES`` by key name (batch sizes >= 1, cadences >= 0 with 0 off,
ratios in their interval, ...): a bad value stops the load, naming the key and the bound.

The ``run:`` and ``train:`` defaults every project shares live once in ``shared/configs/base.yaml``;
a root config takes such a section with ``inherit: shared`` inside it and adds or changes keys:

    run:
      inherit: shared     # shared/configs/base.yaml's run: section
      project: ezvsl
"""
from __future__ import annotations

import argparse
import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml


class ConfigError(ValueError):
    pass


SHARED_DEFAULTS = Path(__file__).parent / "configs" / "base.yaml"


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string; read it as a float like YAML 1.2."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text_or_stream) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (``1e-3``); every config, override and sweep file is read with it."""
    return yaml.load(text_or_stream, Loader=_Loader)


class Config(dict):
    """A dict with attribute access (``cfg.train.lr``); nested dicts are Configs too."""

    def __init__(self, data: dict | None = None):
        super().__init__()
        for k, v in (data or {}).items():
            self[k] = Config(v) if isinstance(v, dict) and not isinstance(v, Config) else v

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(_unknown_key_message(key, self.keys(), "")) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __deepcopy__(self, memo):
        return Config(copy.deepcopy(dict(self), memo))

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self.items()}

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _unknown_key_message(key: str, valid: Iterable[str], where: str) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown config key '{where}{key}'.{hint} Valid keys here: {', '.join(valid)}"


def _free_paths(tree: dict, where: str = "") -> set[str]:
    """Dotted paths of the empty mappings of a root config: free-form sections at every level below."""
    out = set()
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= {f"{where}{k}"} if not v else _free_paths(v, f"{where}{k}.")
    return out


def _deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else copy.deepcopy(v)
    return out


def _strict_merge(base: dict, update: dict, where: str = "", source: str = "", free: frozenset = frozenset()) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if f"{where}{key}" in free:
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"config key '{where}{key}' is a section; got {value!r}" + (f" (in {source})" if source else ""))
            out[key] = _deep_merge(out.get(key) or {}, value or {})
            continue
        if key not in out:
            raise ConfigError(_unknown_key_message(key, out.keys(), where) + (f" (in {source})" if source else ""))
        if isinstance(out[key], dict) and out[key]:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{where}{key}' is a section; got {value!r}" + (f" (in {source})" if source else ""))
            out[key] = _strict_merge(out[key], value, f"{where}{key}.", source, free)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "section"
    return type(value).__name__


_EXPECTED = {"bool": "a bool (true/false)", "int": "an int", "float": "a number", "str": "a string",
             "list": "a list", "section": "a section (a mapping of keys)"}


def _typed(value: Any, default: Any, key: str, source: str, free: frozenset) -> Any:
    """``value`` checked against the root default's type (an int for a float key becomes a float)."""
    want = _kind(default)
    if want == "null" or key in free:
        return value
    got = _kind(value)

    def fail(extra: str = ""):
        hint = " (quote it for a string)" if want == "str" and got in ("int", "float", "bool") else ""
        raise ConfigError(f"config key '{key}' = {value!r}{' (in ' + source + ')' if source else ''}: expected "
                          f"{_EXPECTED.get(want, want)} like its default {default!r}, got {got}{extra}{hint}")

    if want == "section":
        if got == "null":
            return {}
        if got != "section":
            fail()
        return {k: _typed(v, default[k], f"{key}.{k}", source, free) if k in default else v
                for k, v in value.items()}
    if got == want:
        kinds = {_kind(d) for d in default} if want == "list" else set()
        if kinds and (kinds <= {"int", "float"} or len(kinds) == 1):  # items of one type: check each
            item = next((d for d in default if _kind(d) == "float"), default[0])
            return [_typed(v, item, f"{key}[{i}]", source, free) for i, v in enumerate(value)]
        return value
    if want == "float" and got == "int":
        return float(value)
    if want == "str" and got == "null":
        return value
    fail()


def _check_types(tree: dict, root: dict, source: str, free: frozenset, where: str = "") -> dict:
    """``tree`` (a config file's mapping or the overrides) with every key the root declares type-checked."""
    return {k: _typed(v, root[k], f"{where}{k}", source, free) if k in root else v for k, v in tree.items()}


def _load_shared_defaults() -> dict:
    data = _read_yaml(SHARED_DEFAULTS)
    if "base" in data:
        raise ConfigError(f"{SHARED_DEFAULTS} is a root: it has no base:")
    return data


def _inherit_shared(data: dict, path: Path) -> dict:
    """Expand ``inherit: shared`` in a root config's sections: the shared section's keys, then the
    project's (which change a default or add a key; a key close to a shared one's name is a typo)."""
    out = {}
    for section, value in data.items():
        if not (isinstance(value, dict) and "inherit" in value):
            out[section] = value
            continue
        value = dict(value)
        source = value.pop("inherit")
        if source != "shared":
            raise ConfigError(f"{path}: '{section}.inherit: {source}': the only source is 'shared' "
                              f"({SHARED_DEFAULTS})")
        shared = _load_shared_defaults()
        if not isinstance(shared.get(section), dict):
            raise ConfigError(f"{path}: '{section}.inherit: shared', but {SHARED_DEFAULTS} has no "
                              f"{section}: section (it has {', '.join(sorted(shared))})")
        base = shared[section]
        for k in value:
            close = difflib.get_close_matches(k, list(base), n=1, cutoff=0.8)
            if k not in base and close:
                raise ConfigError(f"{path}: '{section}.{k}' is not a shared {section}: key; did you mean "
                                  f"'{close[0]}'? (shared keys: {', '.join(sorted(base))})")
        value = _check_types(value, base, f"{path}, against {SHARED_DEFAULTS}", frozenset(), f"{section}.")
        out[section] = {**copy.deepcopy(base), **value}
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        data = load_yaml(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping")
    return data


def _load_chain(path: Path, seen: tuple = ()) -> tuple[dict, frozenset, dict]:
    """The merged config, the free-form paths of its root, and the root (whose values give the types)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"circular 'base:' chain: {' -> '.join(map(str, seen + (path,)))}")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        data = _inherit_shared(data, path)
        return data, frozenset(_free_paths(data)), data
    parent, free, root = _load_chain((path.parent / base), seen + (path,))
    _strict_merge(parent, data, source=str(path), free=free)  # unknown keys first, then types
    return _strict_merge(parent, _check_types(data, root, str(path), free), source=str(path), free=free), free, root


def parse_overrides(overrides: Iterable[str]) -> dict:
    """``["a.b=3", "c=[1,2]"]`` -> ``{"a": {"b": 3}, "c": [1, 2]}`` with YAML-typed values."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        value = load_yaml(raw) if raw != "" else ""
        node = tree
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{p}'")
        node[parts[-1]] = value
    return tree


# Ranges by key name, for every project: (leaf-name pattern, low, high, low included, high included,
# what the bound means). Checked on the merged config at load time, before any run folder exists;
# a project's own derived checks (sizes computed from several keys) stay in its check_config.
RANGES = [
    (r"(^|_)batch_size$|^accum_iter$|^(speed|max)_batch$", 1, None, True, True, "a batch holds at least one sample"),
    (r"^(image|img|patch|grid|gt|local|block)_size$|^sample_rate$|^num_updates$|^(knn_)?k$|^shots$|^num_vis$",
     1, None, True, True, "a size or count of at least 1"),
    (r"^size$", 1, None, True, True, "a buffer or set holds at least one sample"),
    (r"(^|_)every(_|$)|^snapshot_every$|^num_workers$|^max_steps$|(^|_)epochs$|^keep_checkpoints$",
     0, None, True, True, "a count or cadence of 0 or more (0: off)"),
    (r"^(train|val|test|knn_train|knn_test|every_knn_train|every_knn_test)_size$", 0, None, True, True,
     "a number of samples (null: all)"),
    (r"^(max_bad_fraction|min_lr_frac|drop_path_rate|eval_crop_ratio)$", 0, 1, True, True, "a fraction"),
    (r"^noise_rate$", 0, 1, True, False, "a fraction of the labels made wrong"),
    (r"keep_ratios?$", 0, 1, False, True, "a fraction kept"),
    (r"^resize_ratio$", 1, None, True, True, "the resize before a crop is at least the crop"),
    (r"mask_ratio$", 0, 1, False, False, "a fraction masked: some patches must stay visible and some masked"),
    (r"^duration$", 0, None, False, True, "a length in seconds"),
]
_RANGES = [(re.compile(pat), *rest) for pat, *rest in RANGES]


def _interval(lo, hi, lo_in, hi_in) -> str:
    if hi is None:
        return f"{'>=' if lo_in else '>'} {lo}"
    return f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def _in_range(x, lo, hi, lo_in, hi_in) -> bool:
    return (x >= lo if lo_in else x > lo) and (hi is None or (x <= hi if hi_in else x < hi))


def check_ranges(tree: dict, free: frozenset = frozenset(), where: str = "") -> None:
    """Every number whose key name has a rule in ``RANGES`` (list items included) lies in its interval."""
    for k, v in tree.items():
        key = f"{where}{k}"
        if key in free:
            continue
        if isinstance(v, dict):
            check_ranges(v, free, key + ".")
            continue
        rule = next((r for r in _RANGES if r[0].search(str(k))), None)
        if rule is None:
            continue
        _, lo, hi, lo_in, hi_in, meaning = rule
        for i, x in enumerate(v if isinstance(v, list) else [v]):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                continue
            if not _in_range(x, lo, hi, lo_in, hi_in):
                at = f"{key}[{i}]" if isinstance(v, list) else key
                raise ConfigError(f"config key '{at}' = {x!r}: must be {_interval(lo, hi, lo_in, hi_in)} ({meaning})")


def config_arg_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The command line of an entry that runs one config: ``--config FILE`` then ``key=value`` overrides
    (read them with ``load_config(a.config, a.overrides)``); add the entry's own options to it."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a YAML config (projects/<p>/configs/<name>.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    return p


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Load ``path`` (following ``base:``), apply overrides, check types and ranges, and record the
    experiment name."""
    path = Path(path)
    data, free, root = _load_chain(path)
    tree = parse_overrides(overrides)
    _strict_merge(data, tree, source="command line", free=free)  # unknown keys first, then types
    data = _strict_merge(data, _check_types(tree, root, "command line", free), source="command line", free=free)
    check_ranges(data, free)
    cfg = Config(data)
    if "run" in cfg and isinstance(cfg.run, dict) and "name" in cfg.run and not cfg.run.name:
        cfg.run.name = path.stem
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    from shared.checkpoint import atomic_write_text

    atomic_write_text(path, cfg.dump())


_ABSENT = object()


def config_changes(old: dict, new: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every leaf that differs; a key only one side has gets
    ``MISSING`` on the other."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        va, vb = old.get(k, _ABSENT), new.get(k, _ABSENT)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_changes(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append((f"{prefix}{k}", MISSING if va is _ABSENT else va, MISSING if vb is _ABSENT else vb))
    return out


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING = _Missing()


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config trees, as ``key: old -> new`` lines."""
    return [f"{k}: {va!r} -> {vb!r}" for k, va, vb in config_changes(a, b, prefix)]
