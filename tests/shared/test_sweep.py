"""shared.sweep: grid files, job expansion and naming, running a grid here or through submitit, and the
gathered table (mean/std over seeds, the ensemble of the seeds' logits, project hooks).

The runs' entry is this module's ``main(cfg)``: a stand-in "training" whose accuracy and logits are
fixed functions of the config, so every gathered number can be computed by hand."""
import json
import sys

import pytest
import torch

from shared import sweep
from shared.config import ConfigError

LABELS = torch.tensor([0, 1, 2, 0])


def main(cfg):
    """Accuracy = 10 * lr + seed; logits (1 + seed on one class) right on the first ``seed + 1`` of 4 items."""
    from shared.checkpoint import atomic_torch_save
    from shared.run import run_dir_of

    run = run_dir_of(cfg)
    run.mkdir(parents=True, exist_ok=True)
    res = {"method": cfg.method, "lr": cfg.optim.lr, "seed": cfg.run.seed,
           "test": {"accuracy": 10 * cfg.optim.lr + cfg.run.seed}, "extra": {"bits": float(cfg.run.seed)}}
    logits = torch.full((4, 3), 0.0)
    for i in range(4):
        logits[i, LABELS[i] if i <= cfg.run.seed else (LABELS[i] + 1) % 3] = 1.0 + cfg.run.seed
    atomic_torch_save({"logits": logits, "labels": LABELS}, run / "test_logits.pt")
    (run / "results.json").write_text(json.dumps(res))
    return res


@pytest.fixture
def project(tmp_path):
    """projects/toy/configs/{toy.yaml, sweeps/} in a temporary tree, running this module's main."""
    configs = tmp_path / "projects" / "toy" / "configs"
    (configs / "sweeps").mkdir(parents=True)
    (configs / "toy.yaml").write_text(
        "run: {root: %s, project: toy, name: toy, seed: 0}\nmethod: a\noptim: {lr: 0.1, epochs: 1}\n"
        % (tmp_path / "runs"))
    (configs / "other.yaml").write_text("base: toy.yaml\noptim: {epochs: 2}\n")
    return configs


def write_grid(configs, grid, name="g.yaml"):
    path = configs / "sweeps" / name
    path.write_text(json.dumps({"entry": __name__, **grid}))
    return path


GRID = {"name": "t", "configs": ["toy"], "grids": [
    {"fixed": {"method": "a"}, "axes": {"optim.lr": [0.1, 0.5], "run.seed": [1, 2]}},
    {"fixed": {"method": "b"}, "axes": {"run.seed": [0]}}]}


def test_read_grid_fills_defaults_from_its_path(project):
    g = sweep.read_grid(write_grid(project, {"datasets": ["toy"], "grids": GRID["grids"]}))
    assert g["project"] == "toy" and g["configs"] == ["toy"] and g["name"] == "g"
    assert g["metric"] == "test.accuracy" and g["config_dir"] == str(project.resolve())
    assert sweep.read_grid("projects/ptnl/configs/sweeps/demo.yaml")["entry"] == "projects.ptnl.train"


@pytest.mark.parametrize("grid,match", [
    ({"configs": ["toy"], "grids": [], "oops": 1}, "unknown keys"),
    ({"configs": ["toy"]}, "needs 'configs'"),
    ({"configs": ["toy"], "datasets": ["toy"], "grids": GRID["grids"]}, "not both"),
    ({"configs": ["toy"], "grids": [{"fixed": {}, "axis": {}}]}, "may only have"),
    ({"configs": ["toy"], "grids": [{"axes": {"optim.lr": 0.1}}]}, "non-empty list"),
])
def test_bad_grid_files_are_errors(project, grid, match):
    with pytest.raises(ValueError, match=match):
        sweep.read_grid(write_grid(project, grid))


def test_a_grid_outside_a_project_must_name_it(tmp_path):
    (tmp_path / "g.yaml").write_text(json.dumps({"configs": ["x"], "grids": GRID["grids"]}))
    with pytest.raises(ValueError, match="which project"):
        sweep.read_grid(tmp_path / "g.yaml")
    with pytest.raises(FileNotFoundError, match="grid file not found"):
        sweep.read_grid(tmp_path / "missing.yaml")


def test_expand_names_every_job_and_validates_configs(project):
    g = sweep.read_grid(write_grid(project, {**GRID, "configs": ["toy", "other"]}))
    jobs = sweep.expand(g)
    names = [j["name"] for j in jobs]
    assert names[:4] == ["toy_methoda_lr0.1_seed1", "toy_methoda_lr0.1_seed2",
                         "toy_methoda_lr0.5_seed1", "toy_methoda_lr0.5_seed2"]
    assert names[4] == "toy_methodb_seed0" and len(jobs) == 10 and len(set(names)) == 10
    assert jobs[0]["settings"] == {"config": "toy", "method": "a", "optim.lr": "0.1"}  # the seed is not a setting
    assert jobs[0]["overrides"][-1] == "run.name=toy_methoda_lr0.1_seed1"
    assert len(sweep.expand(g, ["other"])) == 5
    with pytest.raises(ValueError, match="not in this grid"):
        sweep.expand(g, ["nope"])
    typo = sweep.read_grid(write_grid(project, {"configs": ["toy"], "grids": [{"axes": {"optim.lrr": [1]}}]}, "t.yaml"))
    with pytest.raises(ConfigError, match="lrr"):
        sweep.expand(typo)
    clash = sweep.read_grid(write_grid(project, {"configs": ["toy"], "grids": [{"axes": {"run.seed": [1]}}] * 2},
                                       "c.yaml"))
    with pytest.raises(ValueError, match="share a run folder"):
        sweep.expand(clash)


def test_run_here_and_gather_one_table(project, tmp_path):
    gfile = write_grid(project, GRID)
    assert len(sweep.main(["--grid", str(gfile), "--dry-run"])) == 5
    sweep.main(["--grid", str(gfile), "--cluster", "none"])
    rows = sweep.main(["--grid", str(gfile), "--gather"])
    assert [(r["method"], r.get("optim.lr"), r["seeds"]) for r in rows] == [("a", "0.1", 2), ("a", "0.5", 2),
                                                                            ("b", None, 1)]
    # accuracy 10 * lr + seed over seeds 1, 2: mean 1 + 1.5, std 0.5
    assert rows[0]["mean"] == pytest.approx(2.5) and rows[0]["std"] == pytest.approx(0.5)
    assert rows[1]["mean"] == pytest.approx(6.5) and rows[2]["seeds"] == 1 and rows[2]["mean"] == pytest.approx(1.0)  # lr 0.1, seed 0
    # averaged logits of seed 1 (right on items 0, 1) and seed 2 (0-2, larger logits): right on 0-2 -> 75 %
    assert rows[0]["ensemble"] == pytest.approx(75.0) and "ensemble" not in rows[2]
    out = tmp_path / "runs" / "toy" / "sweeps" / "t"
    table = (out / "results.md").read_text()
    assert table.splitlines()[0] == "| config | method | optim.lr | seeds | mean ± std | ensemble |"
    assert "| toy | a | 0.5 | 2 | 6.50 ± 0.50 | 75.00 |" in table and "| toy | b | - | 1 | 1.00 ± 0.00 | - |" in table
    assert json.loads((out / "results.json").read_text())[1]["mean"] == pytest.approx(6.5)
    assert (out / "results.csv").read_text().splitlines()[0] == "config,method,optim.lr,seeds,mean,std,ensemble"


def test_project_hooks_name_runs_and_rows(project, monkeypatch):
    mod = sys.modules[__name__]
    monkeypatch.setattr(mod, "run_name", lambda cfg: f"{cfg.method}-{cfg.optim.lr:g}-s{cfg.run.seed}", raising=False)
    monkeypatch.setattr(mod, "sweep_settings", lambda res: {"m": res["method"], "lr": res["lr"]}, raising=False)
    monkeypatch.setattr(mod, "sweep_values", lambda res: {"bits": res["extra"]["bits"]}, raising=False)
    gfile = write_grid(project, {**GRID, "metric": "extra.bits"})
    jobs = sweep.main(["--grid", str(gfile), "--cluster", "none"])
    assert [j["seed"] for j in jobs] == [1, 2, 1, 2, 0]
    assert (project.parent.parent.parent / "runs" / "toy" / "a-0.5-s2" / "results.json").is_file()
    rows = sweep.main(["--grid", str(gfile), "--gather"])
    assert rows[0] == {"m": "a", "lr": 0.1, "seeds": 2, "mean": 1.5, "std": 0.5, "bits": 1.5, "ensemble": 75.0}
    bad = write_grid(project, {**GRID, "metric": "test.top5"}, "bad.yaml")
    with pytest.raises(KeyError, match="no 'test.top5'.*'accuracy'"):
        sweep.main(["--grid", str(bad), "--gather"])


def test_submits_through_submitit(project):
    gfile = write_grid(project, {"name": "dbg", "configs": ["toy"], "grids": [{"axes": {"run.seed": [3]}}]})
    (res,) = sweep.main(["--grid", str(gfile), "--cluster", "debug"])  # submitit's in-process executor
    assert res["test"]["accuracy"] == pytest.approx(4.0)
    assert (project.parent.parent.parent / "runs" / "toy" / "toy_seed3" / "submitit").is_dir() is False
    assert (project.parent.parent.parent / "runs" / "toy" / "sweeps" / "dbg" / "submitit").is_dir()
