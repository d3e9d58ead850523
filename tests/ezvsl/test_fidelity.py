"""Issue-10 fidelity points of EZ-VSL: evaluation maps in fp32 under bf16 autocast; model selection keeps
the later epoch on a tie (the official ``>=``)."""
from types import SimpleNamespace

import torch

from projects.ezvsl import eval as eval_mod
from projects.ezvsl import train as train_mod
from projects.ezvsl.model import EZVSL, ObjectSaliency
from tests.ezvsl.conftest import tiny_cfg


def test_eval_maps_are_fp32_under_bf16_autocast(tiny_root, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_root, tmp_path, "run.name=fp32")
    seen = []
    real_upsample = eval_mod.upsample_maps

    def recording(maps, *a, **k):
        seen.append(maps.dtype)
        return real_upsample(maps, *a, **k)

    # what bf16 autocast does on CUDA, on the CPU: the encoders' matmuls/convs run in bf16
    monkeypatch.setattr(eval_mod, "autocast", lambda device, amp: torch.autocast("cpu", dtype=torch.bfloat16))
    monkeypatch.setattr(eval_mod, "upsample_maps", recording)
    torch.manual_seed(0)
    m = eval_mod.evaluate(EZVSL(), ObjectSaliency(None), eval_mod.eval_loader(cfg, "demo_test"), torch.device("cpu"))
    assert m["n"] == 8 and seen and all(d == torch.float32 for d in seen)


def test_selection_keeps_the_later_epoch_on_a_tie(monkeypatch):
    saved = []
    loop = SimpleNamespace(cfg=SimpleNamespace(eval=SimpleNamespace(alpha=0.4, selection_upsample="bicubic",
                                                                    selection_metric="av"),
                                               loss=SimpleNamespace(tau=0.03), train=SimpleNamespace(amp="none"),
                                               data=SimpleNamespace(max_bad_fraction=0.0)),
                           vars={"best": -1.0}, epoch=1, step=4, log=lambda m: None,
                           ctx=SimpleNamespace(ckpt=SimpleNamespace(save_best=saved.append)))
    same = {k: {"ciou_ap50": 0.5, "auc": 0.4, "mean_ciou": 0.3} for k in eval_mod.VARIANTS} | {"n": 8}
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: same)
    model = torch.nn.Linear(1, 1)
    train_mod.select(loop, model, None, None, "val", torch.device("cpu"))
    loop.epoch, loop.step = 2, 8
    train_mod.select(loop, model, None, None, "val", torch.device("cpu"))  # a tie: the later epoch wins
    assert [s["epoch"] for s in saved] == [1, 2]
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: same | {"av": {"ciou_ap50": 0.4, "auc": 0, "mean_ciou": 0}})
    loop.epoch = 3
    train_mod.select(loop, model, None, None, "val", torch.device("cpu"))
    assert [s["epoch"] for s in saved] == [1, 2] and loop.vars["best"] == 0.5
