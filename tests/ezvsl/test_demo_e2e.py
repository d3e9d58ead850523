"""The demo pipeline end to end (scaled down from `make reproduce-ezvsl`): the trained model must
localize the sounding object clearly better than the same network untrained and than OGL alone."""
import pytest

from shared.config import load_config
from shared.data.demo_av import generate
from projects.ezvsl.pretrain_demo import pretrain
from projects.ezvsl import reproduce
from projects.ezvsl.train import main as train_main


@pytest.mark.e2e
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
