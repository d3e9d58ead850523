"""The acceleration schedule from gradient-error tables measured at several points of training:
from each measured point to the next, the setting with the least cost-adjusted MSE.

    python -m projects.accel_ssl.schedule_search T0.json T25.json T50.json T75.json --total-steps N [--out sched.yaml]

Each table is a grad_error output; its training progress is its step / total steps. Prints the
``compression.schedule`` YAML to paste into a config.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def search(tables: list[dict], total_steps: int) -> list[dict]:
    points = sorted(tables, key=lambda t: t["step"])
    stages = []
    for i, t in enumerate(points):
        until = points[i + 1]["step"] / total_steps if i + 1 < len(points) else 1.0
        best = min(t["rows"], key=lambda r: r["ca_mse"])
        if stages and stages[-1]["setting"] == best["setting"]:
            stages[-1]["until"] = until
        else:
            stages.append({"until": until, "setting": best["setting"]})
    return [{"until": round(s["until"], 6), **s["setting"]} for s in stages if s["until"] > 0]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="+")
    p.add_argument("--total-steps", type=int, required=True)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    sched = search([json.loads(Path(t).read_text()) for t in a.tables], a.total_steps)
    text = yaml.safe_dump({"compression": {"schedule": sched}}, sort_keys=False)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return sched


if __name__ == "__main__":
    main()
