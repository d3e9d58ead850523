"""The Debian data packages the demos and their tests read, in one place.

    python3 shared/data/debian_packages.py             # (make setup) install the missing ones where it can
    python3 shared/data/debian_packages.py --check     # list what is missing, install nothing

Standard library only: `make setup` runs it with the system Python before the venv exists. It
installs with apt-get as root, or through `sudo -n` when that needs no password; otherwise it prints
the one install line and goes on (the tests that need a missing package skip with that line).
A new paper's package joins ``PACKAGES``; its tests call ``skip_unless_installed`` (tests/conftest.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

# name -> (Debian package, a folder the package installs, what reads it)
PACKAGES = {
    "fashion_mnist": ("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist",
                      "Fashion-MNIST demos: accel_ssl, latent_mim, minred, patch_ranking, ptnl"),
    "tuxpaint": ("tuxpaint-stamps-default", "/usr/share/tuxpaint/stamps",
                 "object pictures with their recorded sounds: the audio-visual demos (oneavm)"),
}


def install_line(names=None) -> str:
    pkgs = [PACKAGES[n][0] for n in (names or PACKAGES)]
    return "sudo apt-get install " + " ".join(pkgs)


def missing() -> list[str]:
    return [n for n, (_, folder, _) in PACKAGES.items() if not Path(folder).is_dir()]


def _apt_prefix() -> list[str] | None:
    if not shutil.which("apt-get"):
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def install(names: list[str]) -> bool:
    prefix = _apt_prefix()
    if prefix is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    pkgs = [PACKAGES[n][0] for n in names]
    ok = subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", *pkgs], env=env).returncode == 0
    if not ok:  # a fresh image has no package lists yet
        subprocess.run([*prefix, "apt-get", "update", "-qq"], env=env)
        ok = subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", *pkgs], env=env).returncode == 0
    return ok and not set(names) & set(missing())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="list what is missing; install nothing")
    a = p.parse_args(argv)
    need = missing()
    if not need:
        print("data packages: all installed (" + ", ".join(v[0] for v in PACKAGES.values()) + ")")
        return 0
    if not a.check and install(need):
        print("data packages: installed " + ", ".join(PACKAGES[n][0] for n in need))
        return 0
    for n in need:
        print(f"data packages: {PACKAGES[n][0]} is not installed ({PACKAGES[n][2]}); the tests that need it skip")
    print(f"data packages: to install them: {install_line(need)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
