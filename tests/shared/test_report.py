"""shared.report: the results files, generated README blocks and RESULTS.md, CSV, curves and figures."""
import csv
import json

import pytest

from shared import report
from shared.logging import MetricLogger

ROWS = [
    {"setting": "Flickr", "method": "EZ-VSL", "metric": "cIoU", "ours": 80.0, "paper": 81.93, "std": 0.5},
    {"setting": "Flickr", "method": "EZ-VSL", "metric": "AUC", "ours": 61.0, "paper": 62.58},
    {"setting": "VGG-SS", "method": "EZ-VSL", "metric": "cIoU", "ours": None, "paper": 37.18},
]


@pytest.fixture
def repo(tmp_path):
    """A repository with three projects: one with a results file and README markers, one with a
    hand-written README results section, one with nothing."""
    for p in ("alpha", "beta", "gamma"):
        (tmp_path / "projects" / p).mkdir(parents=True)
        (tmp_path / "projects" / p / "__init__.py").write_text("")
    (tmp_path / "projects" / "alpha" / "figures").mkdir()
    (tmp_path / "projects" / "alpha" / "figures" / "curve.png").write_bytes(b"\x89PNG")
    (tmp_path / "projects" / "alpha" / "README.md").write_text(
        "# Alpha: a paper\n\n## Results\n<!-- results:demo -->\nold typed table\n<!-- /results:demo -->\n"
        "\n<!-- results:full -->\n<!-- /results:full -->\n\n## Speed\nfast\n")
    (tmp_path / "projects" / "beta" / "README.md").write_text(
        "# Beta: another paper\n\n## Results\n### Demo\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "![fig](docs/x.png) [web](https://example.org/a.png)\n\n## Known differences\nnone\n")
    return tmp_path


def test_write_and_read_results_round_trip(repo):
    path = report.write_results("alpha", "demo", ROWS, scale="demo set, 2 epochs, CPU", command="make reproduce-alpha",
                                figures=[("projects/alpha/figures/curve.png", "loss curve")], root=repo)
    assert path == repo / "projects/alpha/results/demo.json"
    (t,) = report.read_results("alpha", repo)
    assert t["project"] == "alpha" and t["table"] == "demo" and t["scale"] == "demo set, 2 epochs, CPU"
    assert t["date"] and t["figures"] == [{"path": "projects/alpha/figures/curve.png", "caption": "loss curve"}]
    assert [r["ours"] for r in t["rows"]] == [80.0, 61.0, None] and t["rows"][0]["std"] == 0.5
    with open(repo / "projects/alpha/results/demo.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["paper"] == "81.93" and rows[2]["ours"] == "" and list(rows[0])[:3] == ["setting", "method", "metric"]


@pytest.mark.parametrize("row,match", [
    ({"method": "m", "metric": "acc", "ours": 1.0, "oops": 2}, "unknown keys"),
    ({"method": "m", "metric": "acc"}, "missing"),
    ({"method": "m", "metric": "acc", "ours": "71.2"}, "expected a number"),
    ({"method": "m", "metric": "acc", "ours": float("nan")}, "not finite"),
    ({"method": "", "metric": "acc", "ours": 1.0}, "must not be empty"),
])
def test_bad_rows_are_errors(repo, row, match):
    with pytest.raises(ValueError, match=match):
        report.write_results("alpha", "demo", [row], scale="s", command="c", root=repo)
    assert not (repo / "projects/alpha/results/demo.json").exists()


def test_bad_figures_and_names_are_errors(repo, tmp_path_factory):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        report.write_results("alpha", "demo", ROWS, scale="s", command="c", figures=["projects/alpha/missing.png"],
                             root=repo)
    outside = tmp_path_factory.mktemp("elsewhere") / "f.png"
    outside.write_bytes(b"x")
    with pytest.raises(ValueError, match="outside the repository"):
        report.write_results("alpha", "demo", ROWS, scale="s", command="c", figures=[outside], root=repo)
    with pytest.raises(FileNotFoundError, match="no project folder"):
        report.write_results("delta", "demo", ROWS, scale="s", command="c", root=repo)
    with pytest.raises(ValueError, match="file names"):
        report.write_results("alpha", "../x", ROWS, scale="s", command="c", root=repo)


def test_a_misplaced_or_malformed_results_file_is_named(repo):
    d = repo / "projects/alpha/results"
    d.mkdir()
    (d / "demo.json").write_text("{not json")
    with pytest.raises(ValueError, match="demo.json: not valid JSON"):
        report.read_results("alpha", repo)
    (d / "demo.json").write_text(json.dumps({"project": "alpha", "table": "other", "scale": "s", "rows": ROWS}))
    with pytest.raises(ValueError, match="lives at projects/alpha/results/demo.json"):
        report.read_results("alpha", repo)


def test_markdown_tables_long_and_pivoted():
    assert report.markdown_table(ROWS) == "\n".join([
        "| setting | method | metric | paper | ours |",
        "|---|---|---|---|---|",
        "| Flickr | EZ-VSL | cIoU | 81.93 | 80.00 ± 0.50 |",
        "| Flickr | EZ-VSL | AUC | 62.58 | 61.00 |",
        "| VGG-SS | EZ-VSL | cIoU | 37.18 | not run |"])
    assert report.markdown_table(ROWS, pivot=True) == "\n".join([
        "| setting | method | cIoU | AUC |",
        "|---|---|---|---|",
        "| Flickr | EZ-VSL | 80.00 ± 0.50 (paper 81.93) | 61.00 (paper 62.58) |",
        "| VGG-SS | EZ-VSL | not run (paper 37.18) |  |"])
    # no setting column when no row has one; a missing paper number is "-"; "|" in text is escaped
    assert report.markdown_table([{"method": "a|b", "metric": "acc", "ours": 1}]).splitlines()[2] == \
        "| a\\|b | acc | - | 1.00 |"


def test_build_fills_readme_blocks_and_writes_results_page(repo):
    report.write_results("alpha", "demo", ROWS, scale="demo set, CPU", command="make reproduce-alpha",
                         figures=["projects/alpha/figures/curve.png"], root=repo)
    changed = report.build(repo)
    assert set(changed) == {repo / "projects/alpha/README.md", repo / "RESULTS.md"}
    readme = (repo / "projects/alpha/README.md").read_text()
    assert "old typed table" not in readme and "| Flickr | EZ-VSL | 80.00 ± 0.50 (paper 81.93) |" in readme
    assert "![curve](../../projects/alpha/figures/curve.png)" in readme
    assert "<!-- results:full -->\n*not run: no `projects/alpha/results/full.json` yet.*\n<!-- /results:full -->" in readme
    assert readme.endswith("## Speed\nfast\n")
    page = (repo / "RESULTS.md").read_text()
    assert "## Alpha: a paper" in page and "Scale: demo set, CPU." in page and "`make reproduce-alpha`" in page
    assert "![curve](projects/alpha/figures/curve.png)" in page
    assert "| [alpha](#alpha-a-paper) | demo | 1 |" in page
    # beta: no results file, its README's section quoted with links made relative to the root
    assert "| [beta](#beta-another-paper) | README only (not generated) |" in page
    assert "#### Demo" in page and "![fig](projects/beta/docs/x.png)" in page and "(https://example.org/a.png)" in page
    assert "## Known differences" not in page
    # gamma: nothing at all
    assert "| [gamma](#gamma) | not run |" in page and "**not run**: no `projects/gamma/results/*.json`" in page
    assert report.build(repo, write=False) == []  # idempotent
    assert report.main(["--check", "--root", str(repo)]) == 0
    (repo / "projects/alpha/README.md").write_text(readme.replace("80.00 ± 0.50", "99"))
    assert report.main(["--check", "--root", str(repo)]) == 1
    assert "99" in (repo / "projects/alpha/README.md").read_text()  # --check writes nothing


def test_replace_block_errors():
    with pytest.raises(ValueError, match="no block"):
        report.replace_block("text", "demo", "x")
    two = "<!-- results:demo -->a<!-- /results:demo --><!-- results:demo -->b<!-- /results:demo -->"
    with pytest.raises(ValueError, match="two blocks"):
        report.replace_block(two, "demo", "x")


def test_series_carries_the_x_value_forward():
    records = [{"step": 10, "train/loss": 2.0, "budget/train_time_s": 5.0},
               {"step": 10, "val/top1": 40.0},
               {"step": 20, "train/loss": 1.0, "budget/train_time_s": 11.0},
               {"step": 20, "val/top1": 55.0}]
    assert report.series(records, "val/top1", "budget/train_time_s") == ([5.0, 11.0], [40.0, 55.0])
    assert report.series(records, "val/top1") == ([10.0, 20.0], [40.0, 55.0])
    assert report.series([{"step": 1, "val/top1": 3.0}], "val/top1", "budget/train_time_s") == ([], [])


def test_plot_curves_from_metrics_jsonl_and_figure_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name, speed in (("full", 1.0), ("accel", 2.0)):
        lg = MetricLogger(tmp_path / name, tensorboard=False)
        for s in (10, 20, 30):
            lg.log(s, {"budget/train_time_s": s / speed})
            lg.log(s, {"val/knn_top1": 50 + s})
        lg.close()
    out = tmp_path / "figures" / "acc_vs_time.png"
    fig = report.plot_curves({"full": tmp_path / "full", "accelerated": tmp_path / "accel"}, "val/knn_top1",
                             x="budget/train_time_s", out=out, xlabel="training time (s)", hlines={"paper": 76.7})
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 5000
    (line_full, line_accel) = fig.axes[0].get_lines()[:2]
    assert list(line_full.get_xdata()) == [10, 20, 30] and list(line_accel.get_xdata()) == [5, 10, 15]
    with pytest.raises(ValueError, match="no 'val/missing'"):
        report.plot_curves([tmp_path / "full"], "val/missing")
    with pytest.raises(FileNotFoundError, match="no metrics"):
        report.plot_curves([tmp_path / "nothing"], "val/knn_top1")
    lg = MetricLogger(tmp_path / "tbrun")
    report.figure_to_tensorboard(lg, "figures/acc_vs_time", fig, step=30)
    lg.close()
    acc = EventAccumulator(str(tmp_path / "tbrun" / "tb"))
    acc.Reload()
    assert acc.Tags()["images"] == ["figures/acc_vs_time"]
    report.figure_to_tensorboard(None, "x", report.plot_xy({"a": ([0, 1], [1, 2])}), step=0)  # rank > 0: no-op
