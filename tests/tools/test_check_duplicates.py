"""tools/check_duplicates.py, the lint that flags code repeated across projects."""
from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("check_duplicates", REPO / "tools" / "check_duplicates.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

BLOCK = "\n".join(f"    value_{i} = compute({i}, scale={i * 2})" for i in range(6))


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_six_identical_lines_in_two_projects_are_flagged_with_their_lines(tmp_path):
    root = _tree(tmp_path, {"projects/a/x.py": "def f():\n" + BLOCK + "\n",
                            "projects/b/y.py": "import os\n\n\ndef g():\n    # the same\n" + BLOCK + "\n",
                            "shared/__init__.py": ""})
    assert check.find_runs(root) == [("projects/a/x.py", 2, 7, "projects/b/y.py", 6, 11)]
    assert check.main([str(root)]) == 1


def test_five_lines_or_one_project_or_folded_whitespace(tmp_path):
    five = "\n".join(BLOCK.splitlines()[:5])
    root = _tree(tmp_path, {"projects/a/x.py": "def f():\n" + BLOCK + "\n",
                            "projects/a/z.py": "def h():\n" + BLOCK + "\n",   # same project: allowed
                            "projects/b/y.py": "def g():\n" + five + "\n"})
    assert check.find_runs(root) == []
    assert check.main([str(root)]) == 0
    spaced = BLOCK.replace(" = ", "   =   ")
    _tree(tmp_path, {"shared/s.py": "def k():\n" + spaced + "\n"})
    assert [(r[0], r[3]) for r in check.find_runs(root)] == [("projects/a/x.py", "shared/s.py")]


def test_comments_blank_lines_and_imports_do_not_count(tmp_path):
    filler = "\n".join(["import os", "from a import b", "# a comment", "", ")", "]"] * 3)
    root = _tree(tmp_path, {"projects/a/x.py": filler + "\nx = 1\n", "projects/b/y.py": filler + "\ny = 2\n"})
    assert check.find_runs(root) == []
