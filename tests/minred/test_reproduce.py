"""reproduce.py's tables: the demo rows from a hand-made results dict, the paper table from the configs'
paper: blocks (ours from a run folder), and the rule that a changed demo never writes the committed results."""
import json

import pytest

import shared.report

from shared.config import load_yaml
from projects.minred import reproduce as rp


def _by_key(rows):
    return {(r["method"], r["metric"]): r["ours"] for r in rows}


def test_demo_rows_from_hand_made_results():
    res = {"minred": {"steps": 40, "train_time_s": 10.56, "classes_in_buffer": 9.9,
                      "fashion_mnist/knn_top1": 0.646, "fashion_mnist/linear_top1": 0.544},
           "sequential": {"steps": 40, "train_time_s": 16.04,
                          "fashion_mnist/knn_top1": 0.66, "fashion_mnist/linear_top1": 0.5},
           "fifo": {"steps": 40, "train_time_s": 8.0, "fashion_mnist/knn_top1": 0.626}}  # no probe: k-NN only
    base = {"raw_pixels": {"fashion_mnist/knn_top1": 0.758, "fashion_mnist/linear_top1": 0.836},
            "random_init": {"fashion_mnist/knn_top1": 0.524, "fashion_mnist/linear_top1": 0.488}}
    rows = rp.demo_rows(res, base, "resnet18")
    got = _by_key(rows)
    mr, seq, fifo = "MinRed buffer, correlated stream", rp.SETTING_NAMES["sequential"], "FIFO buffer, correlated stream"
    want = {("raw pixels (28x28, same k-NN / probe)", rp.KNN): 75.8,
            ("raw pixels (28x28, same k-NN / probe)", rp.LINEAR): 83.6,
            ("random init ResNet-18", rp.KNN): 52.4, ("random init ResNet-18", rp.LINEAR): 48.8,
            (mr, rp.KNN): 64.6, (mr, rp.LINEAR): 54.4, (mr, rp.CLASSES): 9.9, (mr, rp.TIME): 10.6,
            (seq, rp.KNN): 66.0, (seq, rp.LINEAR): 50.0, (seq, rp.TIME): 16.0,
            (fifo, rp.KNN): 62.6, (fifo, rp.TIME): 8.0}
    assert got.keys() == want.keys() and len(rows) == len(want)
    assert got == pytest.approx(want)
    assert all(r["paper"] is None for r in rows)
    # one binomial standard error of the mean k-NN (0.644) on 500 images: 100 * sqrt(.644 * .356 / 500) = 2.1
    assert "near 64 % on 500 test images is 2.1 points" in rp.demo_notes(res, 500)


def _paper_entries(path) -> int:
    """Numbers in a config's own paper: block (a list counts each entry)."""
    paper = load_yaml(path.read_text()).get("paper") or {}
    return sum(len(v) if isinstance(v, list) else 1 for v in paper.values())


def test_paper_table_from_configs_and_a_run_folder(tmp_path):
    expected = sum(_paper_entries(p) for p in rp.CONFIGS.glob("*.yaml"))
    rows = rp.paper_rows([f"run.root={tmp_path}"])
    assert len(rows) == expected == 60
    assert all(r["ours"] is None for r in rows) and all(r["paper"] is not None for r in rows)
    kin = [r for r in rows if r["setting"].endswith("(kinetics_r18_minred)")]
    assert {r["metric"]: r["paper"] for r in kin} == {"ImageNet linear top-1": 30.612, "iNat linear top-1": 9.612}

    (tmp_path / "minred" / "kinetics_r18_minred").mkdir(parents=True)
    (tmp_path / "minred" / "kinetics_r18_minred" / "results.json").write_text(
        json.dumps({"imnet/linear_top1": 0.31234, "inat/linear_top1": 0.095}))
    (tmp_path / "minred" / "continual_in_r18_minred").mkdir(parents=True)
    (tmp_path / "minred" / "continual_in_r18_minred" / "continual.json").write_text(json.dumps(
        {"mean_acc": [11.0, 11.5, 11.8, 12.0], "forgetting": {"D0": [1.0, 2.0, 3.0], "D1": [4.0, 5.0], "D2": [6.0]}}))
    rows = rp.paper_rows([f"run.root={tmp_path}"])
    filled = {(r["setting"], r["method"], r["metric"]): r["ours"] for r in rows if r["ours"] is not None}
    s, c = "Kinetics-400 frames, ResNet-18 (kinetics_r18_minred)", "continual ImageNet-21K, ResNet-18 (continual_in_r18_minred)"
    m = "MinRed buffer 64K, 4 updates per chunk, at {} % of the stream"
    assert filled == {
        (s, "MinRed buffer 64K, 5 updates per chunk", "ImageNet linear top-1"): 31.23,
        (s, "MinRed buffer 64K, 5 updates per chunk", "iNat linear top-1"): 9.5,
        (c, m.format(25), "IN-21K linear top-1"): 11.0, (c, m.format(50), "IN-21K linear top-1"): 11.5,
        (c, m.format(75), "IN-21K linear top-1"): 11.8, (c, m.format(100), "IN-21K linear top-1"): 12.0,
        # D0 is learned in the first quarter: forgotten after 50 / 75 / 100 %; D1 after 75 / 100 %; D2 after 100 %
        (c, m.format(50), "forgetting of D0 (points)"): 1.0, (c, m.format(75), "forgetting of D0 (points)"): 2.0,
        (c, m.format(100), "forgetting of D0 (points)"): 3.0, (c, m.format(75), "forgetting of D1 (points)"): 4.0,
        (c, m.format(100), "forgetting of D1 (points)"): 5.0, (c, m.format(100), "forgetting of D2 (points)"): 6.0}


@pytest.fixture
def fake_demo(tmp_path, monkeypatch):
    """The demo with training, probes and plotting replaced, run in tmp_path; records write_results calls."""
    calls = []
    runs = {"steps": 40, "train_time_s": 5.0, "fashion_mnist/knn_top1": 0.6, "fashion_mnist/linear_top1": 0.5}
    monkeypatch.chdir(tmp_path)  # the demo's run.root (runs/) resolves here
    monkeypatch.setattr(rp, "FIGURES", tmp_path / "committed_figures")
    monkeypatch.setattr(rp, "train_main", lambda cfg: dict(runs))
    monkeypatch.setattr(rp, "baselines", lambda cfg: {"raw_pixels": runs, "random_init": runs})
    monkeypatch.setattr(rp, "classes_in_buffer", lambda cfg: 9.0)
    monkeypatch.setattr(rp, "plot_histograms", lambda cfgs, path: path.parent.mkdir(parents=True, exist_ok=True)
                        or path.write_bytes(b"png"))
    monkeypatch.setattr(shared.report, "write_results", lambda project, table, rows, **kw: calls.append((project, table, kw)))
    return tmp_path, calls


def test_overrides_never_write_the_committed_results(fake_demo):
    tmp, calls = fake_demo
    rp.main([f"run.root={tmp / 'elsewhere'}"])
    rp.main(["--settings", "minred,fifo"])
    rp.main(["--paper-table", f"run.root={tmp / 'elsewhere'}"])
    assert calls == [] and not (tmp / "committed_figures").exists()
    out = tmp / "elsewhere" / "minred"
    assert (out / "buffer_classes.png").is_file() and (out / "demo_table.md").is_file()
    demo = json.loads((out / "demo_results_table.json").read_text())
    assert demo["table"] == "demo" and len(demo["rows"]) == 4 + 4 * 3 + 2  # baselines, 3 metrics x 4, 2 buffers
    assert len(json.loads((out / "paper_results_table.json").read_text())["rows"]) == 60

    rp.main([])  # the demo as configured: the committed tables and figure
    assert [(p, t) for p, t, _ in calls] == [("minred", "demo"), ("minred", "paper")]
    assert calls[0][2]["figures"] == [(str(tmp / "committed_figures" / "buffer_classes.png"),
                                       "class share of each buffer along the stream (FIFO vs MinRed)")]
    rp.main(["--paper-table"])
    assert [t for _, t, _ in calls] == ["demo", "paper", "paper"]
