"""The root README says what the Makefile does: every per-project exception in the Makefile
(CONFIG_ENTRY_<p>, CONFIG_ARGS_<p>) is named in the README's exceptions note, and no other."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_readme_exceptions_match_the_makefile():
    make = (REPO / "Makefile").read_text()
    in_make = set(re.findall(r"^CONFIG_(?:ENTRY|ARGS)_(\w+)\s*=", make, flags=re.M))
    readme = (REPO / "README.md").read_text()
    note = readme[readme.index("- The exceptions, kept in the Makefile"):]
    note = note[:note.index("\n- ")]
    in_readme = set(re.findall(r"`reproduce-(\w+)", note))
    assert in_make and in_readme == in_make, (sorted(in_make), sorted(in_readme))
