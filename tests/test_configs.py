"""Every project's configs, repository-wide (the contract: /work/notes/report_contract.md section 3).

For each ``projects/<p>/configs/**/*.yaml`` (sweeps/ aside):
  - it loads (inheritance, strict keys, types);
  - an experiment config (one with a ``base:``, except ``_*.yaml`` partial bases) opens with a comment
    block giving the command, the hardware, the runtime and the expected number, one label a line:
        # command: make reproduce-ezvsl CONFIG=flickr10k DATA_ROOT=/data/ezvsl
        # hardware: 1x H100 80GB
        # runtime: ~50 min
        # expected: cIoU(AP50) 81.93, AUC 62.58 (paper Table 1)
  - ``projects.<p>.model.build_model(cfg)`` builds its model from the config alone, at toy size
    (TOY below: per-project overrides that shrink widths/depths/resolutions; no weight files);
and every sweep grid ``projects/<p>/configs/sweeps/*.yaml`` expands (every job's config loads).

A new project is picked up with no edit here; add its toy overrides to TOY if its models are large.
"""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
import torch

from shared.config import load_config

REPO = Path(__file__).resolve().parent.parent
PROJECTS = sorted(p.name for p in (REPO / "projects").iterdir() if (p / "configs").is_dir())
LABELS = ("command", "hardware", "runtime", "expected")

# Per-project overrides that make any of its configs' models small (applied to every config of the project).
TOY = {
    "accel_ssl": ["model.arch=vit_demo", "model.img_size=32", "model.patch_size=4", "model.in_chans=1",
                  "data.img_size=32", "data.local_size=16", "method.hidden_dim=64", "method.out_dim=32",
                  "method.bottleneck_dim=16"],
    "ezvsl": ["model.image_weights=null", "model.ogl_weights=null", "model.out_dim=32"],
    "latent_mim": ["model.arch=custom", "model.dim=32", "model.depth=2", "model.heads=2", "model.patch_size=4",
                   "model.in_chans=1", "model.grid_size=7", "model.patch_gap=1", "model.num_vis=5",
                   "model.proj_mlp_dim=64", "model.decoder_dim=32", "model.decoder_depth=1", "model.decoder_heads=2",
                   "model.mae_decoder_dim=32", "model.mae_decoder_depth=1", "model.mae_decoder_heads=2"],
    "minred": ["model.arch=resnet18", "model.small_input=true", "model.pretrained=null"],
    "oneavm": ["model.image_weights=null", "model.dim=32", "model.unet_levels=5", "model.unet_ngf=8"],
    "patch_ranking": ["clip.arch=demo-clip-fmnist", "clip.pretrained=null", "prune.stages=[[1, 10]]",
                      "predictor.features=own", "predictor.checkpoint=null", "predictor.tail=6",
                      "predictor.overlap_n=6"],
    "ptnl": ["clip.arch=tiny-clip-vit", "clip.pretrained=null"],
}


def _base_of(path: Path) -> str | None:
    m = re.search(r"^base:\s*(\S+)", path.read_text(), flags=re.M)
    return m.group(1) if m else None


def _root_of(path: Path) -> Path:
    seen = set()
    while (base := _base_of(path)) and path not in seen:
        seen.add(path)
        path = (path.parent / base).resolve()
    return path


def _configs(kind: str) -> list:
    """kind: all | experiment (has a base:, not a _partial) | model (an experiment config of
    train.py: its chain ends at configs/base.yaml; e.g. a fine-tuning chain has its own root)."""
    out = []
    for p in PROJECTS:
        root = REPO / "projects" / p / "configs"
        for f in sorted(root.rglob("*.yaml")):
            rel = f.relative_to(root)
            if rel.parts[0] == "sweeps":
                continue
            experiment = _base_of(f) is not None and not f.name.startswith("_")
            if kind == "all" or (experiment and (kind == "experiment" or _root_of(f) == (root / "base.yaml").resolve())):
                out.append(pytest.param(p, f, id=f"{p}/{rel.with_suffix('')}"))
    return out


def header_block(path: Path) -> list[str]:
    """The comment lines the file opens with (until the first line that is not a comment)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def missing_labels(path: Path) -> list[str]:
    head = header_block(path)
    return [lab for lab in LABELS
            if not any(re.match(rf"^#\s*{lab}\s*:\s*\S", line, flags=re.IGNORECASE) for line in head)]


@pytest.mark.parametrize("project,path", _configs("all"))
def test_config_loads(project, path):
    cfg = load_config(path)
    assert cfg.run.project == project, f"{path}: run.project is {cfg.run.project!r}, the folder says {project!r}"


@pytest.mark.parametrize("project,path", _configs("experiment"))
def test_experiment_config_opens_with_command_hardware_runtime_expected(project, path):
    missing = missing_labels(path)
    assert not missing, (
        f"{path.relative_to(REPO)} must open with a comment block with the lines "
        f"{', '.join(f'# {m}: ...' for m in missing)} (see tests/test_configs.py's docstring)")


def _build_model(project):
    try:
        model = importlib.import_module(f"projects.{project}.model")
    except ModuleNotFoundError as e:
        pytest.fail(f"projects/{project}/model.py cannot be imported: {e}")
    build = getattr(model, "build_model", None)
    assert build is not None, f"projects.{project}.model has no build_model(cfg)"
    params = [p for p in inspect.signature(build).parameters.values() if p.default is inspect.Parameter.empty
              and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(params) == 1, (f"projects.{project}.model.build_model{inspect.signature(build)} must build the model "
                              "from the config alone: build_model(cfg), other arguments optional")
    return build


@pytest.mark.parametrize("project,path", _configs("model"))
def test_model_builds_at_toy_size(project, path):
    build = _build_model(project)
    cfg = load_config(path, TOY.get(project, []))
    torch.manual_seed(0)
    model = build(cfg)
    assert isinstance(model, torch.nn.Module), f"build_model returned {type(model).__name__}, not a torch module"
    n = sum(p.numel() for p in model.parameters())
    assert n > 0, "the model has no parameters"
    assert all(torch.isfinite(p).all() for p in model.parameters()), "non-finite initial parameters"


def _grids():
    return [pytest.param(g, id=str(g.relative_to(REPO / "projects")))
            for p in PROJECTS for g in sorted((REPO / "projects" / p / "configs" / "sweeps").glob("*.yaml"))]


@pytest.fixture
def yaml_files_read_once(monkeypatch):
    """A grid loads one config per job (hundreds): parse each YAML file once (the files do not change
    during the test; each load still gets its own copy). Parsing is 90 % of the time otherwise."""
    import copy

    from shared import config

    read = getattr(config, "_read_yaml", None)
    if read is None:
        return
    cache = {}

    def once(path):
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in cache:
            cache[key] = read(path)
        return copy.deepcopy(cache[key])

    monkeypatch.setattr(config, "_read_yaml", once)


@pytest.mark.parametrize("grid", _grids())
def test_sweep_grid_expands(grid, yaml_files_read_once):
    from shared import sweep

    g = sweep.read_grid(grid)
    jobs = sweep.expand(g)
    n = sum(len(g["configs"]) * _points(sub) for sub in g["grids"])
    assert len(jobs) == n and len({j["run_dir"] for j in jobs}) == n


def _points(sub: dict) -> int:
    n = 1
    for vals in (sub.get("axes") or {}).values():
        n *= len(vals)
    return n


def test_the_header_check_reads_labels_only_from_the_opening_comment(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("# What it is.\n# command: make reproduce-x CONFIG=good\n#   (continued)\n# Hardware: 8x A100\n"
                    "# runtime: 3 h\n# expected: 76.7 top-1\nbase: base.yaml\n")
    assert missing_labels(good) == []
    late = tmp_path / "late.yaml"
    late.write_text("# command: python -m x\nbase: base.yaml\n# hardware: 1 GPU\n# runtime: 1 h\n# expected: 1\n")
    assert missing_labels(late) == ["hardware", "runtime", "expected"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("# command:\n# hardware: cpu\nbase: base.yaml\n")
    assert missing_labels(empty) == ["command", "runtime", "expected"]
