"""YAML configs with ``base:`` inheritance, strict keys and dotted command-line overrides.

A project's root config (the one without ``base:``) declares every valid key with its default.
Configs that inherit from it, and ``key.sub=value`` overrides, may only set keys that exist;
an unknown key is an error naming the closest valid ones. An empty mapping (``{}``) in the
root marks a free-form section whose keys are not checked.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml


class ConfigError(ValueError):
    pass


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


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        data = load_yaml(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping")
    return data


def _load_chain(path: Path, seen: tuple = ()) -> tuple[dict, frozenset]:
    """The merged config and the free-form paths of its root."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"circular 'base:' chain: {' -> '.join(map(str, seen + (path,)))}")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data, frozenset(_free_paths(data))
    parent, free = _load_chain((path.parent / base), seen + (path,))
    return _strict_merge(parent, data, source=str(path), free=free), free


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


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Load ``path`` (following ``base:``), apply overrides, and record the experiment name."""
    path = Path(path)
    data, free = _load_chain(path)
    data = _strict_merge(data, parse_overrides(overrides), source="command line", free=free)
    cfg = Config(data)
    if "run" in cfg and isinstance(cfg.run, dict) and "name" in cfg.run and not cfg.run.name:
        cfg.run.name = path.stem
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    from shared.checkpoint import atomic_write_text

    atomic_write_text(path, cfg.dump())


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config trees."""
    keys = set(a) | set(b)
    out = []
    for k in sorted(keys):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out
