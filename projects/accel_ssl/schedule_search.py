"""The acceleration schedule from gradient-error tables measured at several points of training:
from each measured point to the next, the setting with the least cost-adjusted MSE.

    python -m projects.accel_ssl.schedule_search T0.json T25.json T50.json T75.json --total-steps N [--out sched.yaml]
        [--markdown table.md]

Each table is a grad_error output; its training progress is its step / total steps. Prints the
``compression.schedule`` YAML to paste into a config and (``--markdown``) the CA-MSE of every setting
at every point as a markdown table (the least in bold, the cost in brackets).
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


def label(setting: dict) -> str:
    """A setting in words: 'full length', 'keep 0.5 online', 'patch 8 + keep 0.5 both' ..."""
    parts = [f"patch {setting['patch']}"] if setting.get("patch") else []
    on, tg = setting.get("keep_online") or [1.0], setting.get("keep_target") or [1.0]
    fmt = lambda ks: "/".join(f"{k:g}" for k in ks)
    if on == tg and on != [1.0]:
        parts.append(f"keep {fmt(on)} both")
    else:
        parts += ([f"keep {fmt(on)} online"] if on != [1.0] else []) + ([f"keep {fmt(tg)} target"] if tg != [1.0] else [])
    return " + ".join(parts) or "full length"


def markdown(tables: list[dict]) -> str:
    """CA-MSE per setting (columns) at each measured step (rows), the least in bold, each setting's cost
    in brackets; the last column names the setting chosen from that point on."""
    points = sorted(tables, key=lambda t: t["step"])
    names = list(dict.fromkeys(label(r["setting"]) for t in points for r in t["rows"]))
    out = ["| step | " + " | ".join(names) + " | chosen |", "|---" * (len(names) + 2) + "|"]
    for t in points:
        by = {label(r["setting"]): r for r in t["rows"]}
        best = min(t["rows"], key=lambda r: r["ca_mse"])
        cells = []
        for n in names:
            r = by.get(n)
            if r is None:
                cells.append("-")
                continue
            v = f"{r['ca_mse']:.3g}"
            cells.append((f"**{v}**" if r is best else v) + (f" ({r['cost']:.2f})" if n != "full length" else ""))
        out.append(f"| {t['step']} | " + " | ".join(cells) + f" | {label(best['setting'])} |")
    return "\n".join(out)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="+")
    p.add_argument("--total-steps", type=int, required=True)
    p.add_argument("--out", default=None)
    p.add_argument("--markdown", default=None, help="write the CA-MSE table (markdown) here")
    a = p.parse_args(argv)
    tables = [json.loads(Path(t).read_text()) for t in a.tables]
    sched = search(tables, a.total_steps)
    text = yaml.safe_dump({"compression": {"schedule": sched}}, sort_keys=False)
    print(markdown(tables) + "\n\n" + text)
    if a.out:
        Path(a.out).write_text(text)
    if a.markdown:
        Path(a.markdown).write_text(markdown(tables) + "\n")
    return sched


if __name__ == "__main__":
    main()
