
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

    def crashing(path, write_fn):
        def half(f):
            f.write(b"partial bytes")
            raise KeyboardInterrupt("killed mid-write")
        return real(path, half)

    monkeypatch.setattr(ck, "_atomic_write", crashing)
    with pytest.raises(KeyboardInterrupt):
        m.save({"step": 2}, 2)
    monkeypatch.setattr(ck, "_atomic_write", real)
    assert m.load_latest()["step"] == 1
    assert not [p for p in m.dir.iterdir() if p.suffix == ".tmp"]  # temp file cleaned up
    assert not (m.dir / "step_000000002.pt").exists()


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
