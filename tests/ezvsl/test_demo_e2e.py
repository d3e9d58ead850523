"""The demo pipeline end to end.

- ``test_demo_pipeline_smoke`` (e2e, in `make test`, ~15 s): ``reproduce.main`` on the demo config at a
  smoke profile (train with evaluation and model selection, the untrained baselines, the table, the
  figures, the results file and its README block) on the tiny generated set at 64 px with random
  weights; it learns the contrastive task on its training clips.
- ``test_demo_learns_to_localize`` (demo_claim, `make test-claims`, minutes): the demo's claim at a
  reduced size: the trained model localizes the sounding object clearly better than the same network
  untrained and than OGL alone (the full demo: `make reproduce-ezvsl`, results/demo.json)."""
import json
from pathlib import Path

import pytest

from shared.config import load_config
from shared.data.demo_av import generate
from projects.ezvsl.pretrain_demo import pretrain
from projects.ezvsl import reproduce
from projects.ezvsl.train import main as train_main
from shared.logging import read_metrics
from shared.report import read_results, table_block, write_results

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_demo_pipeline_smoke(tiny_root, tmp_path):
    """reproduce's entry on the demo config with smoke overrides: the run's table, baselines and figures
    go to the run folder (a changed demo never writes the committed results), and the results file the
    committed demo would write reads back into the README block."""
    overrides = [f"data.root={tiny_root}", f"run.root={tmp_path}", "run.name=demo", "data.num_workers=0",
                 "data.image_size=64", "data.audio.duration=0.5", "model.image_weights=null",
                 "model.ogl_weights=null", "optim.batch_size=8", "optim.epochs=3", "optim.lr=1e-3",
                 "train.log_every=1", "train.ckpt_every_steps=0", "eval.n_visualizations=2", "eval.batch_size=4",
                 "eval.test_sets=[demo_test]"]
    before = {p: p.stat().st_mtime for p in (REPO / "projects" / "ezvsl").rglob("*") if p.is_file()}
    out = reproduce.main(overrides)
    trained, untrained, figs = out["trained"], out["untrained"], out["figures"]
    run = tmp_path / "ezvsl" / "demo"
    md = (run / "results_table.md").read_text()
    assert "| demo_test (n=8) | trained |" in md and "| demo_test (n=8) | untrained |" in md
    assert json.loads((run / "baselines.json").read_text()) == untrained
    assert {f["caption"].split(":")[0] for f in figs} >= {"model-selection AP50 after each epoch", "demo_test"}
    assert all(str(run / "figures") in f["path"] for f in figs)
    assert before == {p: p.stat().st_mtime for p in (REPO / "projects" / "ezvsl").rglob("*") if p.is_file()}
    # the results file and README block, written into a copy of the project folder
    (tmp_path / "repo" / "projects" / "ezvsl" / "figures").mkdir(parents=True)
    for f in figs:
        dst = tmp_path / "repo" / "projects" / "ezvsl" / "figures" / Path(f["path"]).name
        dst.write_bytes(Path(f["path"]).read_bytes())
        f["path"] = str(dst)
    write_results("ezvsl", "demo", reproduce.result_rows(trained, untrained), command="test", scale="tiny",
                  figures=figs, root=tmp_path / "repo")
    (t,) = read_results("ezvsl", tmp_path / "repo")
    got = {(r["method"], r["metric"]): r["ours"] for r in t["rows"]}
    assert got[("EZ-VSL trained, AV", "cIoU AP50")] == round(100 * trained["sets"]["demo_test"]["av"]["ciou_ap50"], 2)
    assert got[("same network untrained, AV", "AUC")] == round(100 * untrained["demo_test"]["av"]["auc"], 2)
    assert "EZ-VSL trained, AV" in table_block(t)
    assert json.loads((run / "results.json").read_text())["sets"]["demo_test"]["av"] == trained["sets"]["demo_test"]["av"]
    # learning: 3 epochs over the same 32 clips (4 steps each); the contrastive loss of the last epoch is below the first's
    loss = [m["train/loss"] for m in read_metrics(run) if "train/loss" in m]
    assert len(loss) == 12 and sum(loss[-4:]) < sum(loss[:4]), loss


@pytest.mark.demo_claim
@pytest.mark.timeout(2400)  # about 3 min on an idle 2-core machine; far slower when the CPU is shared
def test_demo_learns_to_localize(tmp_path):
    root = generate(tmp_path / "demo", n_train=480, n_val=50, n_test=100, n_objects=600, seed=5)
    weights = tmp_path / "demo" / "r18.pth"
    info = pretrain(root, weights, image_size=112, epochs=3)
    assert info["val_accuracy"] > 0.8
    cfg = load_config("projects/ezvsl/configs/demo.yaml", [
        f"data.root={root}", f"run.root={tmp_path}/runs", f"model.image_weights={weights}",
        f"model.ogl_weights={weights}", "optim.epochs=4", "optim.batch_size=16", "eval.test_sets=[demo_test]", "eval.n_visualizations=4"])
    trained = train_main(cfg)["sets"]["demo_test"]
    untrained = reproduce.baselines(cfg)["demo_test"]
    print(reproduce.table({"sets": {"demo_test": trained}}, {"demo_test": untrained}))
    # measured: AV AP50 67 vs untrained 23 vs OGL 25 (2026-11-26), 51 vs 28 vs 25 (2026-12-01, after the stand-in
    # classifier's hold-out changed); on 100 frames one standard error of an AP50 difference is about 7 points,
    # so the margins are ~2 standard errors below the smaller measured gaps, not fitted to one run
    assert trained["av"]["ciou_ap50"] > untrained["av"]["ciou_ap50"] + 0.15
    assert trained["av"]["auc"] > untrained["av"]["auc"] + 0.1
    assert trained["av"]["ciou_ap50"] > trained["obj"]["ciou_ap50"] + 0.15  # audio tells which object sounds
