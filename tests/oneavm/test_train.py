import json

import pytest

from shared.logging import read_metrics
from projects.oneavm import train as train_mod
from tests.oneavm.conftest import tiny_cfg

pytestmark = pytest.mark.timeout(300)  # generous: the suite runs on shared 2-core machines


def losses(run_dir, key="train/loss"):
    return [(m["step"], m[key]) for m in read_metrics(run_dir) if key in m]


@pytest.mark.slow
def test_resume_mid_run_reproduces_the_uninterrupted_run(tiny_root, tmp_path, monkeypatch):
    # batch 2: 4 steps in the one epoch, checkpoints every 2 steps; the crash comes at step 4, so the
    # restart resumes from the step-2 checkpoint in the middle of the epoch
    over = ["optim.epochs=1", "optim.batch_size=2", "train.ckpt_every_steps=2", "eval.tasks=[]"]
    train_mod.main(tiny_cfg(tiny_root, tmp_path, "run.name=straight", *over))
    ref = losses(tmp_path / "oneavm" / "straight")
    assert [s for s, _ in ref] == [1, 2, 3, 4]

    real = train_mod.train_step
    calls = {"n": 0}

    def dies_at_step_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated preemption")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", dies_at_step_4)
    cfg = tiny_cfg(tiny_root, tmp_path, "run.name=killed", *over)
    with pytest.raises(RuntimeError, match="simulated"):
        train_mod.main(cfg)
    monkeypatch.setattr(train_mod, "train_step", real)
    train_mod.main(cfg)
    got = losses(tmp_path / "oneavm" / "killed")
    assert [s for s, _ in got] == [1, 2, 3, 4]
    assert [v for _, v in got] == pytest.approx([v for _, v in ref], rel=1e-5, abs=1e-6)


@pytest.mark.e2e
def test_demo_pipeline_end_to_end_learns(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path, "run.name=e2e", "optim.epochs=4", "optim.lr=1e-3")
    res = train_mod.main(cfg)
    run = tmp_path / "oneavm" / "e2e"
    for f in ("config.yaml", "metrics.jsonl", "results.json", "viz/demo_boxes_heatmaps.png",
              "viz/demo_masks_heatmaps.png"):
        assert (run / f).exists(), f
    sep_dirs = list((run / "viz" / "demo_separation").iterdir())
    assert sep_dirs and {"mix.wav", "pred1.wav", "gt2.wav", "pred1.png", "mix.png"} <= {p.name for p in sep_dirs[0].iterdir()}
    assert json.loads((run / "results.json").read_text())["demo_boxes"] == res["demo_boxes"]
    for name in ("demo_boxes", "demo_masks", "demo_duet"):
        assert 0 <= res[name]["model"]["ciou_ap50"] <= 1 and res[name]["n"] > 0
    sep = res["demo_separation"]
    assert sep["n_mixtures"] + sep["n_skipped_silent"] == 3 and sep["sdr_mix"] < 10
    rec = res["demo_recognition"]
    assert rec["n"] == 6 and 0 <= rec["cr_acc_audio"] <= 1
    # learning: over 8 steps on the same 8 clips, every objective's loss goes down
    for key in ("loss/loc", "loss/sep", "loss/mix"):
        v = [x for _, x in losses(run, key)]
        assert len(v) == 8
        assert sum(v[-2:]) / 2 < sum(v[:2]) / 2, (key, v)
    # the reproduce table's rows and figures from this run
    from projects.oneavm.reproduce import figures, result_rows
    from shared.report import validate_rows

    tables = result_rows(cfg, {"untrained": res, "full": res})
    assert set(tables) == {"localization", "separation", "recognition"}
    rows = validate_rows([r for t in tables.values() for r in t])
    got = {(r["setting"].split(" ")[0], r["method"], r["metric"]): r["ours"] for r in rows}
    assert got[("demo_boxes", "OneAVM (all three objectives)", "mean cIoU")] == \
        round(100 * res["demo_boxes"]["model"]["mean_ciou"], 2)
    assert got[("demo_boxes", "centre prior", "mean cIoU")] == round(100 * res["demo_boxes"]["center_prior"]["mean_ciou"], 2)
    assert got[("demo_separation", "mixture, unseparated", "SDR (dB)")] == round(sep["sdr_mix"], 2)
    assert got[("demo_recognition", "chance", "IR-ACC a->v")] == round(100 * rec["chance_ir"], 2)
    figs = figures(cfg, {"full": run}, tmp_path / "figs")
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    assert {"demo_loc_loss.png", "demo_sep_loss.png", "demo_mix_loss.png", "demo_boxes_heatmaps.jpg",
            "demo_separation_spectrograms.png"} <= names and len(figs) == len(names)
