import json

import pytest

from projects.patch_ranking.reproduce import evidence, table
from projects.patch_ranking.model import build_model
from projects.patch_ranking.train import main
from shared.checkpoint import CheckpointError
from shared.config import load_config
from tests.patch_ranking.conftest import tiny_cfg


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["demo", "oxford_pets"])
def test_build_model_from_config(name):
    cfg = load_config(f"projects/patch_ranking/configs/{name}.yaml", ["clip.pretrained=null"])
    model = build_model(cfg)
    assert model.method == cfg.prune.method and model.predictor is not None
    assert model.stages[0][0] == cfg.prune.stages[0][0]


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_pipeline_end_to_end(synth_root, tmp_path):
    cfg = tiny_cfg(synth_root, tmp_path)
    res = main(cfg)
    saved = json.loads((tmp_path / "patch_ranking" / "demo" / "results.json").read_text())
    assert saved["dataset"] == "Synth"
    assert res["golden"]["train_images"] == 40 and res["golden"]["test_images"] == 20
    rows = {(r["method"], r["keep_ratio"]): r for r in res["eval"]}
    for m in ("golden", "predictor", "random", "evit", "tome", "predictor+tokens"):
        assert (m, 0.6) in rows and rows[(m, 0.6)]["kept_tokens"] == 10
    assert rows[("none", 1.0)]["kept_tokens"] == 16
    # pruning costs less, the predictor is counted on top of the pruned tower
    assert rows[("random", 0.6)]["gflops"] < rows[("none", 1.0)]["gflops"]
    assert rows[("predictor", 0.6)]["gflops"] > rows[("random", 0.6)]["gflops"]
    # the predictor learned the golden ranking better than chance (6 of 16 patches: 37.5 %)
    assert res["predictor"]["train_overlap"] > 37.5 + 5
    text = table(res)
    assert "predictor (ours)" in text and "EViT" in text and "ToMe" in text
    assert len(evidence(res, 0.6)) == 3
    # a second call resumes from what is on disk
    again = main(tiny_cfg(synth_root, tmp_path))
    assert again["predictor"]["train_overlap"] == res["predictor"]["train_overlap"]
    # the run's own predictor.pt, truncated: one error naming it and how to rebuild it
    pt = tmp_path / "patch_ranking" / "demo" / "predictor.pt"
    pt.write_bytes(pt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"predictor\.pt.*(complete|not a weights)"):
        main(tiny_cfg(synth_root, tmp_path, "phases=[eval]"))


def test_a_predictor_that_does_not_fit_is_named_with_the_rebuild_hint(tmp_path):
    import torch

    from projects.patch_ranking.model import load_predictor
    from projects.patch_ranking.predictor import MixerPredictor

    torch.save(MixerPredictor(16, 8).state_dict(), tmp_path / "p16.pt")
    load_predictor(MixerPredictor(16, 8), tmp_path / "p16.pt")  # fits
    with pytest.raises(CheckpointError, match=r"p16\.pt does not fit this predictor \(49 patches, pool width 8\).*"
                                              r"delete predictor\.pt"):
        load_predictor(MixerPredictor(49, 8), tmp_path / "p16.pt", "delete predictor.pt and predictor.json")
    torch.save({"model": MixerPredictor(16, 8).state_dict(), "project": "ezvsl"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="project 'ezvsl'"):
        load_predictor(MixerPredictor(16, 8), tmp_path / "other.pt")
