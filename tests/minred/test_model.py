import math

import pytest
import torch
import torch.nn.functional as F

from shared.config import load_config
from projects.minred.model import SimSiam, build_model, build_optimizer, learning_rate, set_lr, simsiam_loss

pytestmark = pytest.mark.timeout(60)


def test_simsiam_structure_matches_official():
    m = SimSiam("resnet18")
    fc = m.encoder.fc
    assert [type(x).__name__ for x in fc] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU",
                                              "Linear", "BatchNorm1d"]
    assert fc[0].bias is None and fc[3].bias is None and fc[0].in_features == 512 and fc[6].out_features == 512
    assert not fc[7].affine and fc[6].bias.requires_grad is False
    assert m.predictor[0].out_features == 128 and m.predictor[0].bias is None and m.predictor[3].bias is not None
    assert all(float(b.bn2.weight.detach().abs().sum()) == 0 for layer in (m.encoder.layer1, m.encoder.layer4) for b in layer)
    r50 = SimSiam("resnet50")
    assert r50.encoder.fc[6].out_features == 2048 and r50.predictor[0].out_features == 512
    with pytest.raises(ValueError, match="model.arch"):
        SimSiam("vit")


def test_loss_value_and_gradients_reach_exactly_the_trainable_parameters():
    torch.manual_seed(0)
    m = SimSiam("resnet18", dim=32, pred_dim=8)
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    p1, p2, z1, z2 = m(x1, x2)
    ps = simsiam_loss(p1, p2, z1, z2)
    ref = -(F.normalize(p1, dim=1) * F.normalize(z2, dim=1)).sum(1) / 2 - (F.normalize(p2, dim=1) * F.normalize(z1, dim=1)).sum(1) / 2
    assert torch.allclose(ps, ref, atol=1e-6) and ps.shape == (4,) and -1 <= float(ps.mean()) <= 1
    ps.mean().backward()
    for name, p in m.named_parameters():
        if name == "encoder.fc.6.bias":
            assert p.grad is None
        else:
            assert p.grad is not None, name
    assert not z1.requires_grad and not z2.requires_grad


def test_lr_schedule_over_the_stream_and_fixed_predictor_lr():
    total = 100
    lrs = [learning_rate(0.05, (k + 1) / total) for k in range(total)]
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and lrs[0] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi / 100)))
    assert lrs[49] == pytest.approx(0.025)
    assert learning_rate(0.01, 0.7, "constant") == 0.01
    assert learning_rate(0.1, 0.95, "cos", exit_decay=0.1) < learning_rate(0.1, 0.95, "cos")
    m = SimSiam("resnet18", dim=16, pred_dim=4)
    opt = build_optimizer(m, 0.05)
    set_lr(opt, 0.01, 0.05)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.05]
    assert opt.param_groups[0]["weight_decay"] == 1e-4 and opt.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError):
        learning_rate(0.1, 0.5, "step")


def test_build_model_from_every_config():
    import glob
    built = {}
    for path in sorted(glob.glob("projects/minred/configs/*.yaml")):
        cfg = load_config(path)  # every config loads (strict keys); build_model needs no weight file
        key = (cfg.model.arch, cfg.model.dim, cfg.model.pred_dim, cfg.model.small_input)
        if key not in built:  # one build per distinct network
            built[key] = build_model(cfg)
        m = built[key]
        assert isinstance(m, SimSiam) and m.dim == (cfg.model.dim or {"resnet18": 512, "resnet50": 2048}[cfg.model.arch])
    assert {k[0] for k in built} == {"resnet18", "resnet50"}


def test_load_pretrained_official_ddp_checkpoint(tmp_path):
    from projects.minred.train import load_pretrained

    torch.manual_seed(1)
    src = SimSiam("resnet18", dim=16, pred_dim=4)
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, tmp_path / "ckpt.pth")
    dst = SimSiam("resnet18", dim=16, pred_dim=4)
    load_pretrained(dst, str(tmp_path / "ckpt.pth"))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
