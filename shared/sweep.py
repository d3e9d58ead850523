"""A grid of runs (config x settings x seeds), one job each, and one table of their results.

    python -m shared.sweep --grid projects/ptnl/configs/sweeps/noise_rn50.yaml --dry-run
    python -m shared.sweep --grid projects/ptnl/configs/sweeps/noise_rn50.yaml \
        --cluster slurm --partition gpu --time-min 120 data.root=$DATA_ROOT
    python -m shared.sweep --grid projects/ptnl/configs/sweeps/noise_rn50.yaml --gather data.root=$DATA_ROOT
    python -m shared.sweep --grid ... --configs dtd ucf101 --cluster none     # here, one after another

A grid file (any project; it lives in ``projects/<p>/configs/sweeps/``):

    name: noise_rn50
    configs: [dtd, ucf101]           # projects/<p>/configs/<name>.yaml ("datasets" is accepted too)
    overrides: []                    # applied to every job (before the command line's)
    grids:                           # each: fixed overrides x the product of its axes
      - fixed: {method: coop, fewshot.noise_type: random}
        axes: {fewshot.noise_rate: [0.0, 0.125, 0.25, 0.5], loss.name: [ce, gce], run.seed: [1, 2, 3]}
    # optional: project (default: from the grid's path), entry (default projects.<p>.train),
    # (configs are read from the configs/ folder holding sweeps/, else projects/<project>/configs/)
    # metric (the results.json key tabled, dotted; default test.accuracy)

Each job runs ``<entry>.main(cfg)`` through ``shared.launch.Job`` (submitit; requeued on preemption,
resumed from its run folder); its run folder is named from its settings, so resubmitting a grid
skips finished runs and resumes killed ones. ``--gather`` reads every run's results.json and writes
``<run.root>/<project>/sweeps/<name>/results.{md,csv,json}``: one row per setting (all but the
seed) with the metric's mean and std over seeds, and, where every run saved ``test_logits.pt``
({"logits", "labels"}), the accuracy of the seeds' averaged logits (the ensemble).

The entry module may define, to name runs and rows its own way:
    run_name(cfg) -> str                    the run folder's name (default: config + the grid's values)
    sweep_settings(results) -> dict         the columns identifying a row (default: the grid's keys)
    sweep_values(results) -> dict[str, float]   more numbers averaged over seeds (default: none)
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import re
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import yaml

from shared.checkpoint import atomic_write_text
from shared.config import load_config, load_yaml
from shared.launch import Job, add_cluster_args, make_executor
from shared.report import write_csv

REPO = Path(__file__).resolve().parent.parent
GRID_KEYS = {"name", "project", "entry", "metric", "configs", "datasets", "overrides", "grids"}
SEED_KEYS = ("run.seed", "seed")


def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def _project_from_path(path: Path) -> str | None:
    parts = path.resolve().parts
    for i in range(len(parts) - 2):
        if parts[i] == "projects" and parts[i + 2] == "configs":
            return parts[i + 1]
    return None


def read_grid(path: str | os.PathLike) -> dict:
    """The grid, validated, with its defaults filled: name, project, entry, metric, configs, overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file not found: {path}")
    g = load_yaml(path.read_text()) or {}
    if not isinstance(g, dict):
        raise ValueError(f"{path}: a grid file is a mapping with keys {sorted(GRID_KEYS)}")
    unknown = set(g) - GRID_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; valid: {sorted(GRID_KEYS)}")
    if "configs" in g and "datasets" in g:
        raise ValueError(f"{path}: give 'configs' or its alias 'datasets', not both")
    g["configs"] = g.pop("configs", None) or g.pop("datasets", None)
    if not g["configs"] or not g.get("grids"):
        raise ValueError(f"{path}: needs 'configs' (or 'datasets') and 'grids'")
    for i, sub in enumerate(g["grids"]):
        if not isinstance(sub, dict) or set(sub) - {"fixed", "axes"}:
            raise ValueError(f"{path}: grids[{i}] may only have 'fixed' and 'axes'")
        for k, vals in (sub.get("axes") or {}).items():
            if not isinstance(vals, list) or not vals:
                raise ValueError(f"{path}: grids[{i}].axes.{k} must be a non-empty list, got {vals!r}")
    project = g.get("project") or (g["entry"].split(".")[1] if str(g.get("entry", "")).startswith("projects.")
                                   else _project_from_path(path))
    if not project:
        raise ValueError(f"{path}: say which project the grid is for ('project: <name>'), or keep the grid "
                         "in projects/<name>/configs/sweeps/")
    g["project"] = project
    g.setdefault("entry", f"projects.{project}.train")
    g.setdefault("metric", "test.accuracy")
    g.setdefault("name", path.stem)
    g.setdefault("overrides", [])
    here = path.resolve().parent  # a grid in <...>/configs/sweeps/ names the configs next to it
    g["config_dir"] = str(here.parent if here.name == "sweeps" and here.parent.name == "configs"
                          else REPO / "projects" / project / "configs")
    return g


def default_run_name(config: str, point: list[str]) -> str:
    """<config>_<key><value>_... from the grid's overrides (the last part of each dotted key)."""
    parts = [config]
    for o in point:
        k, v = o.split("=", 1)
        parts.append(k.rsplit(".", 1)[-1] + v)
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", "_".join(parts))


def expand(grid: dict, configs: list[str] | None = None, extra: list[str] = ()) -> list[dict]:
    """Every job of the grid: {config, overrides, name, run_dir, settings, entry, metric}.

    Every job's config is loaded (and so validated) here, before anything is submitted."""
    entry = importlib.import_module(grid["entry"])
    namer = getattr(entry, "run_name", None)
    jobs = []
    for name in configs or grid["configs"]:
        if name not in grid["configs"]:
            raise ValueError(f"config {name!r} is not in this grid ({grid['configs']})")
        config = Path(grid["config_dir"]) / f"{name}.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"no config {name!r}: {config}")
        for sub in grid["grids"]:
            fixed = [f"{k}={_fmt(v)}" for k, v in (sub.get("fixed") or {}).items()]
            axes = sub.get("axes") or {}
            for values in itertools.product(*axes.values()):
                point = [f"{k}={_fmt(v)}" for k, v in zip(axes, values)]
                overrides = list(grid["overrides"]) + fixed + point + list(extra)
                cfg = load_config(config, overrides)
                if any(o.startswith("run.name=") for o in extra):
                    run = cfg.run.name
                else:
                    run = namer(cfg) if namer else default_run_name(name, fixed + point)
                overrides.append(f"run.name={run}")
                settings = {"config": name}
                settings.update({o.split("=", 1)[0]: o.split("=", 1)[1] for o in fixed + point
                                 if o.split("=", 1)[0] not in SEED_KEYS})
                jobs.append({"config": str(config), "overrides": overrides, "name": run,
                             "run_dir": str(Path(cfg.run.root) / cfg.run.project / run), "settings": settings,
                             "entry": grid["entry"], "metric": grid["metric"]})
    names = [j["name"] for j in jobs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two jobs would share a run folder: {dup[:3]}")
    return jobs


def submit(jobs: list[dict], args, folder: Path):
    if args.cluster == "none":
        results = []
        for j in jobs:
            print(f"[{len(results) + 1}/{len(jobs)}] {j['name']}", flush=True)
            results.append(Job(j["entry"], j["config"], j["overrides"])())
        return results
    args.gpus_per_node, args.nodes = 1, 1  # one GPU per run of the grid
    executor = make_executor(args, folder, f"{jobs[0]['entry'].split('.')[-2]}-sweep",
                             array_parallelism=args.parallel)
    with executor.batch():
        submitted = [executor.submit(Job(j["entry"], os.path.abspath(j["config"]), j["overrides"])) for j in jobs]
    print(f"submitted {len(submitted)} jobs ({args.cluster}); logs in {folder}", flush=True)
    if args.wait or args.cluster == "debug":  # debug jobs run in this process when their result is asked
        return [s.result() for s in submitted]
    return submitted


def lookup(results: dict, key: str, where: str = "results.json"):
    """``results["a"]["b"]`` for ``key="a.b"``, with a clear error naming what is there."""
    node = results
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            have = sorted(node) if isinstance(node, dict) else type(node).__name__
            raise KeyError(f"{where}: no '{key}' (at '{part}'; there is {have})")
        node = node[part]
    return node


def gather(jobs: list[dict]) -> list[dict]:
    """One row per setting (all but the seed): seeds found, mean/std of the metric, the ensemble."""
    import torch

    if not jobs:
        return []
    entry = importlib.import_module(jobs[0]["entry"])
    settings_of = getattr(entry, "sweep_settings", None)
    values_of = getattr(entry, "sweep_values", None)
    groups: OrderedDict[tuple, list] = OrderedDict()
    missing = []
    for j in jobs:
        f = Path(j["run_dir"]) / "results.json"
        if not f.is_file():
            missing.append(j["name"])
            continue
        res = json.loads(f.read_text())
        s = settings_of(res) if settings_of else dict(j["settings"])
        value = float(lookup(res, j["metric"], str(f)))
        extra = values_of(res) if values_of else {}
        groups.setdefault(tuple(s.items()), []).append((j["run_dir"], value, extra))
    rows = []
    for key, runs in groups.items():
        vals = [v for _, v, _ in runs]
        row = dict(key)
        row.update({"seeds": len(runs), "mean": float(np.mean(vals)), "std": float(np.std(vals))})
        for k in dict.fromkeys(k for _, _, e in runs for k in e):
            got = [e[k] for _, _, e in runs if e.get(k) is not None]
            row[k] = float(np.mean(got)) if got else None
        logits = [Path(d) / "test_logits.pt" for d, _, _ in runs]
        if len(runs) > 1 and all(p.is_file() for p in logits):
            loaded = [torch.load(p, weights_only=True) for p in logits]
            avg = torch.stack([x["logits"].float() for x in loaded]).mean(0)
            row["ensemble"] = 100 * float((avg.argmax(-1) == loaded[0]["labels"]).float().mean())
        rows.append(row)
    if missing:
        print(f"{len(missing)} of {len(jobs)} runs have no results yet (e.g. {missing[:3]})", flush=True)
    return rows


def _columns(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(settings, averaged values): a row holds its settings, then seeds/mean/std, values, ensemble."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    settings = [k for k in keys if k not in ("seeds", "mean", "std", "ensemble") and
                all(list(r).index(k) < list(r).index("seeds") for r in rows if k in r)]
    values = [k for k in keys if k not in settings and k not in ("seeds", "mean", "std", "ensemble")]
    return settings, values


def markdown(rows: list[dict]) -> str:
    """The gathered rows: the settings, seeds, mean ± std, ensemble, then any averaged values."""
    settings, values = _columns(rows)
    head = settings + ["seeds", "mean ± std", "ensemble"] + values
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_fmt(r.get(k, "-")) for k in settings] + [
            str(r["seeds"]), f"{r['mean']:.2f} ± {r['std']:.2f}",
            f"{r['ensemble']:.2f}" if "ensemble" in r else "-"]
        cells += [f"{r[k]:.4g}" if isinstance(r.get(k), float) else "-" for k in values]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_tables(rows: list[dict], out_dir: Path) -> str:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown(rows)
    atomic_write_text(out_dir / "results.md", md + "\n")
    atomic_write_text(out_dir / "results.json", json.dumps(rows, indent=2) + "\n")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(rows, out_dir / "results.csv", keys=keys)
    return md


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", required=True, help="a grid YAML (projects/<p>/configs/sweeps/)")
    p.add_argument("--configs", "--datasets", dest="configs", nargs="*", default=None,
                   help="a subset of the grid's configs")
    p.add_argument("--gather", action="store_true", help="do not submit; collect the results into one table")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and exit")
    p.add_argument("--cluster", default="slurm", choices=["slurm", "auto", "local", "debug", "none"],
                   help="slurm (default) | auto (submitit decides) | local/debug (tests) | none: run here in turn")
    p.add_argument("--parallel", type=int, default=64, help="SLURM array parallelism")
    add_cluster_args(p, cpus_per_task=8, mem_gb=32, time_min=180, max_requeue=5)
    p.add_argument("overrides", nargs="*", help="key=value for every job (e.g. data.root=/data/coop)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    grid = read_grid(args.grid)
    jobs = expand(grid, args.configs, args.overrides)
    cfg0 = load_config(jobs[0]["config"], jobs[0]["overrides"])
    out_dir = Path(cfg0.run.root) / cfg0.run.project / "sweeps" / grid["name"]
    if args.dry_run:
        for j in jobs:
            print(j["name"], " ".join(j["overrides"]))
        print(f"{len(jobs)} jobs")
        return jobs
    if args.gather:
        rows = gather(jobs)
        md = write_tables(rows, out_dir)
        print(md + f"\n\nwritten to {out_dir}/results.{{md,csv,json}}")
        return rows
    return submit(jobs, args, Path(args.log_dir) if args.log_dir else out_dir / "submitit")


if __name__ == "__main__":
    main(sys.argv[1:])
