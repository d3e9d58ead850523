"""shared.clip: CoOp dataset layouts and their errors, the generic image folder, CLIP loading from a
local file, the text tower from embeddings, zero-shot classification."""
import json

import numpy as np
import pytest
import torch

from shared.clip import datasets as D
from shared.clip.models import encode_text_embeddings, load_clip
from shared.clip.templates import template_for
from shared.clip.zeroshot import text_classifier, zero_shot_logits
from shared.clip.synthetic import CLASSES, write_synthetic_coop


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("clipdata")
    write_synthetic_coop(r, n_train=3, n_val=1, n_test=2)
    return r


def test_split_json_dataset(root):
    ds = D.load_dataset("Synth", root, dataset_dir="synth", image_dir="images", split_file="split_zhou_Synth.json")
    assert ds.classnames == [c.replace("_", " ") for c in CLASSES]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 10)
    assert ds.train[0].impath.startswith(str(root / "synth" / "images")) and ds.template == "a photo of a {}."
    item = D.ImageListDataset(ds.test, lambda im: torch.zeros(1), labels=[4] * 10)[(3, 123)]
    assert item["label"] == 4 and item["true_label"] == ds.test[3].label and item["index"] == 3


def test_coop_dataset_errors_name_the_path(root, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "dtd")):
        D.load_dataset("dtd", tmp_path)
    (tmp_path / "dtd" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="split_zhou_DescribableTextures.json"):
        D.load_dataset("DescribableTextures", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"split_zhou_.*CoOp's DATASETS.md.* projects/patch_ranking/README.md#data"):
        D.load_dataset("dtd", tmp_path, readme="projects/patch_ranking/README.md")   # the caller's own README
    (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").write_text(json.dumps({"train": [["a.jpg", 0]]}))
    with pytest.raises(ValueError, match="relpath, label, classname"):
        D.load_dataset("ssdtd", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        D.load_dataset("NotADataset", tmp_path)


def test_class_count_is_checked(root, tmp_path):
    split = json.loads((root / "synth" / "split_zhou_Synth.json").read_text())
    (tmp_path / "eurosat").mkdir()
    (tmp_path / "eurosat" / "2750").symlink_to(root / "synth" / "images")
    (tmp_path / "eurosat" / "split_zhou_EuroSAT.json").write_text(json.dumps(split))
    with pytest.raises(ValueError, match="EuroSAT has 10"):
        D.load_dataset("eurosat", tmp_path)


def test_fgvc_aircraft_layout(tmp_path):
    d = tmp_path / "fgvc_aircraft"
    (d / "images").mkdir(parents=True)
    variants = [f"7{i}7-{i}00" for i in range(100)]
    (d / "variants.txt").write_text("\n".join(variants) + "\n")
    for s in ("train", "val", "test"):
        (d / f"images_variant_{s}.txt").write_text("".join(f"{1000 + i} {v}\n" for i, v in enumerate(variants)))
    ds = D.load_dataset("fgvc_aircraft", tmp_path)
    assert ds.num_classes == 100 and ds.train[5].label == 5 and ds.train[5].impath.endswith("images/1005.jpg")
    assert ds.template == template_for("FGVCAircraft")


def test_generic_image_folder(root, tmp_path):
    for split in ("train", "test"):
        for c in CLASSES[:2]:
            (tmp_path / "f" / split / c).mkdir(parents=True)
            for src in sorted((root / "synth" / "images" / c).iterdir())[:2]:
                (tmp_path / "f" / split / c / src.name).symlink_to(src)
    ds = D.load_dataset("ImageFolder", tmp_path, dataset_dir="f")
    assert ds.classnames == ["green circle", "red square"] and len(ds.train) == 4 and ds.val == ds.test


def test_load_local_weights_and_text_from_embeddings(tmp_path):
    torch.manual_seed(0)
    a = load_clip("tiny-clip-vit", None)
    f = tmp_path / "w.pt"
    torch.save(a.model.state_dict(), f)
    b = load_clip("tiny-clip-vit", str(f))
    assert b.source.startswith(str(f)) and b.image_size == 32
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    tok = b.tokenizer(["a photo of a dog.", "x"])
    with torch.no_grad():
        assert torch.allclose(encode_text_embeddings(b.model, b.model.token_embedding(tok), tok),
                              b.model.encode_text(tok), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_clip("RN50", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        load_clip("RN51", None)


def test_zero_shot_classifier():
    torch.manual_seed(0)
    b = load_clip("tiny-clip-vit", None)
    clf = text_classifier(b.model, b.tokenizer, ["cat", "dog_house"], "a photo of a {}.")
    assert clf.shape == (2, 32) and torch.allclose(clf.norm(dim=-1), torch.ones(2))
    with torch.no_grad():
        ref = torch.nn.functional.normalize(b.model.encode_text(b.tokenizer(["a photo of a dog house."])), dim=-1)
    assert torch.allclose(clf[1], ref[0], atol=1e-6)
    ens = text_classifier(b.model, b.tokenizer, ["cat"], ["a {}.", "a photo of a {}."])
    assert torch.allclose(ens.norm(dim=-1), torch.ones(1))
    logits = zero_shot_logits(clf[[1, 0]], clf, 100.0)
    assert logits.argmax(1).tolist() == [1, 0] and np.isclose(float(logits[0, 1]), 100.0, atol=1e-3)


def test_openai_weights_get_quick_gelu(monkeypatch, tmp_path):
    """open_clip 3.x builds nn.GELU for the plain RN50/ViT-B-16 configs even with pretrained='openai';
    load_clip forces QuickGELU whenever OpenAI weights are loaded (tag or local state dict)."""
    import open_clip

    calls = []
    real = open_clip.create_model

    def spy(name, pretrained=None, **kw):
        calls.append((name, pretrained, kw.get("force_quick_gelu")))
        return real("tiny-clip-vit", None)  # no download: the real architecture does not matter here

    monkeypatch.setattr(open_clip, "create_model", spy)
    load_clip("RN50", "openai")
    load_clip("ViT-B/16", "openai")
    weights = tmp_path / "rn50_openai_state_dict.pt"
    torch.save({"x": torch.zeros(1)}, weights)
    load_clip("RN50", str(weights))
    load_clip("RN50", str(weights), quick_gelu=False)
    load_clip("ViT-B-16", "laion2b_s34b_b88k")
    assert calls == [("RN50", "openai", True), ("ViT-B-16", "openai", True), ("RN50", str(weights), True),
                     ("RN50", str(weights), False), ("ViT-B-16", "laion2b_s34b_b88k", False)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_jit_archives_are_told_from_state_dicts(tmp_path):
    from shared.clip.models import _is_jit_archive

    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "jit.pt")  # as OpenAI's RN50.pt
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "sd.pt")
    assert _is_jit_archive(tmp_path / "jit.pt") and not _is_jit_archive(tmp_path / "sd.pt")


@pytest.mark.slow
def test_demo_clip_cache_trains_once_per_recipe(tmp_path):
    """shared.clip.demo_clip: one cache file with its recipe; reused when the recipe matches,
    retrained when it changes; the weights load as the demo architecture (the demos' learning tests
    check what it learns)."""
    from shared.clip import demo_clip
    from shared.data import fashion_mnist

    if fashion_mnist.find_root() is None:
        pytest.skip(fashion_mnist.HOW_TO_GET)
    threads = torch.get_num_threads()
    path = tmp_path / "cache" / "demo.pt"
    tiny = {"steps": 6, "batch_size": 32, "images": 1000, "warmup": 2}
    try:
        assert demo_clip.ensure_demo_clip(path, verbose=False, **tiny) == path
        stamp = path.stat().st_mtime_ns
        assert demo_clip.cached_recipe(path) == {**demo_clip.RECIPE, **tiny}
        demo_clip.ensure_demo_clip(path, verbose=False, **tiny)
        assert path.stat().st_mtime_ns == stamp                      # same recipe: the cache is reused
        demo_clip.ensure_demo_clip(path, verbose=False, **{**tiny, "steps": 7})
        assert path.stat().st_mtime_ns != stamp and demo_clip.cached_recipe(path)["steps"] == 7
        with pytest.raises(TypeError, match="unknown recipe keys"):
            demo_clip.ensure_demo_clip(path, stepz=3)
    finally:
        torch.set_num_threads(threads)
    bundle = load_clip(demo_clip.ARCH, str(path))
    x, y = fashion_mnist.load("test")
    assert 0 <= demo_clip.zero_shot_accuracy(bundle, x[:50], y[:50]) <= 100
    random_init = load_clip(demo_clip.ARCH, None).model.state_dict()
    assert any(not torch.equal(v, random_init[k]) for k, v in bundle.model.state_dict().items())


def test_demo_clip_default_path_follows_env(monkeypatch, tmp_path):
    from shared.clip import demo_clip

    monkeypatch.setenv(demo_clip.CACHE_ENV, str(tmp_path / "x.pt"))
    assert demo_clip.default_path() == tmp_path / "x.pt"
    monkeypatch.delenv(demo_clip.CACHE_ENV)
    assert demo_clip.default_path() == demo_clip.REPO_ROOT / "data" / "demo_clip" / "demo-clip-fmnist.pt"


def test_demo_clip_variants_have_their_own_cache_and_leave_the_default_alone(monkeypatch, tmp_path):
    """A named variant (the PTNL demo's "looks") is RECIPE plus its keys, in its own file beside the
    default cache; the default recipe and path, shared with the Patch Ranking demo, stay as they were."""
    from shared.clip import demo_clip

    monkeypatch.delenv(demo_clip.CACHE_ENV, raising=False)
    assert demo_clip.RECIPE == {"steps": 600, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.1, "warmup": 60,
                                "seed": 0, "images": 50000}
    assert demo_clip.variant_recipe() == demo_clip.RECIPE
    assert demo_clip.variant_recipe("looks") == {**demo_clip.RECIPE, "looks": list(demo_clip.LOOKS)}
    assert demo_clip.variant_recipe("looks", steps=5)["steps"] == 5
    assert demo_clip.default_path("looks") == demo_clip.REPO_ROOT / "data" / "demo_clip" / "demo-clip-fmnist-looks.pt"
    monkeypatch.setenv(demo_clip.CACHE_ENV, str(tmp_path / "x.pt"))
    assert demo_clip.default_path("looks") == tmp_path / "x-looks.pt"
    with pytest.raises(ValueError, match="unknown demo CLIP variant"):
        demo_clip.default_path("lookz")
    with pytest.raises(TypeError, match="unknown recipe keys"):
        demo_clip.variant_recipe(None, looks=["dark"])          # the default recipe has no looks
    with pytest.raises(ValueError, match="unknown looks"):
        demo_clip.pretrain(tmp_path / "y.pt", steps=1, looks=["plain", "shiny"])


def test_demo_clip_looks_change_the_images_and_name_themselves_in_the_captions():
    from shared.clip import demo_clip

    x = np.zeros((1, 28, 28), np.uint8)
    x[0, 0, :2] = [100, 255]
    x[0, 1, :2] = [20, 1]
    assert np.array_equal(demo_clip.apply_look(x, "plain"), x)
    assert demo_clip.apply_look(x, "dark")[0, 0, :2].tolist() == [35, 89]           # x 0.35, rounded
    assert np.array_equal(demo_clip.apply_look(x, "inverted"), 255 - x)
    small = demo_clip.apply_look(x, "small")                     # 2x2 means, centred on a black 28 x 28
    assert small[0, 7, 7] == round((100 + 255 + 20 + 1) / 4) and small.sum() == small[0, 7, 7]
    rot = demo_clip.apply_look(x, "rotated")                      # 90 degrees anticlockwise
    assert rot[0, 27, 0] == 100 and rot[0, 26, 0] == 255 and rot[0, 27, 1] == 20
    with pytest.raises(ValueError, match="unknown look"):
        demo_clip.apply_look(x, "shiny")
    assert demo_clip.look_captions("plain") == demo_clip.captions()
    for look in ("dark", "inverted", "small", "rotated"):
        caps = demo_clip.look_captions(look)
        assert len(caps) == len(demo_clip.CLASSNAMES)
        assert all(look in c and name.replace("_", " ") in c for name, row in zip(demo_clip.CLASSNAMES, caps)
                   for c in row)
    assert demo_clip.look_captions("inverted")[0][0] == "an inverted photo of a t-shirt."


@pytest.mark.slow
def test_demo_clip_looks_variant_trains_on_class_and_look_positives(monkeypatch, tmp_path):
    """The "looks" pre-training: its own cache with its recipe; the contrastive targets are (class, look)
    pairs, so a caption of another look of the same class is a negative."""
    from shared.clip import demo_clip
    from shared.data import fashion_mnist

    if fashion_mnist.find_root() is None:
        pytest.skip(fashion_mnist.HOW_TO_GET)
    seen = []
    loss = demo_clip.class_positive_clip_loss
    monkeypatch.setattr(demo_clip, "class_positive_clip_loss", lambda i, t, labels, s: seen.append(labels) or
                        loss(i, t, labels, s))
    threads = torch.get_num_threads()
    tiny = {"steps": 4, "batch_size": 64, "images": 500, "warmup": 2}
    try:
        path = demo_clip.ensure_demo_clip(tmp_path / "c.pt", verbose=False, variant="looks", **tiny)
    finally:
        torch.set_num_threads(threads)
    assert demo_clip.cached_recipe(path) == demo_clip.variant_recipe("looks", **tiny)
    labels = torch.cat(seen)
    n_looks = len(demo_clip.LOOKS)
    assert len(seen) == 4 and labels.max() < 10 * n_looks and len(torch.unique(labels % n_looks)) == n_looks
    _, y = demo_clip.pretrain_pairs()
    assert set((labels // n_looks).tolist()) <= set(y[:500].tolist())


def test_demo_fashion_mnist_in_coop_layout(tmp_path):
    """shared.clip.demo_data: the demos' dataset is real Fashion-MNIST pixels in CoOp's layout, read by the
    CoOp loader; train/val come after the demo CLIP's pre-training images, test from the test split."""
    from PIL import Image

    from shared.clip.demo_clip import CLASSNAMES, PRETRAIN_RANGE
    from shared.clip.demo_data import DATASET_DIR, IMAGE_DIR, SPLIT_FILE, write_fashion_mnist_coop
    from shared.data import fashion_mnist

    if fashion_mnist.find_root() is None:
        pytest.skip(fashion_mnist.HOW_TO_GET)
    ddir = write_fashion_mnist_coop(tmp_path, 3, 2, 1)
    assert ddir == tmp_path / DATASET_DIR
    ds = D.load_dataset("FashionMNIST", tmp_path, dataset_dir=DATASET_DIR, image_dir=IMAGE_DIR, split_file=SPLIT_FILE)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 20, 10)
    assert ds.classnames == [c.replace("_", " ") for c in CLASSNAMES]
    tr_x, tr_y = fashion_mnist.load("train")
    te_x, te_y = fashion_mnist.load("test")
    split = json.loads((ddir / SPLIT_FILE).read_text())
    ids = {s: [int(rel.rsplit("_", 1)[1][:-4]) for rel, _, _ in split[s]] for s in split}
    assert min(ids["train"] + ids["val"]) >= PRETRAIN_RANGE[1]
    for c in range(len(CLASSNAMES)):                 # per class: the first 3 images after the range, then 2 for val
        first = PRETRAIN_RANGE[1] + np.flatnonzero(tr_y[PRETRAIN_RANGE[1]:] == c)[:5]
        assert [i for i, (_, lab, _) in zip(ids["train"], split["train"]) if lab == c] == first[:3].tolist()
        assert [i for i, (_, lab, _) in zip(ids["val"], split["val"]) if lab == c] == first[3:].tolist()
        assert [i for i, (_, lab, _) in zip(ids["test"], split["test"]) if lab == c] == \
            np.flatnonzero(te_y == c)[:1].tolist()
    for (rel, lab, _), i in zip(split["val"], ids["val"]):
        assert tr_y[i] == lab
        assert np.array_equal(np.asarray(Image.open(ddir / IMAGE_DIR / rel)), tr_x[i])
    rel, lab, _ = split["test"][0]
    assert np.array_equal(np.asarray(Image.open(ddir / IMAGE_DIR / rel)), te_x[ids["test"][0]])
    stamp = (ddir / SPLIT_FILE).stat().st_mtime_ns
    write_fashion_mnist_coop(tmp_path, 3, 2, 1)
    assert (ddir / SPLIT_FILE).stat().st_mtime_ns == stamp            # same sizes: kept as it is
    write_fashion_mnist_coop(tmp_path, 4, 2, 1)
    assert len(json.loads((ddir / SPLIT_FILE).read_text())["train"]) == 40
    with pytest.raises(ValueError, match="only .* test images"):
        write_fashion_mnist_coop(tmp_path / "big", 1, 1, 5000)
