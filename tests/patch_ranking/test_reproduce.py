"""reproduce.py's tables: the demo rows from a hand-made results dict, the paper table from the configs'
paper: blocks (ours from a run folder), and the rule that a changed demo never writes the committed results."""
import json

import pytest

import shared.report

from shared.config import load_yaml
from projects.patch_ranking import reproduce as rp


def _ev(method, keep, top1, gflops, images=1000):
    return {"method": method, "keep_ratio": keep, "top1": top1, "gflops": gflops, "images": images}


def hand_made_results():
    """16 patches, 10 kept before block 1: the evaluated ratio nearest 10/16 is 0.6."""
    return {"dataset": "FashionMNIST", "arch": "demo-clip-fmnist", "stages": [[1, 10]], "num_patches": 16,
            "eval": [_ev("none", 1.0, 77.8, 0.0117444), _ev("golden", 0.8, 77.7, 0.0101),
                     _ev("golden", 0.6, 77.9, 0.009094), _ev("predictor", 0.8, 77.8, 0.0115),
                     _ev("predictor", 0.6, 77.3, 0.0103511), _ev("random", 0.6, 72.3, 0.009094),
                     _ev("evit", 0.6, 72.8, 0.00972), _ev("tome", 0.6, 76.8, 0.00972),
                     _ev("predictor+tokens", 0.6, 72.7, 0.01167), _ev("none+tokens", 1.0, 74.8, 0.01307)],
            "predictor": {"overlap_n": 6, "train_overlap": 75.6, "test_overlap": 72.1, "train_images": 2000}}


def test_demo_rows_from_hand_made_results():
    rows = rp.demo_rows(hand_made_results())
    got = {(r["method"], r["metric"]): r["ours"] for r in rows}
    k = {x: f"top-1 (%), keep {x} %" for x in (100, 80, 60)}
    g60 = g100 = "MFLOPs per image (image encoder + predictor), keep 60 % (unpruned: 100 %)"
    tr, te = "top-6 overlap with the golden tail, train (%)", "top-6 overlap with the golden tail, test (%)"
    want = {("unpruned", k[100]): 77.8, ("unpruned", g100): 11.744,  # unpruned rows: GFLOPs at 100 %
            ("unpruned + learned tokens", k[100]): 74.8, ("unpruned + learned tokens", g100): 13.07,
            ("golden ranking (oracle)", k[80]): 77.7, ("golden ranking (oracle)", k[60]): 77.9,
            ("golden ranking (oracle)", g60): 9.094,
            ("predictor (ours)", k[80]): 77.8, ("predictor (ours)", k[60]): 77.3, ("predictor (ours)", g60): 10.351,
            ("predictor + learned tokens (ours)", k[60]): 72.7, ("predictor + learned tokens (ours)", g60): 11.67,
            ("random", k[60]): 72.3, ("random", g60): 9.094, ("EViT", k[60]): 72.8, ("EViT", g60): 9.72,
            ("ToMe", k[60]): 76.8, ("ToMe", g60): 9.72,
            ("predictor (ours)", tr): 75.6, ("predictor (ours)", te): 72.1,
            ("random ranking (chance)", tr): 37.5, ("random ranking (chance)", te): 37.5}  # 100 * 6 / 16
    assert got == pytest.approx(want) and len(rows) == len(want)
    # the pivot's columns: top-1 at 100 / 80 / 60 %, then the FLOPs, then the overlaps
    assert list(dict.fromkeys(r["metric"] for r in rows)) == [k[100], k[80], k[60], g60, tr, te]
    assert rp.reference_keep(hand_made_results()) == 0.6


def _paper_entries(path) -> int:
    return len(load_yaml(path.read_text()).get("paper") or {})


def test_paper_table_from_configs_and_a_run_folder(tmp_path):
    expected = sum(_paper_entries(p) for p in rp.CONFIGS.glob("*.yaml"))
    rows = rp.paper_rows([f"run.root={tmp_path}"])
    assert len(rows) == expected == 40  # 8 datasets x (ours, EViT, ToMe, ImageNet predictor, GFLOPs)
    assert all(r["ours"] is None for r in rows) and all(r["paper"] is not None for r in rows)
    assert rows[0]["setting"] == "Caltech101 (caltech101)" and rows[-1]["setting"] == "ImageNet (imagenet)"

    res = {"stages": [[3, 118]], "num_patches": 196,  # 118/196 = 0.602: the 0.6 rows are the paper's budget
           "eval": [_ev("none", 1.0, 45.0, 33.7), _ev("predictor+tokens", 0.8, 45.5, 28.0),
                    _ev("predictor+tokens", 0.6, 44.12, 23.7712), _ev("evit", 0.6, 43.0, 23.8),
                    _ev("tome", 0.6, 41.0, 23.8)]}
    for name in ("dtd", "imagenet"):
        (tmp_path / "patch_ranking" / name).mkdir(parents=True)
        (tmp_path / "patch_ranking" / name / "results.json").write_text(json.dumps(res))
    rows = rp.paper_rows([f"run.root={tmp_path}"])
    got = {(r["setting"], r["method"], r["metric"]): r["ours"] for r in rows if r["ours"] is not None}
    want = {}
    for s in ("DescribableTextures (dtd)", "ImageNet (imagenet)"):
        want.update({(s, rp.OURS, rp.TOP1): 44.12, (s, "EViT", rp.TOP1): 43.0, (s, "ToMe", rp.TOP1): 41.0,
                     (s, rp.OURS, rp.GFLOPS): 23.77})
    # only the ImageNet run used an ImageNet-trained predictor (dtd would need predictor.checkpoint)
    want[("ImageNet (imagenet)", rp.PAPER_METHODS["ours_imagenet_predictor"], rp.TOP1)] = 44.12
    assert got == want


@pytest.fixture
def fake_demo(tmp_path, monkeypatch):
    """The demo with the data, CLIP and pipeline replaced, run in tmp_path; records write_results calls."""
    import projects.patch_ranking.train as train

    calls = []
    monkeypatch.chdir(tmp_path)  # the demo's run.root (runs/) resolves here
    monkeypatch.setattr(rp, "FIGURES", tmp_path / "committed_figures")
    monkeypatch.setattr(rp, "prepare_demo", lambda cfg: {"prepare_s": 0.0})
    monkeypatch.setattr(train, "main", lambda cfg: hand_made_results())
    monkeypatch.setattr(shared.report, "write_results", lambda project, table, rows, **kw: calls.append((project, table, kw)))
    return tmp_path, calls


def test_overrides_never_write_the_committed_results(fake_demo):
    tmp, calls = fake_demo
    rp.main([f"run.root={tmp / 'elsewhere'}"])
    rp.main(["--paper-table", f"run.root={tmp / 'elsewhere'}"])
    assert calls == [] and not (tmp / "committed_figures").exists()
    run = tmp / "elsewhere" / "patch_ranking" / "demo"
    assert (run / "figures" / "demo_accuracy_vs_keep.png").stat().st_size > 1000
    assert len(json.loads((run / "demo_results_table.json").read_text())["rows"]) == 22
    assert len(json.loads((run.parent / "paper_results_table.json").read_text())["rows"]) == 40

    rp.main([])  # the demo as configured: the committed tables and figure
    fig = tmp / "committed_figures" / "demo_accuracy_vs_keep.png"
    assert [(p, t) for p, t, _ in calls] == [("patch_ranking", "demo"), ("patch_ranking", "paper")]
    assert calls[0][2]["figures"][0][0] == str(fig) and fig.is_file()
    rp.main(["--paper-table"])
    assert [t for _, t, _ in calls] == ["demo", "paper", "paper"]
