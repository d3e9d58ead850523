import pytest
import torch

from projects.accel_ssl.compression import Setting
from projects.accel_ssl.frameworks import build_framework
from projects.accel_ssl import grad_error
from projects.accel_ssl.data import pretrain_set
from shared.data.robust import collate_skipping_bad
from tests.accel_ssl.conftest import tiny_cfg

SETTINGS = [Setting(), Setting(keep_online=(0.5,)), Setting(keep_online=(0.25,), keep_target=(0.5,)),
            Setting(patch=8), Setting(patch=8, keep_online=(0.5, 1.0))]


def batch(cfg, n=8):
    ds = pretrain_set(cfg)
    return collate_skipping_bad([ds[(i, i)] for i in range(n)])["views"]


@pytest.mark.parametrize("method,bn_head", [("mocov3", None), ("simclr", None), ("dino", True), ("dino", False)])
def test_every_setting_trains_exactly_the_trainable_parameters(method, bn_head, fmnist_root, tmp_path):
    cfg = tiny_cfg(method, fmnist_root, tmp_path, *([f"method.use_bn_in_head={bn_head}"] if bn_head is not None else []))
    torch.manual_seed(0)
    model = build_framework(cfg)
    views = batch(cfg)
    assert len(views) == (4 if method == "dino" else 2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    if method == "mocov3":  # stop-grad-conv1 and the momentum branch
        assert "backbone.vit.patch_embed.proj.weight" in frozen and all(
            n in frozen for n, _ in model.named_parameters() if n.startswith(("m_backbone", "m_projector")))
    if method == "dino":
        assert "head.last_layer.parametrizations.weight.original0" in frozen  # norm_last_layer
        assert all(n in frozen for n, _ in model.named_parameters() if n.startswith(("t_backbone", "t_head")))
        assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.head.mlp) == bn_head
    for s in SETTINGS:
        model.zero_grad(set_to_none=True)
        gens = [torch.Generator().manual_seed(i) for i in range(len(views) + 2)]
        loss, _ = model.loss(views, s, gens, teacher_temp=0.04)
        assert torch.isfinite(loss)
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
        leaked = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
        assert missing == [] and leaked == [], (s.name, missing, leaked)


def test_flops_follow_the_setting(fmnist_root, tmp_path):
    model = build_framework(tiny_cfg("mocov3", fmnist_root, tmp_path))
    full = model.step_flops([32, 32], Setting())
    assert model.step_flops([32, 32], Setting(keep_online=(0.25,))) < 0.6 * full
    assert model.step_flops([32, 32], Setting(patch=8)) < 0.45 * full


def test_momentum_update(fmnist_root, tmp_path):
    model = build_framework(tiny_cfg("dino", fmnist_root, tmp_path))
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    t0 = [p.clone() for p in model.t_backbone.parameters()]
    model.update_target(0.9)
    for t, before, s in zip(model.t_backbone.parameters(), t0, model.backbone.parameters()):
        assert torch.allclose(t, 0.9 * before + 0.1 * s)


def test_grad_error_zero_bias_at_full_length(fmnist_root, tmp_path):
    cfg = tiny_cfg("mocov3", fmnist_root, tmp_path)
    torch.manual_seed(0)
    model = build_framework(cfg)
    ds = pretrain_set(cfg)
    batches = [collate_skipping_bad([ds[(i, i)] for i in range(r * 8, r * 8 + 8)])["views"] for r in range(3)]
    rows = grad_error.measure(model, batches, [Setting(), Setting(keep_online=(0.25,)), Setting(patch=16)],
                              sizes=[32, 32])
    assert rows[0]["bias2"] == 0.0 and rows[0]["cost_time"] == 1.0 and rows[0]["var"] > 0
    assert rows[1]["bias2"] > 0 and rows[2]["bias2"] > 0
    assert rows[2]["cost_flops"] < rows[1]["cost_flops"] < 1.0
    for r in rows:
        assert r["ca_mse"] == pytest.approx(r["bias2"] + r["cost_time"] * r["var"])


def test_grad_error_cli_and_schedule_search(fmnist_root, tmp_path):
    from projects.accel_ssl import schedule_search

    args = ["--config", "projects/accel_ssl/configs/demo_mocov3.yaml", "--batches", "2", "--batch-size", "8",
            f"data.root={fmnist_root}", f"run.root={tmp_path}", "model.arch=vit_test", "method.hidden_dim=32",
            "method.out_dim=16", "data.num_workers=0"]
    res = grad_error.main(args + ["--settings", "[{keep_online: 0.5}, {patch: x2}]"])
    assert [r["name"] for r in res["rows"]] == ["pbase_keep1_t1", "pbase_keep0.5_t1", "p8_keep1_t1"]
    assert (tmp_path / "accel_ssl" / "demo_mocov3" / "grad_error" / "init.png").exists()
    # two measured points: the least CA-MSE wins each interval; identical neighbours merge
    t0 = {"step": 0, "rows": [{"setting": {"patch": 8}, "ca_mse": 1.0}, {"setting": {"patch": None}, "ca_mse": 2.0}]}
    t1 = {"step": 50, "rows": [{"setting": {"patch": 8}, "ca_mse": 3.0}, {"setting": {"patch": None}, "ca_mse": 2.0}]}
    t2 = {"step": 75, "rows": [{"setting": {"patch": 8}, "ca_mse": 3.0}, {"setting": {"patch": None}, "ca_mse": 2.0}]}
    assert schedule_search.search([t1, t0, t2], 100) == [{"until": 0.5, "patch": 8}, {"until": 1.0, "patch": None}]
