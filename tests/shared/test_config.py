import pytest

from shared.config import ConfigError, load_config, parse_overrides, save_config


@pytest.fixture
def cfgs(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "run: {project: p, name: null, root: runs, seed: 0}\n"
        "optim: {lr: 0.1, epochs: 10, betas: [0.9, 0.99]}\n"
        "extra: {}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim: {epochs: 20}\nextra: {anything: 1}\n")
    (tmp_path / "grandchild.yaml").write_text("base: child.yaml\noptim: {lr: 0.5}\n")
    return tmp_path


def test_inheritance_and_typed_overrides(cfgs):
    cfg = load_config(cfgs / "grandchild.yaml", ["optim.epochs=3", "optim.betas=[0.5, 0.6]", "run.seed=7"])
    assert cfg.optim.lr == 0.5 and cfg.optim.epochs == 3 and cfg.optim.betas == [0.5, 0.6]
    assert cfg.run.seed == 7 and isinstance(cfg.run.seed, int)
    assert cfg.extra.anything == 1  # free-form section set by the child
    cfg2 = load_config(cfgs / "grandchild.yaml", ["extra.other.deep=2"])
    assert cfg2.extra == {"anything": 1, "other": {"deep": 2}}  # stays free-form below the root
    assert cfg.run.name == "grandchild"  # run folder named from the config file


def test_exponent_floats_without_a_dot(cfgs):
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; a learning rate written so must be a float
    (cfgs / "exp.yaml").write_text("base: base.yaml\noptim: {lr: 5e-4}\n")
    cfg = load_config(cfgs / "exp.yaml", ["run.seed=1e3"])
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.run.seed == 1000.0
    assert parse_overrides(["a=-2E+2", "b=1.5", "c=1_000", "d=e5", "e=.inf"]) == {
        "a": -200.0, "b": 1.5, "c": 1000, "d": "e5", "e": float("inf")}


def test_unknown_key_names_closest(cfgs):
    with pytest.raises(ConfigError, match=r"optim\.epoch'.*Did you mean 'epochs'"):
        load_config(cfgs / "child.yaml", ["optim.epoch=3"])
    (cfgs / "typo.yaml").write_text("base: base.yaml\noptm: {lr: 1}\n")
    with pytest.raises(ConfigError, match=r"'optm'.*'optim'.*typo.yaml"):
        load_config(cfgs / "typo.yaml")


def test_section_type_and_syntax_errors(cfgs):
    with pytest.raises(ConfigError, match="is a section"):
        load_config(cfgs / "base.yaml", ["optim=3"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides(["optim.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(cfgs / "missing.yaml")
    (cfgs / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(cfgs / "loop.yaml")


def test_attribute_errors_name_valid_keys(cfgs):
    cfg = load_config(cfgs / "base.yaml")
    with pytest.raises(AttributeError, match="Did you mean 'lr'"):
        cfg.optim.lrr


def test_resolved_config_round_trips(cfgs, tmp_path):
    cfg = load_config(cfgs / "grandchild.yaml", ["optim.epochs=4"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    (tmp_path / "out" / "config.yaml").read_text()
    again = load_config(tmp_path / "out" / "config.yaml")
    assert again == cfg


def test_every_project_config_loads():
    import glob

    paths = [p for p in glob.glob("projects/*/configs/*.yaml") if not p.split("/")[-1].startswith("_")]
    assert paths
    for p in paths:
        cfg = load_config(p)
        assert cfg.run.project in p
