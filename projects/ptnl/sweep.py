"""A grid of PTNL runs (dataset x noise x loss x seed ...), one job each, and one table of results.

    python -m projects.ptnl.sweep --grid projects/ptnl/configs/sweeps/noise_rn50.yaml --dry-run
    python -m projects.ptnl.sweep --grid projects/ptnl/configs/sweeps/noise_rn50.yaml \
        --cluster slurm --partition gpu --time-min 120 data.root=$DATA_ROOT
    python -m projects.ptnl.sweep --grid projects/ptnl/configs/sweeps/noise_rn50.yaml --gather data.root=$DATA_ROOT
    python -m projects.ptnl.sweep --grid ... --datasets dtd ucf101 --cluster none     # here, one after another

A grid file:

    name: noise_rn50
    datasets: [dtd, ucf101]          # projects/ptnl/configs/<dataset>.yaml
    overrides: []                    # applied to every job (before the command line's)
    grids:                           # each: fixed overrides x the product of its axes
      - fixed: {method: coop, fewshot.noise_type: random}
        axes: {fewshot.noise_rate: [0.0, 0.125, 0.25, 0.5], loss.name: [ce, gce], run.seed: [1, 2, 3]}

Each job runs ``projects.ptnl.train.main`` through ``shared.launch.Job`` (submitit; requeued on
preemption, resumed from its run folder); its run folder is named from its settings
(``train.run_name``), so resubmitting a grid skips finished runs and resumes killed ones.
``--gather`` reads every run's results.json and writes ``<run.root>/ptnl/sweeps/<name>/results.{md,csv,json}``:
mean and std over seeds, and the accuracy of the seeds' averaged test logits (the prompt ensemble).
"""
from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import yaml

from shared.checkpoint import atomic_write_text
from shared.config import load_config, load_yaml
from shared.launch import Job, add_cluster_args, make_executor

CONFIG_DIR = Path(__file__).parent / "configs"
ENTRY = "projects.ptnl.train"
GRID_KEYS = {"name", "datasets", "overrides", "grids"}


def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def read_grid(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file not found: {path}")
    g = load_yaml(path.read_text()) or {}
    unknown = set(g) - GRID_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; valid: {sorted(GRID_KEYS)}")
    if not g.get("datasets") or not g.get("grids"):
        raise ValueError(f"{path}: needs 'datasets' and 'grids'")
    for i, sub in enumerate(g["grids"]):
        if set(sub) - {"fixed", "axes"}:
            raise ValueError(f"{path}: grids[{i}] may only have 'fixed' and 'axes'")
    g.setdefault("name", path.stem)
    g.setdefault("overrides", [])
    return g


def expand(grid: dict, datasets: list[str] | None = None, extra: list[str] = ()) -> list[dict]:
    """Every job of the grid: {config, overrides, name, settings}; configs are validated here."""
    from projects.ptnl.train import run_name

    jobs = []
    for ds in datasets or grid["datasets"]:
        if ds not in grid["datasets"]:
            raise ValueError(f"dataset {ds!r} is not in this grid ({grid['datasets']})")
        config = CONFIG_DIR / f"{ds}.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"no config for dataset {ds!r}: {config}")
        for sub in grid["grids"]:
            fixed = [f"{k}={_fmt(v)}" for k, v in (sub.get("fixed") or {}).items()]
            axes = sub.get("axes") or {}
            for values in itertools.product(*axes.values()):
                point = [f"{k}={_fmt(v)}" for k, v in zip(axes, values)]
                overrides = list(grid["overrides"]) + fixed + point + list(extra)
                cfg = load_config(config, overrides)
                name = run_name(cfg) if not any(o.startswith("run.name=") for o in extra) else cfg.run.name
                overrides.append(f"run.name={name}")
                jobs.append({"config": str(config), "overrides": overrides, "name": name,
                             "run_dir": str(Path(cfg.run.root) / cfg.run.project / name)})
    names = [j["name"] for j in jobs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"two jobs would share a run folder: {sorted(dup)[:3]}")
    return jobs


def submit(jobs: list[dict], args, folder: Path):
    if args.cluster == "none":
        results = []
        for j in jobs:
            print(f"[{len(results) + 1}/{len(jobs)}] {j['name']}", flush=True)
            results.append(Job(ENTRY, j["config"], j["overrides"])())
        return results
    args.gpus_per_node, args.nodes = 1, 1  # one GPU per run of the grid
    executor = make_executor(args, folder, "ptnl-sweep", array_parallelism=args.parallel)
    with executor.batch():
        submitted = [executor.submit(Job(ENTRY, os.path.abspath(j["config"]), j["overrides"])) for j in jobs]
    print(f"submitted {len(submitted)} jobs ({args.cluster}); logs in {folder}", flush=True)
    if args.wait or args.cluster == "debug":  # debug jobs run in this process when their result is asked
        return [s.result() for s in submitted]
    return submitted


GROUP_KEYS = ("dataset", "method", "arch", "noise_type", "noise_rate", "loss")


def _settings(res: dict) -> dict:
    noise = res.get("noise") or {}
    loss = res.get("loss") or {}
    return {"dataset": res["dataset"], "method": res["method"], "arch": res["arch"],
            "noise_type": noise.get("type", "-"), "noise_rate": noise.get("rate", "-"),
            "loss": (loss.get("name", "-") + (f" q={loss['q']:g}" if loss.get("name") == "gce" else ""))
            if loss else "-"}


def gather(jobs: list[dict]) -> list[dict]:
    """One row per configuration (all settings but the seed): seeds found, mean/std, ensemble."""
    import torch

    groups: "OrderedDict[tuple, list]" = OrderedDict()
    missing = []
    for j in jobs:
        f = Path(j["run_dir"]) / "results.json"
        if not f.is_file():
            missing.append(j["name"])
            continue
        res = json.loads(f.read_text())
        s = _settings(res)
        groups.setdefault(tuple(s[k] for k in GROUP_KEYS), []).append((j["run_dir"], res))
    rows = []
    for key, runs in groups.items():
        accs = [r["test"]["accuracy"] for _, r in runs]
        row = dict(zip(GROUP_KEYS, key))
        row.update({"seeds": len(runs), "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                    "train_noise": float(np.mean([r["train_set"]["noise_rate"] for _, r in runs]))
                    if "train_set" in runs[0][1] else None})
        logits = [Path(d) / "test_logits.pt" for d, _ in runs]
        if len(runs) > 1 and all(p.is_file() for p in logits):
            loaded = [torch.load(p, weights_only=False) for p in logits]
            avg = torch.stack([x["logits"].float() for x in loaded]).mean(0)
            row["ensemble"] = 100 * float((avg.argmax(-1) == loaded[0]["labels"]).float().mean())
        rows.append(row)
    if missing:
        print(f"{len(missing)} of {len(jobs)} runs have no results yet (e.g. {missing[:3]})", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    head = ["dataset", "method", "arch", "noise", "rate", "loss", "seeds", "acc mean ± std", "ensemble",
            "train-label noise"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rate = r["noise_rate"]
        out.append("| " + " | ".join([
            r["dataset"], r["method"], r["arch"], str(r["noise_type"]),
            f"{100 * rate:g}%" if isinstance(rate, (int, float)) else str(rate), r["loss"], str(r["seeds"]),
            f"{r['mean']:.2f} ± {r['std']:.2f}", f"{r['ensemble']:.2f}" if "ensemble" in r else "-",
            f"{100 * r['train_noise']:.1f}%" if r.get("train_noise") is not None else "-"]) + " |")
    return "\n".join(out)


def write_tables(rows: list[dict], out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown(rows)
    atomic_write_text(out_dir / "results.md", md + "\n")
    atomic_write_text(out_dir / "results.json", json.dumps(rows, indent=2) + "\n")
    buf = io.StringIO()
    keys = list(GROUP_KEYS) + ["seeds", "mean", "std", "ensemble", "train_noise"]
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out_dir / "results.csv", buf.getvalue())
    return md


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", required=True, help="a grid YAML (projects/ptnl/configs/sweeps/)")
    p.add_argument("--datasets", nargs="*", default=None, help="a subset of the grid's datasets")
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
    jobs = expand(grid, args.datasets, args.overrides)
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
