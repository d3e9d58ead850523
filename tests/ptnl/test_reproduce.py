"""The demo's gathered rows as shared.report rows (projects/ptnl/results/demo.json)."""
from projects.ptnl.reproduce import result_rows
from shared.report import validate_rows


def test_result_rows_are_report_rows():
    gathered = [
        {"method": "coop", "noise_type": "random", "noise_rate": 0.5, "loss": "gce q=0.7", "seeds": 4,
         "mean": 77.61, "std": 0.93, "ensemble": 77.7, "train_noise": 0.5},
        {"method": "zeroshot", "noise_type": "-", "noise_rate": "-", "loss": "-", "seeds": 1, "mean": 77.8,
         "std": 0.0, "train_noise": None},
        {"method": "linear_probe", "noise_type": "random", "noise_rate": 0.0, "loss": "-", "seeds": 4,
         "mean": 73.2, "std": 2.1, "ensemble": 78.5, "train_noise": 0.0},
        {"method": "robust_upl", "noise_type": "-", "noise_rate": "-", "loss": "gce q=0.7", "seeds": 4,
         "mean": 76.9, "std": 0.3, "ensemble": 76.8, "train_noise": 0.194},
    ]
    rows = validate_rows(result_rows(gathered))
    assert [r["method"] for r in rows] == ["zero-shot CLIP (no training)", "linear probe (LogReg C=1e3)",
                                           "CoOp prompt tuning, GCE q=0.7", "robust UPL (16 random per class, GCE)"]
    coop = rows[2]
    assert (coop["setting"], coop["ours"], coop["std"]) == ("50 % wrong labels (random)", 77.61, 0.93)
    assert coop["note"] == "4 seeds; averaged-logits ensemble 77.7"
    assert rows[0]["std"] is None and rows[0]["setting"] == "no training"          # one seed: no spread
    assert rows[3]["setting"] == "zero-shot pseudo-labels (19.4 % wrong)"


def test_demo_dataset_in_a_look_is_the_plain_split_with_changed_pixels(tmp_path):
    """projects/ptnl/demo_data.py: the look's images folder holds every image of the same split file,
    each the plain image in that look (shared.clip.demo_clip.apply_look), read by the CoOp loader."""
    import numpy as np
    import pytest
    from PIL import Image

    from projects.ptnl.demo_data import look_image_dir, write_demo_dataset
    from shared.clip import datasets as D
    from shared.clip.demo_clip import apply_look
    from shared.clip.demo_data import SPLIT_FILE
    from shared.data import fashion_mnist

    if fashion_mnist.find_root() is None:
        pytest.skip(fashion_mnist.HOW_TO_GET)
    assert look_image_dir(None) == look_image_dir("plain") == "images" and look_image_dir("dark") == "images_dark"
    ddir = write_demo_dataset(tmp_path, 2, 1, 1, "dark")
    plain = D.load_dataset("FashionMNIST", tmp_path, dataset_dir=ddir.name, image_dir="images", split_file=SPLIT_FILE)
    dark = D.load_dataset("FashionMNIST", tmp_path, dataset_dir=ddir.name, image_dir="images_dark",
                          split_file=SPLIT_FILE)
    assert len(dark.train) == len(plain.train) == 20 and len(dark.test) == len(plain.test) == 10
    for a, b in zip(plain.train + plain.val + plain.test, dark.train + dark.val + dark.test):
        assert a.label == b.label and a.impath != b.impath
        x = np.asarray(Image.open(a.impath))[None]
        assert np.array_equal(np.asarray(Image.open(b.impath))[None], apply_look(x, "dark"))
    with pytest.raises(ValueError, match="unknown look"):
        write_demo_dataset(tmp_path, 2, 1, 1, "shiny")


def test_demo_config_look_and_images_folder_must_agree(tmp_path):
    import pytest

    from projects.ptnl.reproduce import DEMO_CONFIG, prepare_demo
    from shared.config import load_config

    cfg = load_config(DEMO_CONFIG, [f"data.root={tmp_path}", "data.image_dir=images"])
    assert cfg.demo.look == "dark" and cfg.demo.clip_variant == "looks"
    with pytest.raises(ValueError, match="images_dark"):
        prepare_demo(cfg, 2, 1, 1)
