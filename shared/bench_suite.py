"""One bench command for every project: ``make bench [BUDGET_S=30] [ARGS="--projects ezvsl,minred"]``.

    python -m shared.bench_suite [--budget-s 30] [--projects a,b] [--timeout-s S] [--out-dir results/bench]

Runs every ``projects/<p>/bench.py`` there is (found by file: a new paper's bench joins by existing),
each in its own process, ``python -m projects.<p>.bench --budget-s B --summary-json <tmp>``, in its own
process group under a hard wall-clock limit (default 3 x B + 60 s for imports, the CUDA context and
building models); on the limit the whole group (DataLoader workers included) is killed. A crash or a
timeout is recorded and the next project runs. One line per project is printed as it finishes, and
one JSON per device is written, ``results/bench/<device slug>.json`` (``cpu``, ``nvidia-h100-80gb-hbm3``):

    {"device", "torch", "cuda", "date", "git", "budget_s", "command",
     "projects": {<p>: {what, unit, fp32, bf16, ratio, tflops, pct_bf16_peak, peak_mem_gb,
                        budget_s, seconds, status: "ok" | "timed out" | "failed",
                        [error, stderr_tail: when not ok], detail: the bench's own result}}}

(the record's fields: shared.benchmark.summary). The exit status is 1 if any project did not end "ok";
the JSON is written all the same. ``make report`` turns every results/bench/*.json into the Speed
section of RESULTS.md. A run with ``--projects`` writes a file with those projects only.

Time plan at the paper's sizes on one H100/H200: each bench spends about its budget (30 s by default)
plus 10-30 s of start-up (imports, CUDA context, model build, FLOP count), so the seven benches take
about 7 x 60 s = 7 min, within the 8 minutes planned; the hard limit (150 s each) bounds a bench that
hangs. On the 2-core CPU the benches run at small sizes under the same budget.

Without CUDA each bench runs with one intra-op thread (OMP_NUM_THREADS=1; ``--cpu-threads N`` sets
another count, 0 torch's default): on a CPU shared with other jobs, OpenMP threads of small ops wait
for each other's time slices (measured on the 2-core build machine beside one busy process: accel_ssl's
demo MoCo v3 step 6.9 s with 2 threads, 0.06 s with 1), which made timings meaningless and budgets
impossible to hold.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from shared.benchmark import SUMMARY_KEYS, validate_summary
from shared.checkpoint import atomic_write_text
from shared.report import _git_sha

REPO = Path(__file__).resolve().parent.parent
STARTUP_MARGIN_S = 60.0
TAIL_CHARS = 2000


def discover(root: str | os.PathLike = REPO) -> list[str]:
    """Every project with a bench.py, by name."""
    d = Path(root) / "projects"
    return sorted(p.parent.name for p in d.glob("*/bench.py") if not p.parent.name.startswith(("_", ".")))


def hard_limit(budget_s: float) -> float:
    return 3 * budget_s + STARTUP_MARGIN_S


def _tail(path: Path, chars: int = TAIL_CHARS) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return text[-chars:]


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the bench's whole process group (its DataLoader workers too) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _record(fields: dict | None, budget_s: float, seconds: float, status: str, error: str | None = None,
            stderr_tail: str | None = None, stdout_tail: str | None = None) -> dict:
    """The common record in its fixed key order; ``fields``: the bench's validated summary (None when
    it did not write one)."""
    fields = fields or {}
    rec = {k: fields.get(k) for k in SUMMARY_KEYS if k not in ("budget_s", "detail")}
    rec.update(budget_s=budget_s, seconds=round(seconds, 2), status=status)
    if status != "ok":
        rec.update(error=error, stderr_tail=stderr_tail, stdout_tail=stdout_tail)
    rec["detail"] = fields.get("detail") or {}
    return rec


def run_one(project: str, budget_s: float, timeout_s: float, root: str | os.PathLike = REPO,
            python: str = sys.executable, cpu_threads: int | None = None) -> dict:
    """One bench in its own process group; its record, with status "ok", "timed out" or "failed".
    ``cpu_threads``: the bench's intra-op threads (OMP_NUM_THREADS), None: torch's default."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{project}-") as tmp:
        tmp = Path(tmp)
        summary, out, err = tmp / "summary.json", tmp / "stdout.txt", tmp / "stderr.txt"
        cmd = [python, "-m", f"projects.{project}.bench", "--budget-s", f"{budget_s:g}", "--summary-json", str(summary)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if cpu_threads:
            env.update(OMP_NUM_THREADS=str(cpu_threads), MKL_NUM_THREADS=str(cpu_threads))
        t0 = time.perf_counter()
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(cmd, cwd=root, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                rc = None
            except KeyboardInterrupt:  # the bench has its own session: Ctrl-C does not reach it
                _kill_group(proc)
                raise
        seconds, tails = time.perf_counter() - t0, (_tail(err), _tail(out, TAIL_CHARS // 2))
        if rc is None:
            return _record(None, budget_s, seconds, "timed out", f"killed after the {timeout_s:g} s limit", *tails)
        if rc != 0:
            last = next((x for x in reversed(tails[0].splitlines()) if x.strip()), "")
            return _record(None, budget_s, seconds, "failed", f"exit status {rc}: {last.strip()}", *tails)
        try:
            fields = validate_summary(json.loads(summary.read_text()), f"projects/{project}/bench.py --summary-json")
        except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            return _record(None, budget_s, seconds, "failed", str(e), *tails)
    return _record(fields, budget_s, seconds, "ok")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()  # creates no CUDA context


def device_info() -> dict:
    """The device the benches ran on, read after they ran (so this process holds no CUDA context
    while they do)."""
    import torch

    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
            "cuda": torch.version.cuda if cuda else None}


def slug(device: str) -> str:
    """A file name for a device: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "unknown-device"


def _num(x, fmt: str, suffix: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{suffix}"


def line(project: str, rec: dict) -> str:
    """The table line printed when a project finishes."""
    unit = rec["unit"] or ""
    return (f"{project:14s} {rec['status']:9s} {rec['seconds']:6.1f} s  fp32 {_num(rec['fp32'], '.3g')} "
            f"bf16 {_num(rec['bf16'], '.3g')} {unit:9s} ratio {_num(rec['ratio'], '.2f', 'x'):6s} "
            f"{_num(rec['tflops'], '.3g')} TFLOP/s  {_num(rec['pct_bf16_peak'], '.1f', ' %')} of bf16 peak  "
            f"peak mem {_num(rec['peak_mem_gb'], '.1f', ' GB')}  {rec['what'] or ''}")


def run_suite(budget_s: float, projects: Sequence[str] | None = None, root: str | os.PathLike = REPO,
              out_dir: str | os.PathLike | None = None, timeout_s: float | None = None,
              info: dict | None = None, command: str = "python -m shared.bench_suite", echo=print,
              cpu_threads: int | None = None) -> tuple[Path, dict]:
    """Run the benches one after the other and write ``<out_dir>/<device slug>.json``; returns its path
    and content. ``info``: the device fields (default: ``device_info()``, read after the runs);
    ``cpu_threads``: each bench's intra-op threads (None: torch's default)."""
    if budget_s <= 0:
        raise ValueError(f"--budget-s must be > 0 seconds, got {budget_s}")
    root = Path(root)
    found = discover(root)
    names = list(projects) if projects else found
    unknown = [p for p in names if p not in found]
    if unknown:
        raise ValueError(f"no projects/<p>/bench.py for {unknown} under {root} (there are: {found})")
    limit = timeout_s or hard_limit(budget_s)
    echo(f"bench: {len(names)} projects, budget {budget_s:g} s each, hard limit {limit:g} s each"
         + (f", {cpu_threads} CPU thread(s) each" if cpu_threads else ""))
    records = {}
    for p in names:
        records[p] = run_one(p, budget_s, limit, root, cpu_threads=cpu_threads)
        echo(line(p, records[p]))
        if records[p]["status"] != "ok":
            echo(f"    {records[p]['error'][:300]}")
    res = {**(info or device_info()), "date": _dt.date.today().isoformat(), "git": _git_sha(root),
           "budget_s": budget_s, "cpu_threads": cpu_threads, "command": command, "projects": records}
    out = Path(out_dir) if out_dir else root / "results" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{slug(res['device'])}.json"
    atomic_write_text(path, json.dumps(res, indent=2, default=str) + "\n")
    return path, res


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, default=30.0, help="seconds each bench may spend (default 30)")
    p.add_argument("--projects", default=None, help="comma-separated (default: every projects/<p>/bench.py)")
    p.add_argument("--timeout-s", type=float, default=None,
                   help=f"hard limit per bench (default: 3 x budget + {STARTUP_MARGIN_S:g} s)")
    p.add_argument("--out-dir", default=None, help="default: results/bench at the repository root")
    p.add_argument("--cpu-threads", type=int, default=None,
                   help="intra-op threads per bench (default: 1 without CUDA, torch's own with it; 0: torch's own)")
    p.add_argument("--root", default=str(REPO), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    threads = a.cpu_threads if a.cpu_threads is not None else None if _cuda_available() else 1
    projects = [x for x in a.projects.split(",") if x] if a.projects else None
    command = f"python -m shared.bench_suite --budget-s {a.budget_s:g}" + (f" --projects {a.projects}" if a.projects else "") \
        + (f" --cpu-threads {a.cpu_threads}" if a.cpu_threads is not None else "")
    try:
        path, res = run_suite(a.budget_s, projects, a.root, a.out_dir, a.timeout_s, command=command,
                              cpu_threads=threads or None)
    except ValueError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    bad = [k for k, r in res["projects"].items() if r["status"] != "ok"]
    print(f"wrote {path}" + (f"; not ok: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
