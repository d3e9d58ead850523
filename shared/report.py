"""Results tables, CSV and plots, generated from the numbers runs write, never typed by hand.

    python -m shared.report            # (make report) RESULTS.md at the root + every README's marked tables
    python -m shared.report --check    # exit 1 if RESULTS.md or a README block is out of date

The source of every table is a committed JSON file per table, ``projects/<p>/results/<table>.json``
(``runs/`` is not committed), written at the end of a run by ``write_results``:

    write_results("ezvsl", "demo", rows, scale="generated demo set, 4 epochs, CPU", command="make reproduce-ezvsl",
                  figures=[("projects/ezvsl/figures/demo_heatmaps.jpg", "test frames")])

with one row per number: ``{"method", "metric", "ours", "paper", "setting", "std", "scale", "note"}``
(``ours`` None = not run). A README shows a table between ``<!-- results:<table> -->`` and
``<!-- /results:<table> -->``; ``make report`` fills those blocks and writes RESULTS.md: every
project's tables with the paper beside ours, the scale each was run at, and links to the figures.
A project without results files is listed as "not run" (with its README's hand-written results
section, if it has one, quoted until it adopts the contract).

Speed: every ``results/bench/<device>.json`` that ``make bench`` (shared/bench_suite.py) wrote becomes
one table in RESULTS.md's "## Speed" section, one line per project.

Plots: ``plot_curves`` draws a metric against the step or the training time (``budget/train_time_s``)
for several runs from their ``metrics.jsonl``; ``plot_xy`` draws any named series (accuracy against
noise rate per method); ``figure_to_tensorboard`` puts a figure in a run's TensorBoard.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from shared.checkpoint import atomic_write_text
from shared.logging import read_metrics

REPO = Path(__file__).resolve().parent.parent
ROW_KEYS = ("setting", "method", "metric", "paper", "ours", "std", "scale", "note")
REQUIRED_ROW_KEYS = ("method", "metric", "ours")
TABLE_KEYS = ("project", "table", "title", "scale", "command", "date", "git", "rows", "figures", "notes")
NOT_RUN = "not run"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ----------------------------------------------------------------------------------------- tables
def _number(x, where: str):
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{where}: expected a number or null, got {x!r}")
    if not math.isfinite(x):
        raise ValueError(f"{where}: {x!r} is not finite")
    return float(x)


def validate_rows(rows: Iterable[Mapping], where: str = "rows") -> list[dict]:
    """Rows as plain dicts in ROW_KEYS order; unknown keys, missing keys and non-numbers are errors."""
    out = []
    for i, r in enumerate(rows):
        w = f"{where}[{i}]"
        if not isinstance(r, Mapping):
            raise ValueError(f"{w}: a row is a mapping, got {type(r).__name__}")
        unknown = set(r) - set(ROW_KEYS)
        if unknown:
            raise ValueError(f"{w}: unknown keys {sorted(unknown)}; a row has {list(ROW_KEYS)}")
        missing = [k for k in REQUIRED_ROW_KEYS if k not in r]
        if missing:
            raise ValueError(f"{w}: missing {missing} (required: {list(REQUIRED_ROW_KEYS)})")
        row = {k: r.get(k) for k in ROW_KEYS}
        for k in ("paper", "ours", "std"):
            row[k] = _number(row[k], f"{w}.{k}")
        for k in ("setting", "method", "metric", "scale", "note"):
            if row[k] is not None and not isinstance(row[k], str):
                raise ValueError(f"{w}.{k}: expected text, got {row[k]!r}")
        if not row["method"] or not row["metric"]:
            raise ValueError(f"{w}: method and metric must not be empty")
        out.append(row)
    if not out:
        raise ValueError(f"{where}: no rows")
    return out


def validate_table(t: Mapping, where: str = "table") -> dict:
    if not isinstance(t, Mapping):
        raise ValueError(f"{where}: expected a JSON object")
    unknown = set(t) - set(TABLE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; a table has {list(TABLE_KEYS)}")
    for k in ("project", "table", "scale", "rows"):
        if not t.get(k):
            raise ValueError(f"{where}: '{k}' is required")
    figures = []
    for i, f in enumerate(t.get("figures") or []):
        if isinstance(f, str):
            f = {"path": f, "caption": ""}
        if not isinstance(f, Mapping) or not f.get("path") or set(f) - {"path", "caption"}:
            raise ValueError(f"{where}.figures[{i}]: expected {{'path': ..., 'caption': ...}}, got {f!r}")
        figures.append({"path": str(f["path"]), "caption": str(f.get("caption") or "")})
    out = {k: t.get(k) for k in TABLE_KEYS}
    out["rows"] = validate_rows(t["rows"], f"{where}.rows")
    out["figures"] = figures
    return out


def _git_sha(root: Path) -> str | None:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                                       stderr=subprocess.DEVNULL).strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def results_dir(project: str, root: str | os.PathLike = REPO) -> Path:
    return Path(root) / "projects" / project / "results"


def write_results(project: str, table: str, rows: Iterable[Mapping], *, scale: str, command: str,
                  title: str | None = None, figures: Sequence = (), notes: str | None = None,
                  root: str | os.PathLike = REPO) -> Path:
    """Write ``projects/<project>/results/<table>.json`` (and the same rows as ``<table>.csv``).

    ``figures``: paths relative to the repository root (or absolute paths inside it), or
    ``(path, caption)`` pairs, or ``{"path", "caption"}`` dicts; each must exist.
    """
    root = Path(root)
    if not _NAME.match(project) or not _NAME.match(table):
        raise ValueError(f"project and table names are file names: {project!r}, {table!r}")
    if not (root / "projects" / project).is_dir():
        raise FileNotFoundError(f"no project folder {root / 'projects' / project}")
    figs = []
    for f in figures:
        path, caption = (f, "") if isinstance(f, (str, os.PathLike)) else \
            (f["path"], f.get("caption", "")) if isinstance(f, Mapping) else f
        p = Path(path)
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise FileNotFoundError(f"figure not found: {p}")
        try:
            rel = p.resolve().relative_to(root.resolve())
        except ValueError:
            raise ValueError(f"figure {p} is outside the repository ({root}): put it in projects/{project}/figures/") \
                from None
        figs.append({"path": rel.as_posix(), "caption": caption})
    t = validate_table({"project": project, "table": table, "title": title or table, "scale": scale,
                        "command": command, "date": _dt.date.today().isoformat(), "git": _git_sha(root),
                        "rows": list(rows), "figures": figs, "notes": notes}, f"{project}/{table}")
    out = results_dir(project, root)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{table}.json"
    atomic_write_text(path, json.dumps(t, indent=2) + "\n")
    write_csv(t["rows"], out / f"{table}.csv")
    return path



def save_table(project: str, table: str, rows: list[dict], official: bool, out_dir: str | os.PathLike, **meta) -> Path:
    """A table beside the runs (``<out_dir>/<table>_results_table.json`` and ``.md``, always) and, when
    ``official`` (the demo as configured), the committed ``projects/<project>/results/<table>.json``
    through ``write_results``. Returns the file the README blocks read, or the local JSON."""
    from shared.checkpoint import atomic_write_text

    rows = validate_rows(rows, table)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    local = out_dir / f"{table}_results_table.json"
    atomic_write_text(local, json.dumps({"table": table, **meta, "rows": rows}, indent=2, default=str) + "\n")
    atomic_write_text(local.with_suffix(".md"), markdown_table(rows, pivot=True) + "\n")
    return write_results(project, table, rows, **meta) if official else local

def read_results(project: str, root: str | os.PathLike = REPO) -> list[dict]:
    """Every table of a project (``demo`` first, then by name); a malformed file is an error naming it."""
    d = results_dir(project, root)
    tables = []
    for f in sorted(d.glob("*.json"), key=lambda p: (p.stem != "demo", p.stem)):
        try:
            t = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from e
        t = validate_table(t, str(f))
        if t["project"] != project or t["table"] != f.stem:
            raise ValueError(f"{f}: says project={t['project']!r} table={t['table']!r}, "
                             f"but lives at projects/{project}/results/{f.stem}.json")
        tables.append(t)
    return tables


def fmt(x: float | None, std: float | None = None, digits: int = 2) -> str:
    if x is None:
        return NOT_RUN
    s = f"{x:.{digits}f}"
    return s + (f" ± {std:.{digits}f}" if std is not None else "")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping], pivot: bool = False, digits: int = 2) -> str:
    """Rows as a markdown table.

    Long form: setting | method | metric | paper | ours (+ scale / note columns when any row has one).
    ``pivot=True``: one line per (setting, method), one column per metric, cells "ours (paper p)".
    A missing paper number prints "-", a missing number of ours "not run".
    """
    rows = validate_rows(rows)
    has_setting = any(r["setting"] for r in rows)
    if pivot:
        metrics = list(dict.fromkeys(r["metric"] for r in rows))
        lines: dict[tuple, dict] = {}
        for r in rows:
            lines.setdefault((r["setting"] or "", r["method"]), {})[r["metric"]] = r
        head = (["setting"] if has_setting else []) + ["method"] + metrics
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for (setting, method), cells in lines.items():
            vals = []
            for m in metrics:
                r = cells.get(m)
                if r is None:
                    vals.append("")
                    continue
                v = fmt(r["ours"], r["std"], digits)
                vals.append(v + (f" (paper {fmt(r['paper'], None, digits)})" if r["paper"] is not None else ""))
            out.append("| " + " | ".join(_cell(c) for c in ([setting] if has_setting else []) + [method] + vals) + " |")
        return "\n".join(out)
    extra = [k for k in ("scale", "note") if any(r[k] for r in rows)]
    head = (["setting"] if has_setting else []) + ["method", "metric", "paper", "ours"] + extra
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ([r["setting"] or ""] if has_setting else []) + [
            r["method"], r["metric"], "-" if r["paper"] is None else fmt(r["paper"], None, digits),
            fmt(r["ours"], r["std"], digits)] + [r[k] or "" for k in extra]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out)


def write_csv(rows: Sequence[Mapping], path: str | os.PathLike, keys: Sequence[str] | None = None) -> Path:
    """Rows (any dicts; results rows by default in ROW_KEYS order) as CSV, written atomically."""
    rows = list(rows)
    keys = list(keys) if keys else [k for k in ROW_KEYS if any(k in r for r in rows)] or \
        list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows([{k: ("" if r.get(k) is None else r.get(k)) for k in keys} for r in rows])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())
    return path


def table_block(t: Mapping, link_base: str = "", pivot: bool | None = None, heading: str | None = None) -> str:
    """One table with its provenance: title, scale, command, date; the table; the figures.

    ``link_base``: how to reach the repository root from the markdown file ("" at the root,
    "../../" from a project README)."""
    pivot = pivot if pivot is not None else len({r["metric"] for r in t["rows"]}) > 1
    out = []
    if heading:
        out += [f"{heading} {t.get('title') or t['table']}", ""]
    prov = [f"Scale: {t['scale']}."]
    if t.get("command"):
        prov.append(f"Command: `{t['command']}`.")
    if t.get("date"):
        prov.append(f"Run {t['date']}" + (f" at {t['git']}." if t.get("git") else "."))
    out += [" ".join(prov), "", markdown_table(t["rows"], pivot=pivot)]
    if t.get("notes"):
        out += ["", t["notes"]]
    if t.get("figures"):
        out.append("")
        for f in t["figures"]:
            out.append(f"![{f['caption'] or Path(f['path']).stem}]({link_base}{f['path']})")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ README blocks
def _markers(name: str) -> tuple[str, str]:
    return f"<!-- results:{name} -->", f"<!-- /results:{name} -->"


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the part between the markers of ``name`` replaced by ``body``."""
    start, end = _markers(name)
    i, j = text.find(start), text.find(end)
    if i < 0 or j < 0 or j < i:
        raise ValueError(f"no block {start} ... {end}")
    if text.find(start, i + 1) >= 0:
        raise ValueError(f"two blocks {start}")
    return text[:i + len(start)] + "\n" + body.strip("\n") + "\n" + text[j:]


def update_readme(readme: str | os.PathLike, name: str, body: str, write: bool = True) -> bool:
    """Fill the ``name`` block of a README; True if its text changed."""
    readme = Path(readme)
    old = readme.read_text()
    new = replace_block(old, name, body)
    if new != old and write:
        atomic_write_text(readme, new)
    return new != old


def readme_blocks(readme: str | os.PathLike) -> list[str]:
    p = Path(readme)
    return re.findall(r"<!-- results:([A-Za-z0-9_.-]+) -->", p.read_text()) if p.is_file() else []


# --------------------------------------------------------------------------------------- RESULTS.md
def projects(root: str | os.PathLike = REPO) -> list[str]:
    d = Path(root) / "projects"
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))
                  and (any(p.glob("*.py")) or (p / "README.md").is_file()))


def _title(project: str, root: Path) -> str:
    readme = root / "projects" / project / "README.md"
    if readme.is_file():
        for line in readme.read_text().splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return project


def _readme_results_section(project: str, root: Path) -> str | None:
    """The hand-written "## Results" section of a README, links rewritten from the root, or None."""
    readme = root / "projects" / project / "README.md"
    if not readme.is_file():
        return None
    lines = readme.read_text().splitlines()
    try:
        i = next(k for k, line in enumerate(lines) if re.match(r"^##\s+Results\b", line))
    except StopIteration:
        return None
    j = next((k for k in range(i + 1, len(lines)) if re.match(r"^##\s", lines[k])), len(lines))
    body = "\n".join(lines[i + 1:j]).strip("\n")
    base = f"projects/{project}/"

    def fix(m):
        target = m.group(2)
        if re.match(r"^([a-z]+:|/|#)", target):
            return m.group(0)
        return f"{m.group(1)}({base}{target})"

    body = re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", fix, body)
    return re.sub(r"^###", "####", body, flags=re.M)


def results_page(root: str | os.PathLike = REPO) -> str:
    root = Path(root)
    names = projects(root)
    summary = ["| project | tables | figures | last run |", "|---|---|---|---|"]
    sections = []
    for p in names:
        tables = read_results(p, root)
        title = _title(p, root)
        head = f"## {title}\n\n[`projects/{p}`](projects/{p}/README.md)"
        if tables:
            dates = sorted(t["date"] for t in tables if t.get("date"))
            summary.append(f"| [{p}](#{_anchor(title)}) | {', '.join(t['table'] for t in tables)} | "
                           f"{sum(len(t['figures']) for t in tables)} | {dates[-1] if dates else '-'} |")
            body = "\n\n".join(table_block(t, "", heading="###") for t in tables)
        else:
            old = _readme_results_section(p, root)
            summary.append(f"| [{p}](#{_anchor(title)}) | {'README only (not generated)' if old else NOT_RUN} | - | - |")
            if old:
                body = (f"No generated table yet (no `projects/{p}/results/*.json`: its reproduce.py does not "
                        "write one yet). The results section of its README, as written by hand:\n\n" + old)
            else:
                body = f"**{NOT_RUN}**: no `projects/{p}/results/*.json` and no results in its README yet."
        sections.append(head + "\n\n" + body)
    intro = ("# Results\n\n"
             "Generated by `make report` (`python -m shared.report`) from each project's "
             "`projects/<p>/results/*.json`; do not edit. Every table says what was run and at which scale; "
             f"the paper's number stands beside ours (\"-\": the paper has none for that row, \"{NOT_RUN}\": "
             "we have no number yet). Demo tables are small runs on generated or package-installed data "
             "(CPU), not the paper's setting.\n")
    speed = speed_section(root)
    return intro + "\n" + "\n".join(summary) + "\n\n" + "\n\n".join(sections) + "\n" + \
        (f"\n{speed}\n" if speed else "")


# -------------------------------------------------------------------------------- Speed (make bench)
BENCH_KEYS = ("device", "torch", "cuda", "date", "git", "budget_s", "projects")
BENCH_RECORD_KEYS = ("what", "unit", "fp32", "bf16", "ratio", "tflops", "pct_bf16_peak", "peak_mem_gb", "status")


def read_bench(root: str | os.PathLike = REPO) -> list[tuple[Path, dict]]:
    """Every results/bench/*.json, by file name; a malformed file is an error naming it."""
    out = []
    for f in sorted((Path(root) / "results" / "bench").glob("*.json")):
        try:
            b = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from e
        missing = [k for k in BENCH_KEYS if not isinstance(b, Mapping) or k not in b]
        if missing:
            raise ValueError(f"{f}: missing {missing} (a bench file has {list(BENCH_KEYS)}; written by make bench)")
        for p, r in b["projects"].items():
            gone = [k for k in BENCH_RECORD_KEYS if k not in r]
            if gone:
                raise ValueError(f"{f}: project {p!r} is missing {gone}")
            for k in ("fp32", "bf16", "ratio", "tflops", "pct_bf16_peak", "peak_mem_gb"):
                _number(r[k], f"{f}: {p}.{k}")
        out.append((f, b))
    return out


def _rate(x: float | None, unit: str | None) -> str:
    if x is None:
        return "-"
    digits = 0 if x >= 100 else 1 if x >= 10 else 2
    return f"{x:.{digits}f} {unit or ''}".strip()


def _opt(x: float | None, spec: str, suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def speed_table(b: Mapping) -> str:
    """One device's bench file as a markdown table, one line per project."""
    head = ["project", "what", "fp32", "bf16", "ratio", "TFLOP/s", "% bf16 peak", "peak mem", "status"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p, r in b["projects"].items():
        tflops = "-" if r["tflops"] is None else f"{r['tflops']:.{2 if r['tflops'] >= 1 else 3}f}"
        status = r["status"] + (f" ({r['error'][:120]})" if r["status"] != "ok" and r.get("error") else "")
        cells = [p, r["what"] or "-", _rate(r["fp32"], r["unit"]), _rate(r["bf16"], r["unit"]),
                 _opt(r["ratio"], ".2f", "x"), tflops, _opt(r["pct_bf16_peak"], ".1f", " %"),
                 _opt(r["peak_mem_gb"], ".1f", " GB"), status]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out)


def speed_section(root: str | os.PathLike = REPO) -> str:
    """RESULTS.md's "## Speed": one table per results/bench/<device>.json; "" when there is none."""
    benches = read_bench(root)
    if not benches:
        return ""
    out = ["## Speed", "",
           "Generated from `results/bench/<device>.json`, written by `make bench` (every project's bench.py in its "
           "own process within its time budget, on the device present). fp32 and bf16: samples/s of what each "
           "project times, without and with bf16 autocast, measured in the same run; ratio = bf16 / fp32. On the "
           "CPU bf16 autocast is off (shared.amp runs fp32), so there is no bf16 number and TFLOP/s is the fp32 "
           "run's; the benches run there at small sizes (see each bench.py). TFLOP/s and % of the dense bf16 peak: "
           "of the bf16 run; peak mem: CUDA's max_memory_allocated in that run."]
    for f, b in benches:
        cuda = f", CUDA {b['cuda']}" if b.get("cuda") else ""
        out += ["", f"### {b['device']} (torch {b['torch']}{cuda}, {b['date']}, git {b['git'] or '-'})", "",
                f"`{f.relative_to(Path(root)).as_posix()}`: budget {b['budget_s']:g} s per project"
                + (f", {b['cpu_threads']} CPU thread(s) each" if b.get("cpu_threads") else "")
                + (f", `{b['command']}`." if b.get("command") else "."), "", speed_table(b)]
    return "\n".join(out)


def _anchor(title: str) -> str:
    a = re.sub(r"[^\w\- ]", "", title.lower()).strip().replace(" ", "-")
    return a


def build(root: str | os.PathLike = REPO, write: bool = True) -> list[Path]:
    """RESULTS.md and every README block; returns the files that changed (or would change)."""
    root = Path(root)
    changed = []
    for p in projects(root):
        readme = root / "projects" / p / "README.md"
        blocks = readme_blocks(readme)
        if not blocks:
            continue
        tables = {t["table"]: t for t in read_results(p, root)}
        for name in blocks:
            if name in tables:
                body = table_block(tables[name], "../../")
            else:
                body = f"*{NOT_RUN}: no `projects/{p}/results/{name}.json` yet.*"
            if update_readme(readme, name, body, write=write) and readme not in changed:
                changed.append(readme)
    page = results_page(root)
    out = root / "RESULTS.md"
    if not out.is_file() or out.read_text() != page:
        if write:
            atomic_write_text(out, page)
        changed.append(out)
    return changed


# -------------------------------------------------------------------------------------------- plots
def series(records: Sequence[Mapping], y: str, x: str = "step") -> tuple[list[float], list[float]]:
    """(xs, ys) of metric ``y`` against ``x`` in metrics.jsonl records. ``x`` may be logged on other
    lines than ``y`` (e.g. ``budget/train_time_s`` by the loop, ``val/top1`` by an evaluation at the
    same step): each y takes the latest x logged at or before its step."""
    xs, ys = [], []
    last_x = None
    for r in sorted(records, key=lambda r: r.get("step", 0)):
        if x in r and r[x] is not None:
            last_x = float(r[x])
        if y in r and r[y] is not None:
            xv = float(r[x]) if x in r and r[x] is not None else last_x
            if xv is None:
                continue
            xs.append(xv)
            ys.append(float(r[y]))
    return xs, ys


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_xy(lines: Mapping[str, tuple[Sequence[float], Sequence[float]]], out: str | os.PathLike | None = None,
            xlabel: str = "", ylabel: str = "", title: str | None = None, markers: bool = True,
            hlines: Mapping[str, float] | None = None, logx: bool = False):
    """One line per label; ``hlines``: labelled horizontal references (a paper number, a baseline).
    Saves a PNG to ``out`` (if given) and returns the matplotlib figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, (xs, ys) in lines.items():
        if len(xs) != len(ys):
            raise ValueError(f"{label}: {len(xs)} x values for {len(ys)} y values")
        ax.plot(list(xs), list(ys), marker="o" if markers else None, markersize=3, label=label)
    for label, v in (hlines or {}).items():
        ax.axhline(v, linestyle="--", linewidth=1, color="gray")
        ax.annotate(label, (0.01, v), xycoords=("axes fraction", "data"), fontsize=7, va="bottom", color="gray")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    return fig


def plot_curves(runs: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike], y: str, x: str = "step",
                out: str | os.PathLike | None = None, xlabel: str | None = None, ylabel: str | None = None,
                title: str | None = None, **kw):
    """A metric of several runs (label -> run folder, or a list of run folders labelled by folder
    name) against ``x`` (``step``, ``budget/train_time_s``, ``train/epoch`` ...), from metrics.jsonl."""
    if not isinstance(runs, Mapping):
        runs = {Path(r).name: r for r in runs}
    lines = {}
    for label, run in runs.items():
        records = read_metrics(run)
        if not records:
            raise FileNotFoundError(f"{label}: no metrics in {Path(run) / 'metrics.jsonl'}")
        xs, ys = series(records, y, x)
        if not ys:
            raise ValueError(f"{label}: no '{y}' against '{x}' in {Path(run) / 'metrics.jsonl'}")
        lines[label] = (xs, ys)
    return plot_xy(lines, out, xlabel=xlabel or x, ylabel=ylabel or y, title=title, **kw)


def figure_to_tensorboard(writer, tag: str, fig, step: int, close: bool = True) -> None:
    """A matplotlib figure as an image in TensorBoard; ``writer`` is a SummaryWriter, a
    MetricLogger or anything with ``.writer``; nothing happens when it has none (rank > 0)."""
    w = getattr(writer, "writer", writer)
    if w is not None and hasattr(w, "add_figure"):
        w.add_figure(tag, fig, global_step=step, close=close)
        w.flush()
    elif close:
        _pyplot().close(fig)


# --------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    p.add_argument("--root", default=str(REPO), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    changed = build(a.root, write=not a.check)
    root = Path(a.root)
    for f in changed:
        print(f"{'out of date' if a.check else 'wrote'}: {f.relative_to(root)}")
    if not changed:
        print("RESULTS.md and README tables are up to date")
    return 1 if (a.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
