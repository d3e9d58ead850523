"""Write the held-out validation list used by ``eval.selection=val`` for the Flickr configs:
annotated Flickr-SoundNet pairs that are neither in the test list nor in any training list.

    python -m projects.ezvsl.val_split --root $DATA_ROOT [--n 500] [--seed 0]

It reads <root>/flickr_test/Annotations/*.xml (the 5k annotated release), keeps ids with a frame
and a wav under <root>/flickr_test/, drops <root>/metadata/flickr_test.csv and the training
lists, and writes <root>/metadata/flickr_val.txt.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from shared.data.index import DatasetError, read_id_list, require_dir


def make_val_split(root: str | Path, n: int = 500, seed: int = 0, test_dir: str = "flickr_test",
                   exclude_lists: tuple[str, ...] = ("flickr_test.csv", "flickr_10k.txt", "flickr_144k.txt")) -> Path:
    root = Path(root)
    pair_dir = require_dir(root / test_dir, "annotated Flickr-SoundNet folder")
    ann = require_dir(pair_dir / "Annotations", "Flickr-SoundNet annotation folder")
    excluded: set[str] = set()
    for name in exclude_lists:
        path = root / "metadata" / name
        if path.is_file():
            excluded |= set(read_id_list(path))
    ids = sorted(p.stem for p in ann.glob("*.xml") if p.stem not in excluded
                 and (pair_dir / "frames" / f"{p.stem}.jpg").is_file() and (pair_dir / "audio" / f"{p.stem}.wav").is_file())
    if not ids:
        raise DatasetError(f"no annotated pairs outside the test and training lists in {pair_dir}: extract the whole "
                           "annotated release there, or train with eval.selection=test (official) or last")
    random.Random(seed).shuffle(ids)
    out = root / "metadata" / "flickr_val.txt"
    out.write_text("".join(i + "\n" for i in sorted(ids[:n])))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(make_val_split(a.root, a.n, a.seed))
