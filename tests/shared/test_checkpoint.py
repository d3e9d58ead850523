import os
from pathlib import Path
import pytest
import torch

from shared import checkpoint as ck
from shared.checkpoint import CheckpointManager, load_weights


def test_pointer_and_keep_n(tmp_path):
    m = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        m.save({"step": step, "w": torch.full((2,), float(step))}, step)
    names = sorted(p.name for p in m.dir.iterdir())
    assert names == ["last.txt", "step_000000002.pt", "step_000000003.pt"]
    assert m.load_latest()["step"] == 3


def test_crash_during_save_keeps_previous(tmp_path, monkeypatch):
    m = CheckpointManager(tmp_path, keep=3)
    m.save({"step": 1}, 1)

    real = ck._atomic_write

    def crashing(path, write_fn, size=None):
        def half(f):
            f.write(b"partial bytes")
            raise KeyboardInterrupt("killed mid-write")
        return real(path, half, size)

    monkeypatch.setattr(ck, "_atomic_write", crashing)
    with pytest.raises(KeyboardInterrupt):
        m.save({"step": 2}, 2)
    monkeypatch.setattr(ck, "_atomic_write", real)
    assert m.load_latest()["step"] == 1
    assert not [p for p in m.dir.iterdir() if p.suffix == ".tmp"]  # temp file cleaned up
    assert not (m.dir / "step_000000002.pt").exists()


@pytest.mark.parametrize("err", ["ENOSPC", "EFBIG"])
def test_a_full_disk_during_a_save_names_the_path_and_size_and_keeps_the_previous(tmp_path, monkeypatch, err):
    import errno

    m = CheckpointManager(tmp_path, keep=3)
    m.save({"step": 1, "w": torch.zeros(1000)}, 1)
    real_fsync = os.fsync

    def full(fd):
        raise OSError(getattr(errno, err), os.strerror(getattr(errno, err)))

    monkeypatch.setattr(ck.os, "fsync", full)
    with pytest.raises(ck.DiskFullError) as e:
        m.save({"step": 2, "w": torch.zeros(250_000)}, 2)
    monkeypatch.setattr(ck.os, "fsync", real_fsync)
    msg = str(e.value)
    assert "step_000000002.pt" in msg and "(1.0 MB)" in msg and "nothing was written" in msg
    assert os.strerror(getattr(errno, err)) in msg and e.value.errno == getattr(errno, err)
    assert m.load_latest()["step"] == 1  # the previous checkpoint stays the latest
    assert not [p for p in m.dir.iterdir() if p.name.endswith(".tmp")]
    # replacing an existing file: the old one is kept
    target = tmp_path / "results.json"
    ck.atomic_write_text(target, "old")
    monkeypatch.setattr(ck.os, "fsync", full)
    with pytest.raises(ck.DiskFullError, match="the previous results.json is kept"):
        ck.atomic_write_text(target, "new")
    monkeypatch.setattr(ck.os, "fsync", real_fsync)
    assert target.read_text() == "old"


def test_corrupt_latest_falls_back(tmp_path):
    m = CheckpointManager(tmp_path, keep=3)
    m.save({"step": 1}, 1)
    m.save({"step": 2}, 2)
    (m.dir / "step_000000002.pt").write_bytes(b"garbage")
    assert m.load_latest()["step"] == 1


def test_missing_pointer_target_uses_newest(tmp_path):
    m = CheckpointManager(tmp_path, keep=3)
    m.save({"step": 1}, 1)
    m.pointer.write_text("step_000000099.pt\n")
    assert m.latest_path().name == "step_000000001.pt"


def test_load_weights_strips_ddp_prefix(tmp_path):
    torch.save({"model": {"module.a": torch.ones(1)}, "epoch": 3}, tmp_path / "w.pth")
    assert list(load_weights(tmp_path / "w.pth")) == ["a"]
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_weights(tmp_path / "nope.pth")


def test_rng_state_round_trip():
    state = ck.rng_state()
    a = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    ck.set_rng_state(state)
    b = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


# -- issue 9, item 9: modes and stale temp files ------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        ck.atomic_write_text(tmp_path / "results.json", "{}\n")
        CheckpointManager(tmp_path, keep=2).save({"step": 1}, 1)
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "checkpoints" / "step_000000001.pt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "checkpoints" / "last.txt").stat().st_mode & 0o777 == mode


def test_replacing_a_file_keeps_its_mode(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("a: 1\n")
    p.chmod(0o640)
    ck.atomic_write_text(p, "a: 2\n")
    assert p.read_text() == "a: 2\n" and p.stat().st_mode & 0o777 == 0o640


def test_stale_temp_files_are_removed(tmp_path):
    import tempfile

    m = CheckpointManager(tmp_path, keep=2)
    m.save({"step": 1}, 1)
    fd, stale = tempfile.mkstemp(prefix=".step_000000002.pt.", suffix=".tmp", dir=m.dir)
    os.write(fd, b"half a checkpoint")
    os.close(fd)
    keep = [m.dir / ".hidden_but_ours.tmp", tmp_path / "notes.tmp", m.dir / "step_000000001.pt"]
    for p in keep[:2]:
        p.write_text("x")
    assert ck.remove_stale_temps(tmp_path, m.dir, tmp_path / "missing") == [Path(stale)]
    assert not Path(stale).exists() and all(p.exists() for p in keep)


# -- issue 9, item 2: existing checkpoints that do not load stop the resume ---------------------------
def test_no_loadable_checkpoint_is_an_error_naming_the_files(tmp_path):
    m = CheckpointManager(tmp_path, keep=3)
    assert m.load_latest() is None  # a new run: nothing to resume
    m.save({"step": 1}, 1)
    m.save({"step": 2}, 2)
    (m.dir / "step_000000001.pt").write_bytes(b"")
    (m.dir / "step_000000002.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ck.UnreadableCheckpoints, match=r"(?s)none of the 2 checkpoints.*\n.*step_000000002.pt \(14 bytes\)"
                                                       r"[^\n]*\n.*step_000000001.pt \(0 bytes\).*restart_on_corrupt"
                       ) as e:
        m.load_latest()
    assert sorted(p.name for p in e.value.files) == ["step_000000001.pt", "step_000000002.pt"]


def test_a_pointer_whose_checkpoints_were_removed_is_an_error(tmp_path):
    m = CheckpointManager(tmp_path, keep=3)
    m.save({"step": 1}, 1)
    (m.dir / "step_000000001.pt").unlink()
    with pytest.raises(ck.UnreadableCheckpoints, match=r"last.txt names step_000000001.pt.*holds no checkpoint"):
        m.load_latest()


def test_a_file_that_is_not_a_run_checkpoint_is_skipped(tmp_path):
    m = CheckpointManager(tmp_path, keep=3)
    m.save({"step": 1, "w": 1}, 1)
    torch.save([1, 2, 3], m.dir / "step_000000002.pt")
    assert m.load_latest()["step"] == 1 and m.loaded_path.name == "step_000000001.pt"


# -- issue 9, item 8: weight files that are not weights, and another project's checkpoint ---------------
def test_load_weights_says_what_a_file_holds(tmp_path):
    (tmp_path / "readme.pth").write_text("These are the weights of our best model.\n")
    with pytest.raises(ck.CheckpointError, match=r"readme.pth is not a weights file: it is a text file \(it begins 'These"):
        load_weights(tmp_path / "readme.pth")
    torch.save([torch.ones(1), 2, "x"], tmp_path / "list.pth")
    with pytest.raises(ck.CheckpointError, match=r"list.pth holds a pickled list of 3 items \(Tensor, int, str\), not a state dict"):
        load_weights(tmp_path / "list.pth")
    torch.save(torch.ones(3, 2), tmp_path / "tensor.pth")
    with pytest.raises(ck.CheckpointError, match=r"tensor.pth holds a single tensor of shape \(3, 2\)"):
        load_weights(tmp_path / "tensor.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ck.CheckpointError, match="empty.pth is not a weights file: it is an empty file"):
        load_weights(tmp_path / "empty.pth")
    (tmp_path / "page.pth").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    with pytest.raises(ck.CheckpointError, match="page.pth is not a weights file: it is an HTML page"):
        load_weights(tmp_path / "page.pth")
    torch.save({"model": {"a": torch.ones(1)}}, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CheckpointError, match=r"cut.pth cannot be read as PyTorch weights .*is the file complete"):
        load_weights(tmp_path / "cut.pth")
    with pytest.raises(ck.CheckpointError, match=r"ok.pth has no 'ema' entry: it holds a dict with keys \['model'\]"):
        load_weights(tmp_path / "ok.pth", key="ema")


def test_load_weights_formats(tmp_path, caplog):
    from safetensors.torch import save_file

    net = torch.nn.Linear(2, 3)
    torch.save(net, tmp_path / "module.pt")  # a whole pickled module: needs full unpickling, said so
    with caplog.at_level("WARNING"):
        got = load_weights(tmp_path / "module.pt")
    assert set(got) == {"weight", "bias"} and "module.pt holds Python objects besides tensors" in caplog.text
    save_file({"weight": torch.ones(3, 2)}, str(tmp_path / "w.safetensors"))
    assert load_weights(tmp_path / "w.safetensors")["weight"].shape == (3, 2)
    # a run checkpoint (numpy RNG state inside) loads weights-only, without the warning
    caplog.clear()
    torch.save({"step": 3, "rng": ck.rng_state(), "project": "p", "model": net.state_dict()}, tmp_path / "run.pt")
    with caplog.at_level("WARNING"):
        assert set(load_weights(tmp_path / "run.pt", key="model", project="p")) == {"weight", "bias"}
    assert "besides tensors" not in caplog.text


def test_another_projects_checkpoint_is_a_one_line_error(tmp_path):
    state = {"step": 5, "project": "ptnl", "config": {"run": {"name": "dtd"}},
             "model": {f"layer{i}.weight": torch.ones(1) for i in range(300)}}
    torch.save(state, tmp_path / "step.pt")
    with pytest.raises(ck.CheckpointError) as e:
        load_weights(tmp_path / "step.pt", key="model", project="ezvsl")
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300
    assert "step.pt is a checkpoint of project 'ptnl' (its config: dtd), not of 'ezvsl'" in msg
    assert len(load_weights(tmp_path / "step.pt", key="model", project="ptnl")) == 300


def test_offline_hub_weights_say_what_to_download_and_where(tmp_path, monkeypatch):
    from shared import weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    url = "http://127.0.0.1:9/models/resnet18-f37072fd.pth"  # nothing listens: fails like an offline machine
    with pytest.raises(weights.WeightsUnavailable) as e:
        weights.hub_state_dict(url, what="ImageNet ResNet-18", config_key="model.image_weights")
    msg = str(e.value)
    want = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert "could not download ImageNet ResNet-18 from " + url in msg
    assert f"put it at {want}" in msg and "model.image_weights=/path/to/resnet18-f37072fd.pth" in msg
    want.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fc.weight": torch.ones(2)}, want)  # once the file is where the message said: no network needed
    assert list(weights.hub_state_dict(url)) == ["fc.weight"]
    assert weights.hub_cache_path(
        __import__("torchvision").models.get_weight("ResNet18_Weights.IMAGENET1K_V1").url).name == want.name
