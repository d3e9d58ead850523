"""make bench (shared/bench_suite.py) on fake projects: ok, a hang killed at its limit, a crash, a
bench whose summary is wrong, one JSON per device; the Speed section of RESULTS.md from a hand-made
bench file; time_fn's budget."""
import json
import textwrap
import time

import pytest

from shared import bench_suite, report
from shared.benchmark import Budget, summary, time_fn, validate_summary

INFO = {"device": "Fake GPU 80GB", "torch": "2.11.0", "cuda": "13.0"}

# a bench that needs no torch: it writes its summary from its arguments
OK = """
import argparse, json, os
p = argparse.ArgumentParser()
p.add_argument("--budget-s", type=float)
p.add_argument("--summary-json")
a = p.parse_args()
print("bench output")
rec = {"what": "train step, batch 8", "unit": "clips/s", "fp32": 10.0, "bf16": 25.0, "ratio": 2.5, "tflops": 1.5,
       "pct_bf16_peak": None, "peak_mem_gb": None, "budget_s": a.budget_s,
       "detail": {"batch": 8, "threads": os.environ.get("OMP_NUM_THREADS")}}
json.dump(rec, open(a.summary_json, "w"))
"""
HANG = """
import os, time
open(os.environ["HANG_PIDFILE"], "w").write(str(os.getpid()))
time.sleep(60)
"""
CRASH = """
import sys
print("half the work", flush=True)
print("loading the model", file=sys.stderr)
raise RuntimeError("CUDA out of memory in the fake bench")
"""
BAD_SUMMARY = """
import argparse, json
p = argparse.ArgumentParser()
p.add_argument("--budget-s", type=float)
p.add_argument("--summary-json")
a = p.parse_args()
json.dump({"what": "x"}, open(a.summary_json, "w"))
"""


def fake_root(tmp_path, benches: dict):
    (tmp_path / "projects").mkdir(parents=True)
    (tmp_path / "projects" / "__init__.py").write_text("")
    for name, code in benches.items():
        d = tmp_path / "projects" / name
        d.mkdir()
        (d / "__init__.py").write_text("")
        (d / "bench.py").write_text(textwrap.dedent(code))
    (tmp_path / "projects" / "nobench").mkdir()  # a project without a bench.py is not a bench
    return tmp_path


def test_discover_finds_every_bench_py(tmp_path):
    root = fake_root(tmp_path, {"beta": OK, "alpha": OK})
    assert bench_suite.discover(root) == ["alpha", "beta"]
    assert bench_suite.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3" and bench_suite.slug("cpu") == "cpu"
    assert bench_suite.hard_limit(30) == 150


def test_ok_timeout_and_crash_each_recorded_and_all_run(tmp_path, monkeypatch):
    root = fake_root(tmp_path / "repo", {"a_ok": OK, "b_hang": HANG, "c_crash": CRASH, "d_bad": BAD_SUMMARY,
                                         "e_ok": OK})
    monkeypatch.setenv("HANG_PIDFILE", str(tmp_path / "hang.pid"))
    lines = []
    t0 = time.perf_counter()
    path, res = bench_suite.run_suite(0.5, root=root, out_dir=tmp_path / "out", timeout_s=1.5, info=INFO,
                                      echo=lines.append, cpu_threads=1)
    assert time.perf_counter() - t0 < 10  # the hang was killed at its limit, not waited for
    assert path == tmp_path / "out" / "fake-gpu-80gb.json" and json.loads(path.read_text()) == res
    recs = res["projects"]
    assert list(recs) == ["a_ok", "b_hang", "c_crash", "d_bad", "e_ok"]
    assert {k: r["status"] for k, r in recs.items()} == {"a_ok": "ok", "b_hang": "timed out", "c_crash": "failed",
                                                       "d_bad": "failed", "e_ok": "ok"}
    ok = recs["a_ok"]
    assert ok["fp32"] == 10.0 and ok["bf16"] == 25.0 and ok["ratio"] == 2.5 and ok["unit"] == "clips/s"
    assert ok["budget_s"] == 0.5 and 0 < ok["seconds"] < 5 and ok["detail"] == {"batch": 8, "threads": "1"} and "error" not in ok
    hang = recs["b_hang"]
    assert hang["error"] == "killed after the 1.5 s limit" and 1.5 <= hang["seconds"] < 5 and hang["fp32"] is None
    pid = int((tmp_path / "hang.pid").read_text())
    with pytest.raises(ProcessLookupError):  # killed with its process group, not left running
        import os

        os.kill(pid, 0)
    crash = recs["c_crash"]
    assert crash["error"] == "exit status 1: RuntimeError: CUDA out of memory in the fake bench"
    assert "loading the model" in crash["stderr_tail"] and "Traceback" in crash["stderr_tail"]
    assert crash["stdout_tail"] == "half the work\n"
    assert "missing keys" in recs["d_bad"]["error"]
    # the schema of the file
    assert {k: res[k] for k in ("device", "torch", "cuda", "budget_s", "cpu_threads")} == \
        {**INFO, "budget_s": 0.5, "cpu_threads": 1}
    assert res["date"] and "git" in res and res["command"]
    for r in recs.values():
        assert list(r)[:11] == ["what", "unit", "fp32", "bf16", "ratio", "tflops", "pct_bf16_peak", "peak_mem_gb",
                                "budget_s", "seconds", "status"] and list(r)[-1] == "detail"
    # one line per project as it finished, and the reason under each that did not end ok
    assert lines[0] == "bench: 5 projects, budget 0.5 s each, hard limit 1.5 s each, 1 CPU thread(s) each"
    assert [x.split()[0] for x in lines[1:] if not x.startswith("    ")] == list(recs)
    assert "    killed after the 1.5 s limit" in lines


def test_main_exit_status_and_unknown_project(tmp_path, capsys):
    root = fake_root(tmp_path, {"good": OK, "bad": CRASH})
    out = tmp_path / "out"
    assert bench_suite.main(["--budget-s", "1", "--root", str(root), "--out-dir", str(out), "--projects", "good"]) == 0
    assert bench_suite.main(["--budget-s", "1", "--root", str(root), "--out-dir", str(out)]) == 1
    assert "not ok: bad" in capsys.readouterr().out
    (f,) = out.glob("*.json")
    assert set(json.loads(f.read_text())["projects"]) == {"bad", "good"}  # written although one failed
    assert bench_suite.main(["--root", str(root), "--out-dir", str(out), "--projects", "good,nope"]) == 2
    assert "no projects/<p>/bench.py for ['nope']" in capsys.readouterr().err


def test_summary_record_and_its_validation():
    r = summary("step", "images/s", 10.0, 30.0, 2.0, None, 1.5, 30, {"a": 1})
    assert r["ratio"] == 3.0 and r["budget_s"] == 30.0
    assert summary("step", "images/s", 10.0, None, 0.1, None, None, None, {})["ratio"] is None  # CPU: no bf16
    with pytest.raises(ValueError, match=r"summary.fp32: expected a finite number"):
        validate_summary({**r, "fp32": float("nan")})
    with pytest.raises(ValueError, match="unknown keys \\['extra'\\]"):
        validate_summary({**r, "extra": 1})


def bench_file() -> dict:
    rec = {"what": "train step, batch 128", "unit": "clips/s", "fp32": 412.345, "bf16": 1033.0, "ratio": 2.50516,
           "tflops": 123.456, "pct_bf16_peak": 12.4825, "peak_mem_gb": 21.04, "budget_s": 30.0, "seconds": 71.2,
           "status": "ok", "detail": {}}
    slow = {**rec, "what": "eviction | step", "unit": "samples/s", "fp32": 7.891, "bf16": None, "ratio": None,
            "tflops": 0.0421, "pct_bf16_peak": None, "peak_mem_gb": None}
    failed = {**{k: None for k in rec}, "budget_s": 30.0, "seconds": 3.0, "status": "failed",
              "error": "exit status 1: RuntimeError: boom", "stderr_tail": "...", "detail": {}}
    return {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130", "cuda": "13.0", "date": "2025-01-02",
            "git": "abc1234", "budget_s": 30.0, "cpu_threads": None, "command": "python -m shared.bench_suite --budget-s 30",
            "projects": {"ezvsl": rec, "minred": slow, "oneavm": failed}}


def test_speed_table_from_a_hand_made_bench_file(tmp_path):
    (tmp_path / "projects").mkdir()
    assert report.speed_section(tmp_path) == ""  # no bench file: no section
    (tmp_path / "results" / "bench").mkdir(parents=True)
    (tmp_path / "results" / "bench" / "nvidia-h100-80gb-hbm3.json").write_text(json.dumps(bench_file()))
    section = report.speed_section(tmp_path)
    assert section.startswith("## Speed\n")
    assert "### NVIDIA H100 80GB HBM3 (torch 2.11.0+cu130, CUDA 13.0, 2025-01-02, git abc1234)" in section
    assert "budget 30 s per project, `python -m shared.bench_suite --budget-s 30`." in section
    assert section.endswith("\n".join([
        "| project | what | fp32 | bf16 | ratio | TFLOP/s | % bf16 peak | peak mem | status |",
        "|---|---|---|---|---|---|---|---|---|",
        "| ezvsl | train step, batch 128 | 412 clips/s | 1033 clips/s | 2.51x | 123.46 | 12.5 % | 21.0 GB | ok |",
        "| minred | eviction \\| step | 7.89 samples/s | - | - | 0.042 | - | - | ok |",
        "| oneavm | - | - | - | - | - | - | - | failed (exit status 1: RuntimeError: boom) |"]))
    page = report.results_page(tmp_path)
    assert page.endswith(section + "\n")
    # --check sees a bench file that changed after RESULTS.md was written
    assert report.main(["--root", str(tmp_path)]) == 0 and report.main(["--check", "--root", str(tmp_path)]) == 0
    b = bench_file()
    b["projects"]["ezvsl"]["bf16"] = 999.0
    (tmp_path / "results" / "bench" / "nvidia-h100-80gb-hbm3.json").write_text(json.dumps(b))
    assert report.main(["--check", "--root", str(tmp_path)]) == 1


def test_a_malformed_bench_file_is_named(tmp_path):
    d = tmp_path / "results" / "bench"
    d.mkdir(parents=True)
    (d / "cpu.json").write_text(json.dumps({"device": "cpu"}))
    with pytest.raises(ValueError, match=r"cpu.json: missing \['torch'"):
        report.speed_section(tmp_path)
    b = bench_file()
    b["projects"]["ezvsl"]["fp32"] = "fast"
    (d / "cpu.json").write_text(json.dumps(b))
    with pytest.raises(ValueError, match="ezvsl.fp32: expected a number"):
        report.speed_section(tmp_path)


def test_time_fn_stops_when_its_budget_is_spent():
    calls = []

    def nap():
        calls.append(1)
        time.sleep(0.05)

    t0 = time.perf_counter()
    t = time_fn(nap, "cpu", warmup=1, repeats=100, budget_s=0.3, min_repeats=3)
    assert 3 <= len(t.seconds) <= 5 and len(calls) == len(t.seconds) + 1  # 1 warm-up; 0.3 s holds 6 calls at most
    assert time.perf_counter() - t0 < 1.0  # 0.35 s of naps; slack for a loaded machine
    # a budget too small for the minimum still runs the minimum (and one warm-up), then stops
    calls.clear()
    t = time_fn(nap, "cpu", warmup=3, repeats=100, budget_s=0.01, min_repeats=2)
    assert len(t.seconds) == 2 and len(calls) == 3
    # no budget: exactly the repeats asked for
    assert len(time_fn(lambda: None, "cpu", warmup=0, repeats=7).seconds) == 7


def test_budget_shares_what_is_left():
    b = Budget(1.0)
    assert 0.24 < b.share(4) <= 0.25
    time.sleep(0.2)
    assert 0.3 < b.share(2) <= 0.4 and Budget(None).share(3) is None
    assert Budget(0).share(2) == 0.0  # spent: each measurement runs its minimum
    with pytest.raises(ValueError, match=">= 0 seconds"):
        Budget(-1)
