"""shared/data/debian_packages.py: the one list of Debian data packages, what `make setup` installs."""
import subprocess
import sys

from shared.data import debian_packages as dp
from shared.data import fashion_mnist, tuxpaint


def test_loaders_read_the_folders_the_registry_names():
    assert str(fashion_mnist.DEBIAN_DIR) == dp.PACKAGES["fashion_mnist"][1]
    assert str(tuxpaint.STAMPS) == dp.PACKAGES["tuxpaint"][1]


def test_missing_packages_are_listed_with_one_install_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(dp, "PACKAGES", {"here": ("pkg-here", str(tmp_path), "x"),
                                         "gone": ("pkg-gone", str(tmp_path / "nope"), "the y demo")})
    assert dp.missing() == ["gone"]
    assert dp.install_line(["gone"]) == "sudo apt-get install pkg-gone"
    assert dp.main(["--check"]) == 0  # never fails set-up: the tests that need it skip
    out = capsys.readouterr().out
    assert "pkg-gone is not installed (the y demo)" in out and "sudo apt-get install pkg-gone" in out
    assert "pkg-here" not in out


def test_runs_with_the_system_python_before_the_venv_exists():
    # `make setup` calls it as a file with the interpreter that creates the venv: standard library only
    out = subprocess.run([sys.executable, "-S", "-I", "shared/data/debian_packages.py", "--check"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("data packages:")
