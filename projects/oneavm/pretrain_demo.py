"""The demo's stand-in for ImageNet pre-training of the image encoder.

OneAVM's ResNet-18 starts from ImageNet weights; none can be downloaded here, and from random weights
the demo's few hundred clips do not teach the image encoder what an object is (it solves the
contrastive task from background colour and layout instead). As the EZ-VSL demo does, we pretrain the
ResNet-18 as a classifier of the demo's object classes, on single-object pictures composed from the
same Tux Paint stamps (``shared.data.tuxpaint.make_object_pictures``), and save a torchvision-style
state dict that the demo config loads through ``model.image_weights`` (the ``fc.`` head is dropped).
Only pictures are used: no sounds, no test frames, no boxes.

    python -m projects.oneavm.pretrain_demo --root data/oneavm_demo_objects --out data/oneavm_demo_objects/resnet18.pth
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared.data.tuxpaint import make_object_pictures
from shared.stand_in_classifier import train_stand_in_classifier


def pretrain(root: str | Path, out: str | Path, image_size: int = 112, n_per_class: int = 60, epochs: int = 4,
             batch_size: int = 32, lr: float = 1e-3, seed: int = 0, n_distractors: int = 0) -> dict:
    """Train the classifier on ``<root>/objects`` (made if absent: the sounding classes and
    ``n_distractors`` silent pictures) and save it to ``out``; an existing ``out`` whose ``.json``
    report records the same settings is kept and its report returned."""
    out = Path(out)
    report = out.with_suffix(".json")
    settings = {"image_size": image_size, "n_per_class": n_per_class, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "seed": seed, "n_distractors": n_distractors}
    if out.is_file() and report.is_file():
        info = json.loads(report.read_text())
        if info.get("settings") == settings:
            return info
    objects = make_object_pictures(root, n_per_class=n_per_class, size=image_size, seed=seed,
                                   n_distractors=n_distractors)
    info = train_stand_in_classifier(objects, out, image_size=image_size, epochs=epochs, batch_size=batch_size,
                                     lr=lr, seed=seed)
    info["settings"] = settings
    report.write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder for the object pictures (objects/<class>/*.jpg)")
    p.add_argument("--out", required=True, help="the state dict to write")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--n-per-class", type=int, default=60)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--n-distractors", type=int, default=0, help="silent pictures added as classes (the demo's distractors)")
    a = p.parse_args(argv)
    info = pretrain(a.root, a.out, a.image_size, a.n_per_class, a.epochs, n_distractors=a.n_distractors)
    print(info)
    return info


if __name__ == "__main__":
    main()
