import json
import shutil

import numpy as np
import pytest

from shared.data.index import DatasetError
from shared.data.robust import BadSample
from projects.ezvsl.data import eval_set, load_flickr_boxes, load_vggss_boxes, train_set
from tests.ezvsl.conftest import tiny_cfg


def test_flickr_xml_named_and_positional(tmp_path):
    (tmp_path / "a.xml").write_text(
        "<annotation><bboxes><bbox><label>x</label><xmin>0</xmin><ymin>10</ymin><xmax>256</xmax><ymax>128</ymax>"
        "</bbox><bbox><label>x</label><xmin>8</xmin><ymin>8</ymin><xmax>100</xmax><ymax>101</ymax></bbox></bboxes>"
        "</annotation>")
    # 224 / 256 scaling with int truncation: 10 -> 8 (8.75), 128 -> 112, 101 -> 88 (88.375)
    assert load_flickr_boxes(tmp_path / "a.xml") == [[0, 8, 224, 112], [7, 7, 87, 88]]
    (tmp_path / "b.xml").write_text("<r><o><bbox><id>1</id><a>32</a><b>64</b><c>96</c><d>128</d></bbox></o></r>")
    assert load_flickr_boxes(tmp_path / "b.xml") == [[28, 56, 84, 112]]
    (tmp_path / "c.xml").write_text("<r><o><bbox><id>1</id><a>3</a></bbox></o></r>")
    with pytest.raises(DatasetError, match="c.xml"):
        load_flickr_boxes(tmp_path / "c.xml")
    (tmp_path / "d.xml").write_text("<r><o>")
    with pytest.raises(DatasetError, match="malformed"):
        load_flickr_boxes(tmp_path / "d.xml")


def test_vggss_json_normalised_boxes(tmp_path):
    (tmp_path / "v.json").write_text(json.dumps([{"file": "abc_000010", "class": "dog",
                                                  "bbox": [[0.1, 0.2, 0.5, 1.2], [0, 0, 0.25, 0.25]]}]))
    assert load_vggss_boxes(tmp_path / "v.json") == {"abc_000010": [[22, 44, 112, 224], [0, 0, 56, 56]]}
    (tmp_path / "w.json").write_text(json.dumps([{"name": "x"}]))
    with pytest.raises(DatasetError, match="not a VGG-SS"):
        load_vggss_boxes(tmp_path / "w.json")


def test_train_and_eval_items(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path)
    ds = train_set(cfg)
    assert len(ds) == 32
    item = ds[(0, 123)]
    assert item["image"].shape == (3, 64, 64) and item["spec"].shape == (1, 257, 32)
    assert ds[(0, 123)]["image"].equal(item["image"])  # the seed fixes the crop and flip
    flips = {ds[(0, s)]["image"].sum().item() for s in range(8)}
    assert len(flips) > 1
    ev = eval_set(cfg, "demo_test")
    it = ev[0]
    assert it["gt_map"].shape == (224, 224) and set(np.unique(it["gt_map"].numpy())) <= {0.0, 0.5, 1.0}
    ev2 = eval_set(cfg, "demo_test_vggss")
    assert set(np.unique(ev2[0]["gt_map"].numpy())) == {0.0, 1.0}
    with pytest.raises(KeyError, match="not defined"):
        eval_set(cfg, "nope")


def test_missing_root_and_missing_files(tiny_root, tmp_path):
    with pytest.raises(DatasetError, match="data root.*does_not_exist"):
        train_set(tiny_cfg(tmp_path / "does_not_exist", tmp_path))
    root = tmp_path / "copy"
    shutil.copytree(tiny_root, root)
    for vid in ("train00003", "train00007"):
        (root / "train" / "audio" / f"{vid}.wav").unlink()
    with pytest.raises(DatasetError, match=r"2 of 32 listed ids.*train00003\.wav"):
        train_set(tiny_cfg(root, tmp_path))
    assert len(train_set(tiny_cfg(root, tmp_path, "data.skip_missing=true"))) == 30


def test_corrupt_file_is_reported_not_replaced(tiny_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_root, root)
    (root / "train" / "frames" / "train00001.jpg").write_bytes(b"\xff\xd8 broken")
    ds = train_set(tiny_cfg(root, tmp_path))
    bad = ds[(1, 0)]
    assert isinstance(bad, BadSample) and bad.key == "train00001" and "train00001.jpg" in bad.error


def test_npy_cache_gives_identical_items(tiny_root, tmp_path):
    plain = train_set(tiny_cfg(tiny_root, tmp_path))
    cached = train_set(tiny_cfg(tiny_root, tmp_path, f"data.cache_dir={tmp_path}/cache"))
    for _ in range(2):  # first fills the cache, second reads it
        a, b = plain[(3, 9)], cached[(3, 9)]
        assert a["image"].equal(b["image"]) and a["spec"].equal(b["spec"])


def test_val_split_excludes_test_and_training_ids(tmp_path):
    from projects.ezvsl.val_split import make_val_split

    root = tmp_path
    for sub in ("frames", "audio", "Annotations"):
        (root / "flickr_test" / sub).mkdir(parents=True)
    for i in range(10):
        (root / "flickr_test" / "frames" / f"{i}.jpg").write_bytes(b"x")
        (root / "flickr_test" / "audio" / f"{i}.wav").write_bytes(b"x")
        (root / "flickr_test" / "Annotations" / f"{i}.xml").write_text("<a/>")
    (root / "flickr_test" / "audio" / "9.wav").unlink()  # incomplete pair
    (root / "metadata").mkdir()
    (root / "metadata" / "flickr_test.csv").write_text("0,1\n1,0\n")
    (root / "metadata" / "flickr_10k.txt").write_text("2\n")
    out = make_val_split(root, n=100)
    assert out.read_text().split() == ["3", "4", "5", "6", "7", "8"]
    assert len(make_val_split(root, n=2).read_text().split()) == 2
