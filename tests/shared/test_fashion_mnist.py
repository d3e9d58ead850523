"""shared.data.fashion_mnist: the one folder it reads (explicit root, else $DATA_ROOT, else Debian's),
and errors that name it."""
import gzip
import logging

import numpy as np
import pytest

from shared.data import fashion_mnist as fm


def _idx(path, arr: np.ndarray, gz=False):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    (gzip.open if gz else open)(path, "wb").write(header + arr.astype(np.uint8).tobytes())


def _write_set(folder, n_train=6, n_test=4, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        img, lab = fm.FILES[split]
        _idx(folder / (img + (".gz" if gz else "")), rng.integers(0, 255, (n, 28, 28)), gz)
        _idx(folder / (lab + (".gz" if gz else "")), np.arange(n) % 10, gz)
    return folder


def test_an_explicit_root_is_read_and_logged(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    root = _write_set(tmp_path / "fm", gz=True)
    with caplog.at_level(logging.INFO, logger="shared.data.fashion_mnist"):
        x, y = fm.load("test", root)
    assert x.shape == (4, 28, 28) and y.tolist() == [0, 1, 2, 3] and y.dtype == np.int64
    assert f"reading {root}" in caplog.text


def test_an_explicit_root_without_the_files_is_an_error_never_the_debian_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match=r"data.root\) .*nowhere does not exist"):
        fm.load("train", tmp_path / "nowhere")
    partial = _write_set(tmp_path / "partial")
    (partial / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"partial lacks t10k-labels-idx1-ubyte"):
        fm.load("train", partial)
    assert fm.find_root(partial) is None


def test_data_root_env_is_the_folder_when_no_root_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"\$DATA_ROOT\) .*empty does not exist"):
        fm.load("train")
    monkeypatch.setenv("DATA_ROOT", str(_write_set(tmp_path / "env")))
    assert fm.find_root() == tmp_path / "env" and len(fm.load("train")[0]) == 6


def test_a_truncated_idx_file_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    root = _write_set(tmp_path / "fm")
    f = root / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated"):
        fm.load("train", root)
