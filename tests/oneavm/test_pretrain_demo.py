import json

import pytest
import torch

from projects.oneavm.model import imagenet_resnet18
from projects.oneavm.pretrain_demo import pretrain
from tests.conftest import skip_unless_installed

pytestmark = pytest.mark.timeout(120)


def test_stand_in_pretraining_writes_weights_the_image_encoder_loads(tmp_path):
    skip_unless_installed("tuxpaint")
    out = tmp_path / "w" / "resnet18.pth"
    info = pretrain(tmp_path / "pics", out, image_size=32, n_per_class=3, epochs=1, batch_size=8)
    classes = sorted(p.name for p in (tmp_path / "pics" / "objects").iterdir() if p.is_dir())
    assert info["classes"] == classes and len(classes) == 12
    assert len(list((tmp_path / "pics" / "objects" / classes[0]).glob("*.jpg"))) == 3
    assert info["n_val"] + info["n_train"] == 36 and 0.0 <= info["val_accuracy"] <= 1.0
    state = torch.load(out, map_location="cpu")
    assert state["fc.weight"].shape == (12, 512)
    net = imagenet_resnet18(str(out))  # the model.image_weights path: the classifier head is dropped
    assert torch.equal(net.conv1.weight, state["conv1.weight"])
    assert torch.equal(net.layer4[1].bn2.running_mean, state["layer4.1.bn2.running_mean"])
    # cached: a second call keeps the weights and returns the saved report
    mtime = out.stat().st_mtime_ns
    assert pretrain(tmp_path / "pics", out, image_size=32, n_per_class=3, epochs=1, batch_size=8) == \
        json.loads(out.with_suffix(".json").read_text())
    assert out.stat().st_mtime_ns == mtime
    # other settings retrain (a stale cache is never reused)
    info2 = pretrain(tmp_path / "pics", out, image_size=32, n_per_class=3, epochs=1, batch_size=8, seed=1)
    assert info2["settings"]["seed"] == 1 and out.stat().st_mtime_ns != mtime
