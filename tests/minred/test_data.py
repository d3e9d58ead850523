import gzip

import numpy as np
import pytest
from PIL import Image

from shared.config import load_config
from projects.minred import data as data_mod

pytestmark = pytest.mark.timeout(60)


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 24, 3), 120, np.uint8)).save(path)


def test_flickr_tsv_list_and_missing_files(tmp_path):
    root = tmp_path / "flickr"
    rels = ["images/a/b/c/abcd/1.jpg", "images/a/b/c/abce/2.jpg"]
    for r in rels:
        _img(root / r)
    lst = tmp_path / "flickr-2.tsv.gz"
    with gzip.open(lst, "wt") as f:
        f.write("".join(f"{i}\thttp://x/{i}.jpg\t{r}\n" for i, r in enumerate(rels)))
    cfg = load_config("projects/minred/configs/base.yaml", [f"data.root={root}", "data.dataset=flickr",
                                                            f"data.train_list={lst}", "data.img_size=16"])
    ds, labels = data_mod.train_set(cfg)
    item = ds[(1, 7)]
    assert len(ds) == 2 and labels is None and item["views"][0].shape == (3, 16, 16) and item["index"] == 1
    assert all((a == b).all() for a, b in zip(item["views"], ds[(1, 7)]["views"]))  # the seed fixes the views
    (root / rels[1]).unlink()
    with pytest.raises(FileNotFoundError, match="missing files"):
        data_mod.train_set(cfg)
    with gzip.open(lst, "wt") as f:
        f.write("0\tonly-two-columns\n")
    with pytest.raises(ValueError, match="flickr_id"):
        data_mod.train_set(cfg)


def test_kinetics_frames_layout(tmp_path):
    for v, n in (("vid_a", 5), ("vid_b", 3)):
        for i in range(1, n + 1):
            _img(tmp_path / "frames" / v / f"{i:03d}.jpeg")
    lst = tmp_path / "kinetics_filelist.txt"
    lst.write_text("vid_a 5\nvid_b 3\n")
    cfg = load_config("projects/minred/configs/base.yaml", [
        f"data.root={tmp_path / 'frames'}", "data.dataset=kinetics", f"data.train_list={lst}", "data.n_seq_samples=4",
        "data.seq_sampling=consecutive", "data.img_size=16"])
    ds, _ = data_mod.train_set(cfg)
    assert len(ds) == 8
    paths = [ds.frame_path(i, 0) for i in range(4)]
    assert [p[-8:] for p in paths] == ["001.jpeg", "002.jpeg", "003.jpeg", "004.jpeg"]
    assert ds[(5, 1)]["label"] == 1  # item 5 is a frame of the second video
    lst.write_text("vid_a five\n")
    with pytest.raises(ValueError, match="dir nframes"):
        data_mod.train_set(cfg)


def test_memmap_and_image_lists(tmp_path):
    mm = np.memmap(tmp_path / "list.memmap", dtype="S120", mode="w+", shape=(6,))
    mm[:] = [f"img{i}.jpg".encode() for i in range(6)]
    mm.flush()
    assert data_mod.read_memmap_list(tmp_path / "list.memmap", 6, "S120", subsample=4) == ["img0.jpg", "img4.jpg"]
    (tmp_path / "l.txt").write_text("a.jpg 3\nb.jpg 1\n")
    assert data_mod.read_image_list(tmp_path / "l.txt") == (["a.jpg", "b.jpg"], [3, 1])
    (tmp_path / "bad.txt").write_text("a.jpg 3\nb.jpg\n")
    with pytest.raises(ValueError, match="some lines"):
        data_mod.read_image_list(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="image list not found"):
        data_mod.read_image_list(tmp_path / "nope.txt")
