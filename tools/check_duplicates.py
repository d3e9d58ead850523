"""Flag code repeated across projects: a run of MIN_LINES or more identical lines (after folding white
space and leaving out blank lines, comments, imports and lone punctuation) that stands in two different
projects, or in a project and shared/. Such code belongs once in shared/. ``make lint`` runs it.

    python tools/check_duplicates.py [--min-lines 6] [ROOT]

Exit status 1 when a run is found, each printed as ``a.py:10-15 ~ b.py:40-45``. Runs inside one
project are not flagged (a project may repeat itself where that reads better).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

MIN_LINES = 6
_SKIP = re.compile(r"^(#.*|import .*|from \S+ import .*|[()\[\]{},:]+)$")


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, folded text) of the lines that count."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        text = " ".join(line.split())
        if text and not _SKIP.match(text):
            out.append((n, text))
    return out


def owner(rel: Path) -> str:
    """``projects/<p>/...`` -> p; ``shared/...`` -> shared."""
    return rel.parts[1] if rel.parts[0] == "projects" else rel.parts[0]


def find_runs(root: Path, min_lines: int = MIN_LINES) -> list[tuple[str, int, int, str, int, int]]:
    files = sorted(p for d in ("projects", "shared") for p in (root / d).rglob("*.py"))
    seen: dict[tuple[str, ...], tuple[Path, int, int]] = {}
    found: dict[tuple[Path, Path], tuple[int, int, int, int]] = {}
    for path in files:
        rel = path.relative_to(root)
        lines = code_lines(path)
        for i in range(len(lines) - min_lines + 1):
            key = tuple(t for _, t in lines[i:i + min_lines])
            first = seen.setdefault(key, (rel, lines[i][0], lines[i + min_lines - 1][0]))
            if owner(first[0]) != owner(rel):
                pair = (first[0], rel)
                a0, a1, b0, b1 = found.get(pair, (first[1], first[2], lines[i][0], lines[i + min_lines - 1][0]))
                found[pair] = (min(a0, first[1]), max(a1, first[2]), min(b0, lines[i][0]),
                               max(b1, lines[i + min_lines - 1][0]))
    return [(str(a), *found[(a, b)][:2], str(b), *found[(a, b)][2:]) for a, b in sorted(found)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", nargs="?", default=Path(__file__).resolve().parent.parent, type=Path)
    p.add_argument("--min-lines", type=int, default=MIN_LINES)
    a = p.parse_args(argv)
    runs = find_runs(a.root, a.min_lines)
    for fa, a0, a1, fb, b0, b1 in runs:
        print(f"{fa}:{a0}-{a1} ~ {fb}:{b0}-{b1}")
    if runs:
        print(f"{len(runs)} run(s) of {a.min_lines}+ identical lines across projects: move the code to shared/",
              file=sys.stderr)
    return 1 if runs else 0


if __name__ == "__main__":
    sys.exit(main())
