"""Derived sizes (the visible-patch count of the grid, MAE's mask ratio) are checked before the run folder."""
import pytest

from shared.config import ConfigError
from projects.latent_mim.model import build_model
from projects.latent_mim.train import main


@pytest.mark.parametrize("overrides, match", [
    (["model.grid_size=4", "model.num_vis=16"], r"model.num_vis=16 .* 16 patches .*model.grid_size=4.* 1 to 15"),
    (["model.grid_size=4", "model.num_vis=17"], r"model.num_vis=17"),
    (["model.method=mae", "model.grid_size=4", "model.mae_mask_ratio=0.99"], r"model.mae_mask_ratio=0.99 leaves 0 of the 16"),
    (["model.method=mae", "model.grid_size=4", "model.mae_mask_ratio=0.02"], r"leaves 16 of the 16"),
])
def test_a_size_that_does_not_fit_the_grid_stops_before_the_run_folder(cfg_factory, tmp_path, overrides, match):
    cfg = cfg_factory(*overrides)
    with pytest.raises(ConfigError, match=match):
        main(cfg)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match=match):
        build_model(cfg)


def test_sizes_that_fit_build(cfg_factory):
    build_model(cfg_factory("model.grid_size=4", "model.num_vis=15"))
    build_model(cfg_factory("model.method=mae", "model.grid_size=4", "model.mae_mask_ratio=0.9"))  # 2 of 16 visible
