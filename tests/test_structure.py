"""Who imports whom inside and between projects, read from the source with ``ast`` (nothing is imported).

Rules (README.md "Layout", shared/DESIGN.md "Inside a project: who imports whom"):
  - No project imports another: ``projects/<p>/**.py`` never imports ``projects.<q>`` for q != p.
  - Arrows point down only. ``train.py`` imports model, losses, data and eval (for its periodic
    evaluation), so nothing it may reach can import ``train`` back. Only the modules that exist to
    run training may import ``projects.<p>.train``:
        train.py       the training entry point itself;
        reproduce.py   the demo pipeline / paper table: trains, then evaluates.
    Every other module (eval, segmentation, bench, model, data, losses, and every helper such as
    frameworks, probes, convert, pretrain_demo) must not reach ``projects.<p>.train``, directly or
    transitively through the project's own modules. What two of them need (``build_model``, a
    front end, a training step a benchmark times) lives in a module below both.
    A new entry point that really runs training belongs in train.py or reproduce.py; if it must be
    its own file, add it to TRAINING_ENTRY_POINTS with the reason.

Every ``import`` / ``from ... import`` counts, at module level or inside a function or a branch:
``import projects.p.train``, ``from projects.p import train``, ``from projects.p.train import x``,
relative forms (``from . import train``, ``from .train import x``). Importing ``projects.p.x.y``
also runs ``projects/p/__init__.py`` and ``projects/p/x/__init__.py``, so those are edges too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECTS_DIR = REPO / "projects"
PROJECTS = sorted(p.name for p in PROJECTS_DIR.iterdir() if p.is_dir() and (p / "train.py").is_file())

# Modules (dotted names relative to the project) that may import the project's train module.
TRAINING_ENTRY_POINTS = {"train", "reproduce"}


def _module_name(path: Path) -> str:
    """projects/p/a/b.py -> 'projects.p.a.b'; projects/p/a/__init__.py -> 'projects.p.a'."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(path: Path, module: str) -> set[str]:
    """Every dotted module name the file may import (a ``from m import n`` gives m and m.n: n may be a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return names


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _project_graph(project: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between the project's own modules, every name each module imports)."""
    root = PROJECTS_DIR / project
    files = {_module_name(f): f for f in sorted(root.rglob("*.py"))}
    own = set(files)
    imports, edges = {}, {}
    for mod, f in files.items():
        imports[mod] = _imported_names(f, mod)
        reached = set().union(*(_with_parents(n) for n in imports[mod])) if imports[mod] else set()
        edges[mod] = (reached & own) - {mod}
    return edges, imports


def _path_to(edges: dict[str, set[str]], start: str, target: str) -> list[str] | None:
    """A shortest import chain start -> ... -> target through the project's modules, or None."""
    prev, frontier, seen = {}, [start], {start}
    while frontier:
        nxt = []
        for m in frontier:
            for n in sorted(edges.get(m, ())):
                if n in seen:
                    continue
                seen.add(n)
                prev[n] = m
                if n == target:
                    chain = [n]
                    while chain[-1] != start:
                        chain.append(prev[chain[-1]])
                    return chain[::-1]
                nxt.append(n)
        frontier = nxt
    return None


def test_projects_found():
    assert len(PROJECTS) >= 7, f"expected the projects under {PROJECTS_DIR}, found {PROJECTS}"


@pytest.mark.parametrize("project", PROJECTS)
def test_only_training_entry_points_import_train(project):
    edges, _ = _project_graph(project)
    prefix = f"projects.{project}."
    train = prefix + "train"
    allowed = {prefix + m for m in TRAINING_ENTRY_POINTS}
    bad = []
    for mod in sorted(edges):
        if mod in allowed:
            continue
        chain = _path_to(edges, mod, train)
        if chain:
            bad.append(" -> ".join(c.removeprefix(prefix) for c in chain))
    assert not bad, (f"projects/{project}: only {sorted(TRAINING_ENTRY_POINTS)} may import train "
                     "(see tests/test_structure.py's docstring); these reach it:\n  " + "\n  ".join(bad))


@pytest.mark.parametrize("project", PROJECTS)
def test_no_project_imports_another(project):
    _, imports = _project_graph(project)
    bad = sorted(f"{mod.removeprefix('projects.')} imports {n}" for mod, names in imports.items() for n in names
                 if n.startswith("projects.") and n.split(".")[1] != project)
    assert not bad, f"projects/{project} imports another project:\n  " + "\n  ".join(bad)
