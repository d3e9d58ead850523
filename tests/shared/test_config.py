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
    cfg = load_config(cfgs / "exp.yaml", ["optim.lr=1e3"])
    assert cfg.optim.lr == 1000.0 and isinstance(cfg.optim.lr, float)
    assert load_config(cfgs / "exp.yaml").optim.lr == 5e-4
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


# -- type checks against the root's defaults (issue 9, item 4) -----------------------------------------
@pytest.mark.parametrize("override, message", [
    ("optim.epochs=abc", r"'optim.epochs' = 'abc' \(in command line\): expected an int like its default 10, got str"),
    ("optim.epochs=2.5", r"'optim.epochs' = 2.5 .*expected an int.*got float"),
    ("optim.epochs=3.0", r"'optim.epochs' = 3.0 .*expected an int"),
    ("optim.epochs=true", r"'optim.epochs' = True .*expected an int.*got bool"),
    ("optim.epochs=null", r"'optim.epochs' = None .*expected an int"),
    ("run.seed=1e3", r"'run.seed' = 1000.0 .*expected an int"),
    ("optim.lr=true", r"'optim.lr' = True .*expected a number.*got bool"),
    ("optim.lr=fast", r"'optim.lr' = 'fast' .*expected a number"),
    ("optim.betas=0.9", r"'optim.betas' = 0.9 .*expected a list"),
    ("optim.betas=[0.9, x]", r"'optim.betas\[1\]' = 'x' .*expected a number"),
    ("flags.verbose=1", r"'flags.verbose' = 1 .*expected a bool \(true/false\)"),
    ("flags.name=7", r"'flags.name' = 7 .*expected a string.*quote it"),
    ("optim.lr={a: 1}", r"'optim.lr' = \{'a': 1\} .*expected a number.*got section"),
])
def test_every_override_is_checked_against_the_root_type(cfgs, override, message):
    (cfgs / "typed.yaml").write_text("base: base.yaml\n")
    (cfgs / "base.yaml").write_text(
        (cfgs / "base.yaml").read_text() + "flags: {verbose: false, name: x, anything: null}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(cfgs / "typed.yaml", [override])


def test_accepted_values_and_conversions(cfgs):
    (cfgs / "base.yaml").write_text(
        (cfgs / "base.yaml").read_text() + "flags: {verbose: false, name: x, anything: null, sizes: [1, 2]}\n")
    cfg = load_config(cfgs / "base.yaml", ["optim.lr=1", "optim.betas=[1, 0.5]", "flags.anything=[1, {a: b}]",
                                           "flags.name=null", "flags.sizes=[]", "extra.free=true", "run.name='7'"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)  # a float key takes an int, as a float
    assert cfg.optim.betas == [1.0, 0.5] and all(isinstance(b, float) for b in cfg.optim.betas)
    assert cfg.flags.anything == [1, {"a": "b"}] and cfg.flags.name is None and cfg.run.name == "7"
    with pytest.raises(ConfigError, match=r"'flags.sizes\[0\]' = 1.5 .*expected an int"):
        load_config(cfgs / "base.yaml", ["flags.sizes=[1.5]"])


def test_config_file_values_are_checked_too_naming_the_file(cfgs):
    (cfgs / "bad.yaml").write_text("base: child.yaml\ntrain_like: 1\n")
    (cfgs / "bad.yaml").write_text("base: child.yaml\noptim: {epochs: 12.5}\n")
    with pytest.raises(ConfigError, match=r"'optim.epochs' = 12.5 \(in .*bad.yaml\): expected an int"):
        load_config(cfgs / "bad.yaml")


def test_a_bool_never_passes_for_a_count(cfgs):
    # the probe: train.ckpt_every_steps=true silently became 1 (a checkpoint every step)
    (cfgs / "base.yaml").write_text((cfgs / "base.yaml").read_text() + "train: {ckpt_every_steps: 0}\n")
    with pytest.raises(ConfigError, match=r"'train.ckpt_every_steps' = True .*expected an int.*got bool"):
        load_config(cfgs / "base.yaml", ["train.ckpt_every_steps=true"])


# -- the shared run:/train: defaults (issue 8, config hygiene) ----------------------------------------
def test_sections_inherit_the_shared_defaults(tmp_path):
    from shared.config import SHARED_DEFAULTS, load_yaml

    shared = load_yaml(SHARED_DEFAULTS.read_text())
    (tmp_path / "base.yaml").write_text(
        "run:\n  inherit: shared\n  project: toy\n  seed: 5\n"
        "train:\n  inherit: shared\n  log_every: 3\n  channels_last: true\n"
        "optim: {lr: 0.1}\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\ntrain: {ckpt_every_steps: 7}\n")
    cfg = load_config(tmp_path / "exp.yaml", ["run.keep_checkpoints=4"])
    assert cfg.run.project == "toy" and cfg.run.seed == 5 and cfg.run.name == "exp"
    assert cfg.run.keep_checkpoints == 4 and cfg.run.resume == shared["run"]["resume"]
    assert cfg.train.log_every == 3 and cfg.train.channels_last is True and cfg.train.ckpt_every_steps == 7
    assert cfg.train.ckpt_every_epochs == shared["train"]["ckpt_every_epochs"]
    assert "inherit" not in cfg.run and set(shared["run"]) <= set(cfg.run)
    # inherited keys are strict and typed like any other
    with pytest.raises(ConfigError, match=r"'run.keep_checkpoint'.*Did you mean 'keep_checkpoints'"):
        load_config(tmp_path / "exp.yaml", ["run.keep_checkpoint=4"])
    with pytest.raises(ConfigError, match=r"'train.ckpt_every_epochs' = 0.5 .*expected an int"):
        load_config(tmp_path / "exp.yaml", ["train.ckpt_every_epochs=0.5"])


def test_inherit_errors(tmp_path):
    (tmp_path / "typo.yaml").write_text("run:\n  inherit: shared\n  project: toy\n  keep_checkpoint: 3\n")
    with pytest.raises(ConfigError, match=r"'run.keep_checkpoint' is not a shared run: key; did you mean 'keep_checkpoints'"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "type.yaml").write_text("train:\n  inherit: shared\n  log_every: ten\n")
    with pytest.raises(ConfigError, match=r"'train.log_every' = 'ten' .*expected an int"):
        load_config(tmp_path / "type.yaml")
    (tmp_path / "src.yaml").write_text("run:\n  inherit: elsewhere\n")
    with pytest.raises(ConfigError, match="the only source is 'shared'"):
        load_config(tmp_path / "src.yaml")
    (tmp_path / "sec.yaml").write_text("model:\n  inherit: shared\n")
    with pytest.raises(ConfigError, match="has no model: section"):
        load_config(tmp_path / "sec.yaml")


def test_the_built_projects_take_run_and_train_from_the_shared_defaults():
    from shared.config import SHARED_DEFAULTS, load_yaml

    shared = load_yaml(SHARED_DEFAULTS.read_text())
    for project in ("ezvsl", "ptnl", "accel_ssl", "oneavm"):
        raw = load_yaml(open(f"projects/{project}/configs/base.yaml").read())
        assert raw["run"].get("inherit") == "shared" and raw["train"].get("inherit") == "shared", project
        for section in ("run", "train"):  # a shared key is set only to change its value, never repeated
            repeated = {k for k in set(raw[section]) & set(shared[section]) if raw[section][k] == shared[section][k]}
            assert not repeated, (project, section, repeated)
        cfg = load_config(f"projects/{project}/configs/base.yaml")
        assert cfg.run.project == project and set(shared["train"]) <= set(cfg.train)


@pytest.mark.parametrize("config, override, message", [
    ("ezvsl/configs/demo.yaml", "optim.batch_size=0", r"'optim.batch_size' = 0: must be >= 1"),
    ("latent_mim/configs/demo.yaml", "optim.accum_iter=0", r"'optim.accum_iter' = 0: must be >= 1"),
    ("ezvsl/configs/demo.yaml", "train.log_every=-1", r"'train.log_every' = -1: must be >= 0 .*0: off"),
    ("ezvsl/configs/demo.yaml", "train.ckpt_every_steps=-5", r"'train.ckpt_every_steps' = -5: must be >= 0"),
    ("latent_mim/configs/demo.yaml", "model.mae_mask_ratio=1.0", r"'model.mae_mask_ratio' = 1.0: must be in \(0, 1\)"),
    ("patch_ranking/configs/demo.yaml", "eval.keep_ratios=[1.0,0.0]", r"'eval.keep_ratios\[1\]' = 0.0: must be in \(0, 1\]"),
    ("minred/configs/demo.yaml", "buffer.size=0", r"'buffer.size' = 0: must be >= 1"),
    ("ptnl/configs/demo.yaml", "fewshot.noise_rate=1.0", r"'fewshot.noise_rate' = 1.0: must be in \[0, 1\)"),
    ("ezvsl/configs/demo.yaml", "data.max_bad_fraction=1.5", r"'data.max_bad_fraction' = 1.5: must be in \[0, 1\]"),
])
def test_ranges_are_checked_at_load_time_naming_the_key(config, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(f"projects/{config}", [override])


def test_range_bounds_are_inclusive_where_they_say_so():
    cfg = load_config("projects/ezvsl/configs/demo.yaml", ["train.log_every=0", "train.ckpt_every_steps=0",
                                                           "data.max_bad_fraction=0", "optim.batch_size=1"])
    assert cfg.train.log_every == 0 and cfg.optim.batch_size == 1
    assert load_config("projects/ptnl/configs/demo.yaml", ["fewshot.noise_rate=0.0"]).fewshot.noise_rate == 0.0
