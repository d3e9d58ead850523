import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.data.index import DatasetError
from shared.data.robust import BadSample
from projects.oneavm.data import (audio_id_of, eval_set, load_annotations, mask_gt_map, norm_boxes_to_pixels,
                                  read_pairs, separation_set, train_set)
from tests.oneavm.conftest import tiny_cfg
from tests.conftest import skip_unless_installed

pytestmark = pytest.mark.timeout(60)


def test_tuxpaint_layout_and_loaders(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path)
    ds = train_set(cfg)
    assert len(ds) == 8 and len(ds.classes) == 8
    item = ds[(0, 123)]
    assert item["image"].shape == (3, 64, 64) and item["wave"].shape == (4095,)
    assert ds.classes[item["label"]] == ds.rows[0][1]
    a, b = ds[(0, 5)]["image"], ds[(0, 5)]["image"]
    assert torch.equal(a, b)  # augmentation is a function of the sample's seed
    boxes = eval_set(cfg, "demo_boxes")
    it = boxes[0]
    assert it["gt_map"].shape == (224, 224) and 0 < it["gt_map"].mean() < 0.5
    masks = eval_set(cfg, "demo_masks")
    m = masks[0]["gt_map"]
    assert set(m.unique().tolist()) <= {0.0, 1.0} and m.sum() > 0
    assert (m * (1 - it["gt_map"])).sum() < 0.05 * m.sum()  # the mask lies inside its box (up to rounding at the edge)
    duet = eval_set(cfg, "demo_duet")
    assert duet.audio_ids[0] == duet.ids[0].rsplit("_", 1)[0] and duet[0]["wave"].shape == (4095,)
    pairs = separation_set(cfg, "demo_separation")
    p = pairs[0]
    assert p["image"].shape == (2, 3, 64, 64) and p["wave"].shape == (2, 4095)


def test_tuxpaint_distractors_and_settings(tmp_path):
    skip_unless_installed("tuxpaint")
    from shared.data.tuxpaint import DEFAULT_CLASSES, DISTRACTOR_CATEGORIES, STAMPS, make_tuxpaint_av, silent_pictures

    pics = silent_pictures(6, seed=0)
    assert len({p.png for p in pics}) == 6
    for p in pics:  # silent: no recording of its own, from a category of things that make no sound
        assert not p.png.with_suffix(".ogg").exists()
        assert p.png.relative_to(STAMPS).parts[0] in DISTRACTOR_CATEGORIES
    assert [p.png for p in silent_pictures(6, seed=0)] == [p.png for p in pics]

    def classes_in(root):
        return json.loads((root / "metadata" / "demo_classes.json").read_text())

    kw = dict(n_train=4, n_test=2, n_duet=1, n_pairs=1, size=48, duration=0.3, seed=0)
    root = make_tuxpaint_av(tmp_path / "a", n_distractors=5, **kw)
    made = classes_in(root)
    assert set(made["classes"]) == set(DEFAULT_CLASSES) and len(made["distractor_pictures"]) == 5
    assert not any(Path(p).with_suffix(".ogg").exists() for p in made["distractor_pictures"])
    stamp = (root / "train" / "frames" / "train_00000.jpg").stat().st_mtime_ns
    make_tuxpaint_av(root, n_distractors=5, **kw)  # same settings: kept
    assert (root / "train" / "frames" / "train_00000.jpg").stat().st_mtime_ns == stamp
    make_tuxpaint_av(root, distractors="sounding", **kw)  # other settings: made again
    assert classes_in(root)["settings"]["distractors"] == "sounding" and classes_in(root)["distractor_pictures"] == []
    with pytest.raises(ValueError, match="distractors"):
        make_tuxpaint_av(tmp_path / "b", distractors="loud", **kw)


def test_cell_placement_puts_one_object_in_each_cell():
    skip_unless_installed("tuxpaint")
    from shared.data.demo_av import split_cells
    from shared.data.tuxpaint import compose, load_stamps

    stamps = load_stamps()[:3]
    rng = np.random.default_rng(0)
    for n in (2, 3):
        for _ in range(10):
            _, boxes, masks = compose(stamps[:n], 96, rng, placement="cells")
            in_quarter = 0
            for x0, y0, x1, y1 in boxes:  # inside a half (or a quarter) of the frame: never across both midlines
                assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
                across_x, across_y = x0 < 48 < x1, y0 < 48 < y1
                assert not (across_x and across_y), (n, boxes)
                in_quarter += not across_x and not across_y
            assert n == 2 or in_quarter >= 2  # a half and two quarters
            for i in range(n):  # objects never overlap
                for j in range(i + 1, n):
                    a, b = boxes[i], boxes[j]
                    assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])
                    assert (masks[i] & masks[j]).sum() == 0
    with pytest.raises(ValueError, match="placement"):
        compose(stamps[:2], 96, rng, placement="grid")
    with pytest.raises(ValueError, match="2 or 3"):
        split_cells(rng, 4)


def test_duet_boxes_are_xywh():
    # a box at x=0.1, y=0.2 of width 0.3 and height 0.4: corners (0.1, 0.2) - (0.4, 0.6)
    assert norm_boxes_to_pixels([[0.1, 0.2, 0.3, 0.4]], "xywh", 100) == [[10, 20, 40, 60]]
    # AVGN's reading of the same numbers as corners (the latent bug, kept as an option)
    assert norm_boxes_to_pixels([[0.1, 0.2, 0.3, 0.4]], "xyxy", 100) == [[10, 20, 30, 40]]
    assert norm_boxes_to_pixels([[0.8, 0.8, 0.5, 0.5]], "xywh", 10) == [[8, 8, 10, 10]]  # clipped to the image
    with pytest.raises(DatasetError):
        norm_boxes_to_pixels([[0.1, 0.2, 0.3]], "xywh")


def test_music_duet_json_union(tmp_path):
    path = tmp_path / "duet.json"
    path.write_text(json.dumps([{"file": "v_00000", "class_src1": "cello", "bbox_src1": [0.0, 0.0, 0.5, 0.5],
                                 "class_src2": "guitar", "bbox_src2": [0.5, 0.5, 0.25, 0.25]}]))
    ann = load_annotations("music_duet", path, "xywh")
    assert ann["v_00000"]["boxes"] == [[0, 0, 112, 112], [112, 112, 168, 168]]
    assert ann["v_00000"]["classes"] == ["cello", "guitar"]
    assert audio_id_of("v_00000", "strip_frame_index") == "v"
    with pytest.raises(DatasetError):
        audio_id_of("v", "strip_frame_index")
    path.write_text(json.dumps([{"file": "x"}]))
    with pytest.raises(DatasetError, match="not a music_duet"):
        load_annotations("music_duet", path, "xywh")


def test_segmentation_mask_resized_nearest(tmp_path):
    m = np.zeros((4, 4), np.uint8)
    m[:2, :2] = 1
    with open(tmp_path / "a.pkl", "wb") as f:
        pickle.dump(m, f)
    g = mask_gt_map(tmp_path / "a.pkl", 8)
    assert g[:4, :4].all() and g.sum() == 16
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError):
        mask_gt_map(tmp_path / "bad.pkl")


def test_missing_boxes_and_bad_pairs_are_errors(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path)
    ann = json.loads((tiny_root / "metadata" / "demo_test.json").read_text())
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(ann[1:]))
    cfg.eval.sets.demo_boxes.annotation_path = str(cut)
    with pytest.raises(DatasetError, match="1 of 6 ids have no vggss annotation"):
        eval_set(cfg, "demo_boxes")
    cfg.data.skip_missing = True
    assert len(eval_set(cfg, "demo_boxes")) == 5
    bad = tmp_path / "pairs.csv"
    bad.write_text("source_1,source_2,class_1,class_2,sep_type\ntest_00000,test_00000,cello,cello,Hard\n")
    with pytest.raises(DatasetError, match="mix a clip with itself"):
        read_pairs(bad, {"test_00000"})
    bad.write_text("source_1,source_2,class_1,class_2,sep_type\ntest_00000,nope,cello,x,Hard\n")
    with pytest.raises(DatasetError, match="not in the set's id list"):
        read_pairs(bad, {"test_00000"})


def test_corrupt_media_is_a_bad_sample(tiny_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_root, root)
    (root / "train" / "audio" / "train_00002.wav").write_bytes(b"RIFF0000garbage")
    ds = train_set(tiny_cfg(root, tmp_path))
    out = ds[(2, 0)]
    assert isinstance(out, BadSample) and "train_00002" in out.error
    (root / "train" / "frames" / "train_00003.jpg").unlink()
    with pytest.raises(DatasetError, match="1 of 8 ids have no frame or audio"):
        train_set(tiny_cfg(root, tmp_path))


def test_segmentation_mask_ciou_hand_value(tmp_path):
    from shared.metrics.localization import ciou

    m = np.zeros((8, 8), np.uint8)
    m[:, :2] = 1  # the object: the two left columns (16 px)
    with open(tmp_path / "m.pkl", "wb") as f:
        pickle.dump(m, f)
    gt = mask_gt_map(tmp_path / "m.pkl", 8)
    pred = np.tile(np.arange(8, 0, -1, dtype=float), (8, 1))  # brightest on the left: top half = 4 left columns
    # P = 4 left columns (32 px): P*G = 16, |G| = 16, P outside G = 16 -> 16 / 32
    assert ciou(pred, gt) == pytest.approx(0.5)
