import pytest
import torch

from projects.accel_ssl.compression import Setting
from projects.accel_ssl.model import build_model
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
    model = build_model(cfg)
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
    model = build_model(tiny_cfg("mocov3", fmnist_root, tmp_path))
    full = model.step_flops([32, 32], Setting())
    assert model.step_flops([32, 32], Setting(keep_online=(0.25,))) < 0.6 * full
    assert model.step_flops([32, 32], Setting(patch=8)) < 0.45 * full


def test_momentum_update(fmnist_root, tmp_path):
    model = build_model(tiny_cfg("dino", fmnist_root, tmp_path))
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
    model = build_model(cfg)
    ds = pretrain_set(cfg)
    batches = [collate_skipping_bad([ds[(i, i)] for i in range(r * 8, r * 8 + 8)])["views"] for r in range(3)]
    settings = [Setting(), Setting(keep_online=(0.25,)), Setting(patch=16)]
    rows = grad_error.measure(model, batches, settings, sizes=[32, 32])
    assert rows[0]["bias2"] == 0.0 and rows[0]["cost"] == 1.0 and rows[0]["var"] > 0
    for r in rows[1:]:  # the plug-in ||mean d||^2 minus tr(S_d) / R (R = 3 here: the estimate may be negative)
        assert r["var_diff"] > 0 and r["bias2"] == pytest.approx(r["bias2_plugin"] - r["var_diff"] / 3)
    assert rows[2]["cost_flops"] < rows[1]["cost_flops"] < 1.0
    for r in rows:
        assert r["ca_mse"] == pytest.approx(r["bias2"] + r["cost_flops"] * r["var"])
    # micro-batches: a batch of 8 as the mean of 2 x 4 (each with its own BN statistics and negatives)
    micro = grad_error.measure(model, batches, settings[:2], sizes=[32, 32], micro=4, cost="time")
    assert micro[0]["cost_time"] == 1.0 and micro[1]["cost"] == micro[1]["cost_time"] > 0
    assert micro[0]["var"] != pytest.approx(rows[0]["var"])


def test_grad_error_estimator_is_unbiased_on_a_known_case():
    """g_r = mu + e_r, g_{s,r} = mu + beta + a e_r + n_r with e ~ N(0, diag(sig^2)), n ~ N(0, tau^2 I):
    bias^2 = ||beta||^2, variance = tr Var(g_s) = a^2 sum sig^2 + P tau^2."""
    gen = torch.Generator().manual_seed(0)
    P, R, trials = 6, 4, 2500
    mu, beta = torch.randn(P, generator=gen, dtype=torch.float64), 0.3 * torch.randn(P, generator=gen, dtype=torch.float64)
    sig, a, tau = torch.rand(P, generator=gen, dtype=torch.float64) + 0.5, 0.8, 0.4
    true_bias2, true_var = float(beta.square().sum()), float(a * a * sig.square().sum() + P * tau * tau)
    est, plugin, naive_var = [], [], []
    for _ in range(trials):
        e = torch.randn(R, P, generator=gen, dtype=torch.float64) * sig
        ref = mu + e
        comp = mu + beta + a * e + tau * torch.randn(R, P, generator=gen, dtype=torch.float64)
        st = grad_error.unbiased_stats(ref, comp)
        est.append((st["bias2"], st["var"]))
        plugin.append(st["bias2_plugin"])
        naive_var.append(float((comp - comp.mean(0)).square().sum(1).mean()))  # divides by R
    b2 = sum(x for x, _ in est) / trials
    var = sum(v for _, v in est) / trials
    se_b2 = torch.tensor([x for x, _ in est]).std().item() / trials ** 0.5
    se_var = torch.tensor([v for _, v in est]).std().item() / trials ** 0.5
    assert abs(b2 - true_bias2) < 4 * se_b2 and abs(var - true_var) < 4 * se_var
    # the uncorrected estimators are off by tr(Var d) / R and a factor (R - 1) / R
    true_var_d = float((a - 1) ** 2 * sig.square().sum() + P * tau * tau)
    assert sum(plugin) / trials == pytest.approx(true_bias2 + true_var_d / R, rel=0.08)
    assert sum(naive_var) / trials == pytest.approx(true_var * (R - 1) / R, rel=0.08)


def test_grad_error_cli_and_schedule_search(fmnist_root, tmp_path):
    from projects.accel_ssl import schedule_search

    args = ["--config", "projects/accel_ssl/configs/demo_mocov3.yaml", "--batches", "2", "--batch-size", "8",
            f"data.root={fmnist_root}", f"run.root={tmp_path}", "model.arch=vit_test", "method.hidden_dim=32",
            "method.out_dim=16", "data.num_workers=0"]
    res = grad_error.main(args + ["--settings", "[{keep_online: 0.5}, {patch: x2}]"])
    assert [r["name"] for r in res["rows"]] == ["pbase_keep1_t1", "pbase_keep0.5_t1", "p8_keep1_t1"]
    assert res["cost"] == "flops" and res["batch_size"] == 8
    with pytest.raises(ValueError, match="does not divide"):
        grad_error.main(args + ["--settings", "[{patch: 12}]"])
    assert (tmp_path / "accel_ssl" / "demo_mocov3" / "grad_error" / "init.png").exists()
    # two measured points: the least CA-MSE wins each interval; identical neighbours merge
    t0 = {"step": 0, "rows": [{"setting": {"patch": 8}, "ca_mse": 1.0}, {"setting": {"patch": None}, "ca_mse": 2.0}]}
    t1 = {"step": 50, "rows": [{"setting": {"patch": 8}, "ca_mse": 3.0}, {"setting": {"patch": None}, "ca_mse": 2.0}]}
    t2 = {"step": 75, "rows": [{"setting": {"patch": 8}, "ca_mse": 3.0}, {"setting": {"patch": None}, "ca_mse": 2.0}]}
    assert schedule_search.search([t1, t0, t2], 100) == [{"until": 0.5, "patch": 8}, {"until": 1.0, "patch": None}]
    full, p8 = {"patch": None, "keep_online": [1.0], "keep_target": [1.0]}, {"patch": 8, "keep_online": [0.5],
                                                                             "keep_target": [0.5]}
    for t in (t0, t1, t2):
        t["rows"][0]["setting"], t["rows"][1]["setting"] = p8, full
        t["rows"][0]["cost"], t["rows"][1]["cost"] = 0.12, 1.0
    md = schedule_search.markdown([t2, t0, t1]).splitlines()
    assert md[0] == "| step | patch 8 + keep 0.5 both | full length | chosen |"
    assert md[2] == "| 0 | **1** (0.12) | 2 | patch 8 + keep 0.5 both |" and md[4].endswith("| 3 (0.12) | **2** | full length |")
    assert schedule_search.label({"patch": None, "keep_online": [0.25], "keep_target": [1.0]}) == "keep 0.25 online"
