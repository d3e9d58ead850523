import json

import pytest

from shared.logging import read_metrics
from projects.minred import train as train_mod
from tests.minred.conftest import tiny_cfg

pytestmark = pytest.mark.timeout(240)

SMALL = ["data.train_subset=24", "data.n_seq_samples=4", "optim.batch_size=4", "buffer.size=12",
         "buffer.num_updates=2", "train.ckpt_every_steps=5"]


def losses(run):
    return [(m["step"], m["train/loss"]) for m in read_metrics(run) if "train/loss" in m]


def test_kill_and_resume_trains_on_exactly_the_same_batches(fmnist_root, tmp_path):
    ref = train_mod.main(tiny_cfg(fmnist_root, tmp_path, "run.name=straight", *SMALL))
    assert ref["steps"] == ref["total_steps"] == 24 * 2 // 4
    assert ref["fashion_mnist/knn_top1"] > 0.2  # well above chance on the blob classes
    straight = losses(tmp_path / "minred" / "straight")
    # stopped mid-stream after 5 steps (buffer, features and generator in the checkpoint), then resumed
    train_mod.main(tiny_cfg(fmnist_root, tmp_path, "run.name=split", "train.max_steps=5", "eval.datasets=[]", *SMALL))
    # what a killed process would leave after its last checkpoint: a record of a later step, a torn line
    with open(tmp_path / "minred" / "split" / "buffer_histogram.jsonl", "a") as f:
        f.write(json.dumps({"step": 7, "stream_pos": 0, "hist": [99]}) + "\n" + '{"step": 8, "hi')
    res = train_mod.main(tiny_cfg(fmnist_root, tmp_path, "run.name=split", *SMALL))
    assert losses(tmp_path / "minred" / "split") == straight
    side = [(tmp_path / "minred" / n / "buffer_histogram.jsonl").read_text() for n in ("straight", "split")]
    assert side[0] == side[1]  # the buffer's side log purged to the resumed step, then continued
    assert res["fashion_mnist/knn_top1"] == ref["fashion_mnist/knn_top1"]
    hist = [json.loads(x) for x in (tmp_path / "minred" / "straight" / "buffer_histogram.jsonl").read_text().splitlines()]
    assert all(sum(h["hist"]) == 12 for h in hist)  # the buffer is full whenever a batch is drawn
    # the same command again: reported complete, nothing evaluated or logged twice
    lines = (tmp_path / "minred" / "split" / "metrics.jsonl").read_text()
    assert train_mod.main(tiny_cfg(fmnist_root, tmp_path, "run.name=split", *SMALL)) == res
    assert (tmp_path / "minred" / "split" / "metrics.jsonl").read_text() == lines


def test_config_errors(fmnist_root, tmp_path):
    with pytest.raises(ValueError, match="smaller than a batch"):
        train_mod.main(tiny_cfg(fmnist_root, tmp_path, "run.name=bad", "buffer.size=4", "optim.batch_size=8"))
    from shared.config import ConfigError
    with pytest.raises(ConfigError, match="num_updates"):
        tiny_cfg(fmnist_root, tmp_path, "buffer.num_update=3")
