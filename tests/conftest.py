"""Fixtures several projects' tests share, built once per test run, and the skip for missing data packages.

``demo_clip_smoke``: the demo CLIP's "looks" variant (``shared.clip.demo_clip``) trained at a smoke
recipe (``DEMO_CLIP_SMOKE``: 150 steps of 64 on plain and dark images, about 15 s on 2 cores) into
the session's temporary folder, so no test trains the full recipe (600 steps of 128 in five looks,
about 3 min) and no test touches the demos' cache in ``data/demo_clip/``. Tests that need a trained
CLIP take this fixture; tests of the cache itself train their own few-step models.
"""
from pathlib import Path

import pytest

from shared.data import fashion_mnist
from shared.data.debian_packages import PACKAGES, install_line

def skip_unless_installed(name: str) -> None:
    """Skip the calling test (or fixture) with the one install line when a Debian data package
    (shared/data/debian_packages.py) is not installed. Fashion-MNIST also comes from $DATA_ROOT:
    its tests check ``fashion_mnist.find_root()`` instead."""
    pkg, folder, _ = PACKAGES[name]
    if not Path(folder).is_dir():
        pytest.skip(f"{pkg} is not installed ({folder} not found): {install_line([name])}")


DEMO_CLIP_SMOKE = {"steps": 150, "batch_size": 64, "looks": ["plain", "dark"]}


@pytest.fixture(scope="session")
def demo_clip_smoke(tmp_path_factory):
    """Path of the smoke-recipe demo CLIP (variant "looks"), trained on first use in this session."""
    if fashion_mnist.find_root() is None:
        pytest.skip(fashion_mnist.HOW_TO_GET)
    from shared.clip import demo_clip

    path = tmp_path_factory.mktemp("demo_clip") / "demo-clip-fmnist-looks.pt"
    return demo_clip.ensure_demo_clip(path, variant="looks", verbose=False, **DEMO_CLIP_SMOKE)


def pytest_addoption(parser):
    parser.addoption("--claims", action="store_true",
                     help="also run the tests marked demo_claim (a demo's learning claim at a reduced size, minutes each)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--claims"):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("demo_claim") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
