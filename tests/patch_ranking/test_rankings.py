import json

import pytest
import torch

from shared.clip.models import load_clip
from projects.patch_ranking.golden import GoldenConfig
from projects.patch_ranking.rankings import image_id, load_rankings, new_rankings

pytestmark = pytest.mark.timeout(60)


def _file(tmp_path, tiny_clip):
    r = new_rankings("Synth", "train", tiny_clip.model, "tiny-clip-vit", "random init", GoldenConfig(layer=1))
    r.images["red_square/train_000.png"] = {"order": list(range(16))[::-1], "removed_step": [-1] * 16,
                                            "score": [0.5] * 16}
    return r.save(tmp_path / "r.json")


def test_round_trip(tmp_path, tiny_clip):
    path = _file(tmp_path, tiny_clip)
    r = load_rankings(path, "Synth", tiny_clip.model, "train")
    assert r.meta["golden"]["layer"] == 1 and r.meta["num_patches"] == 16
    assert r.order(["red_square/train_000.png"]).tolist() == [list(range(16))[::-1]]
    assert not any(k.startswith("/") for k in json.loads(path.read_text())["images"])


def test_bad_files_are_clear_errors(tmp_path, tiny_clip):
    path = _file(tmp_path, tiny_clip)
    with pytest.raises(ValueError, match="dataset 'Synth', not 'OxfordPets'"):
        load_rankings(path, "OxfordPets")
    torch.manual_seed(123)
    with pytest.raises(ValueError, match="another model"):
        load_rankings(path, "Synth", load_clip("tiny-clip-vit", None).model)
    with pytest.raises(KeyError, match="no golden ranking"):
        load_rankings(path).order(["red_square/train_001.png"])
    with pytest.raises(FileNotFoundError):
        load_rankings(tmp_path / "missing.json")
    official = tmp_path / "official.json"
    official.write_text(json.dumps({"/home/x/data/img.jpg": {"is_keep": [1], "score": [0], "patch_index": [0]}}))
    with pytest.raises(ValueError, match="not a golden-ranking file"):
        load_rankings(official)


def test_image_ids_are_dataset_relative(tmp_path):
    assert image_id(str(tmp_path / "images" / "a" / "b.png"), tmp_path) == "images/a/b.png"
    with pytest.raises(ValueError, match="not inside"):
        image_id("/elsewhere/b.png", tmp_path)
