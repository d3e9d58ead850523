import pytest
import torch
import torch.nn.functional as F

from projects.minred.probes import LARC, continual_metrics, lars_linear_probe

pytestmark = pytest.mark.timeout(60)


def test_larc_scales_each_gradient_by_the_trust_ratio():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))       # norm 5
    b = torch.nn.Parameter(torch.zeros(2))                  # norm 0: left as is
    opt = LARC(torch.optim.SGD([w, b], lr=2.0, momentum=0.0), trust_coefficient=0.001)
    w.grad, b.grad = torch.tensor([0.0, 10.0]), torch.tensor([1.0, -1.0])  # |g_w| = 10
    opt.step()
    assert torch.allclose(w.data, torch.tensor([3.0, 4.0 - 2.0 * 0.001 * 5 / 10 * 10]))
    assert torch.allclose(b.data, torch.tensor([-2.0, 2.0]))


def test_linear_probe_on_l2_normalised_features_learns_separable_classes():
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(4, 16, generator=g), dim=1) * 5
    y = torch.arange(400) % 4
    x = centers[y] + 0.5 * torch.randn(400, 16, generator=g)
    res = lars_linear_probe(x[:300], y[:300], x[300:], y[300:], 4, epochs=100, lr=3.0, batch_size=64)
    assert res["top1"] > 0.9 and res["top5"] == 1.0
    # LARC moves each weight by ~lr x 0.001 of its norm per step: too few steps leave the head at chance
    short = lars_linear_probe(x[:300], y[:300], x[300:], y[300:], 4, epochs=5, lr=3.0, batch_size=64)
    assert short["top1"] < res["top1"]
    # invariant to the feature scale: the features are L2-normalised first
    res2 = lars_linear_probe(7 * x[:300], y[:300], 7 * x[300:], y[300:], 4, epochs=100, lr=3.0, batch_size=64)
    assert res2["top1"] == pytest.approx(res["top1"], abs=0.02)


def test_continual_accuracy_and_forgetting_formula():
    # acc[c][k]: split k after the c-th quarter of the stream (order 0, 1, 2, 3)
    acc = [[50, 10, 10, 10], [45, 60, 12, 10], [44, 55, 70, 11], [40, 58, 66, 80]]
    m = continual_metrics(acc)
    assert m["mean_acc"] == [20, pytest.approx(31.75), 45, 61]
    assert m["forgetting"] == {"D0": [5, 6, 10], "D1": [5, 2], "D2": [4]}
    # order 3120: D3 learned first
    m2 = continual_metrics(acc, order=[3, 1, 2, 0])
    assert m2["forgetting"]["D3"] == [10 - 10, 10 - 11, 10 - 80] and set(m2["forgetting"]) == {"D3", "D1", "D2"}
    with pytest.raises(ValueError):
        continual_metrics(acc, order=[0, 0, 1, 2])


def test_per_split_accuracy_and_split_file(tmp_path):
    import torch

    from projects.minred.eval import per_split_accuracy, read_splits

    (tmp_path / "s.txt").write_text("0 0\n1 0\n2 1\n3 1\n")
    split_of = read_splits(tmp_path / "s.txt")
    labels = torch.tensor([0, 1, 2, 3, 2, 0])
    pred = torch.tensor([0, 0, 2, 3, 1, 0])
    assert per_split_accuracy(pred, labels, split_of, 2) == [pytest.approx(200 / 3), pytest.approx(200 / 3)]
    (tmp_path / "bad.txt").write_text("0 zero\n")
    with pytest.raises(ValueError, match="label split"):
        read_splits(tmp_path / "bad.txt")
