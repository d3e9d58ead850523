"""The two-object tuxpaint set (shared.data.tuxpaint.make_tuxpaint_two_objects) read by oneavm's loaders."""
import json

import numpy as np
import pytest

from projects.oneavm.data import eval_set, train_set
from tests.conftest import skip_unless_installed
from tests.oneavm.conftest import tiny_cfg

pytestmark = pytest.mark.timeout(60)

KW = dict(n_train=6, n_val=3, n_test=3, size=64, duration=0.3, seed=0, categories=("hobbies",),
          split_fractions=(0.4, 0.3, 0.3))


def _sets(root, tmp_path):
    sets = {s: {"task": "localization", "dir": s, "list": f"two_{s}.csv", "annotations": "vggss",
                "annotation_path": f"metadata/two_{s}.json", "box_format": "xyxy"} for s in ("val", "test")}
    return tiny_cfg(root, tmp_path, "data.train.list=two_train.txt", f"eval.sets={json.dumps(sets)}")


def test_two_object_set(tmp_path):
    skip_unless_installed("tuxpaint")
    from shared.data.tuxpaint import make_tuxpaint_two_objects

    root = make_tuxpaint_two_objects(tmp_path / "two", **KW)
    made = json.loads((root / "metadata" / "two_classes.json").read_text())
    objs = {s: set(made["objects"][s]) for s in ("train", "val", "test")}
    assert all(len(v) >= 2 for v in objs.values())
    assert not (objs["train"] & objs["val"]) and not (objs["train"] & objs["test"]) and not (objs["val"] & objs["test"])
    files = {s: {p for v in made["objects"][s].values() for p in v} for s in objs}
    assert not (files["train"] & files["test"])  # no picture or recording shared between train and test
    cfg = _sets(root, tmp_path)
    ds = train_set(cfg)
    assert len(ds) == 6 and {c for _, c in ds.rows} <= objs["train"]
    for split in ("val", "test"):
        recs = json.loads((root / "metadata" / f"two_{split}.json").read_text())
        assert len(recs) == 3
        for r in recs:
            assert r["class"] != r["class_other"] and {r["class"], r["class_other"]} <= objs[split]
            a, b = np.array(r["bbox"][0]), np.array(r["bbox_other"])
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])  # boxes disjoint
        e = eval_set(cfg, f"{split}")
        g = e[0]["gt_map"]
        assert g.shape == (224, 224) and 0 < g.mean() < 0.5  # the heard object's box only
    # deterministic, and a settings stamp: same arguments keep the set, other arguments remake it
    frame = (root / "test" / "frames" / "test_00000.jpg").read_bytes()
    again = make_tuxpaint_two_objects(tmp_path / "two_again", **KW)
    assert (again / "test" / "frames" / "test_00000.jpg").read_bytes() == frame
    assert (again / "metadata" / "two_test.json").read_text() == (root / "metadata" / "two_test.json").read_text()
    mtime = (root / "metadata" / "two_classes.json").stat().st_mtime_ns
    make_tuxpaint_two_objects(root, **KW)
    assert (root / "metadata" / "two_classes.json").stat().st_mtime_ns == mtime
    make_tuxpaint_two_objects(root, **{**KW, "seed": 1})
    assert json.loads((root / "metadata" / "two_classes.json").read_text())["settings"]["seed"] == 1
