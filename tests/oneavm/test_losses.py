import math

import pytest
import torch
import torch.nn.functional as F

from projects.oneavm.losses import (av_scores, mil_contrastive_loss, mixing_targets,
                                    multi_positive_contrastive_loss, separation_loss)

pytestmark = pytest.mark.timeout(60)


def _maps_from_vectors(vecs):
    """(B, D) unit vectors -> (B, D, 1, 2) maps: location 0 holds the vector, location 1 a zero feature."""
    b, d = vecs.shape
    m = torch.zeros(b, d, 1, 2)
    m[..., 0, 0] = vecs
    return m


def test_mil_loss_hand_value():
    img = _maps_from_vectors(torch.eye(2))
    aud = torch.eye(2)
    tau = 0.5
    # S = [[2, 0], [0, 2]] (max over locations: the zero location gives 0)
    expected = 2 * (math.log(math.exp(2) + 1) - 2)
    assert mil_contrastive_loss(img, aud, tau).item() == pytest.approx(expected, rel=1e-6)


def test_mixing_targets():
    t = mixing_targets(torch.tensor([1, 2, 0]), 0.7, "lambda")
    assert torch.allclose(t, torch.tensor([[0.7, 0.3, 0], [0, 0.7, 0.3], [0.3, 0, 0.7]]))
    assert torch.allclose(mixing_targets(torch.tensor([1, 0]), 0.9, "uniform"), torch.full((2, 2), 0.5))
    with pytest.raises(ValueError):
        mixing_targets(torch.tensor([1, 0]), 0.5, "soft")


def test_multi_positive_loss_hand_value():
    # three audio directions; mixed image 0 holds sources 0 and 1 in two locations, image 1 holds 1 and 2,
    # image 2 holds 2 and 0
    a = torch.eye(3)
    mix = torch.zeros(3, 3, 1, 2)
    for i, (p, q) in enumerate([(0, 1), (1, 2), (2, 0)]):
        mix[i, :, 0, 0], mix[i, :, 0, 1] = a[p], a[q]
    tau = 1.0
    t = mixing_targets(torch.tensor([1, 2, 0]), 0.5, "lambda")
    s = av_scores(mix, a, tau)  # each image scores 1 with its two sources, 0 with the third
    assert torch.allclose(s, torch.tensor([[1.0, 1, 0], [0, 1, 1], [1, 0, 1]]))
    logp = 1 - math.log(2 * math.e + 1)
    expected = -logp + -logp  # both directions: half weight on each of the two positives with log-prob logp
    assert multi_positive_contrastive_loss(mix, a, t, tau).item() == pytest.approx(expected, rel=1e-6)
    # a mixed image that lights up only ONE of its sources is penalised more
    worse = mix.clone()
    worse[:, :, 0, 1] = 0
    assert multi_positive_contrastive_loss(worse, a, t, tau) > multi_positive_contrastive_loss(mix, a, t, tau)


def test_multi_positive_reduces_to_infonce_with_one_positive():
    torch.manual_seed(0)
    img = F.normalize(torch.randn(4, 8, 2, 2), dim=1)
    aud = F.normalize(torch.randn(4, 8), dim=1)
    t = torch.eye(4)  # lam = 1: only the own sound
    s = av_scores(img, aud, 0.1)
    ref = F.cross_entropy(s, torch.arange(4)) + F.cross_entropy(s.t(), torch.arange(4))
    assert multi_positive_contrastive_loss(img, aud, t, 0.1).item() == pytest.approx(ref.item(), rel=1e-5)
    assert mil_contrastive_loss(img, aud, 0.1).item() == pytest.approx(ref.item(), rel=1e-5)


def test_separation_loss_hand_values_and_validity():
    logits = torch.zeros(2, 2, 1, 2)  # sigmoid 0.5 everywhere
    gt = torch.tensor([[[[1.0, 0.0]], [[1.0, 1.0]]], [[[0.0, 1.0]], [[0.0, 0.0]]]])
    w = torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]])
    # BCE at p = 0.5 is log 2 per bin: per (source, sample) mean of w * log 2
    expected = math.log(2) * (w.mean(dim=(1, 2))).mean()
    assert separation_loss(logits, gt, w, "bce").item() == pytest.approx(expected.item(), rel=1e-6)
    l1 = separation_loss(logits, gt, w, "l1")
    assert l1.item() == pytest.approx(0.5 * w.mean().item(), rel=1e-6)
    only0 = separation_loss(logits, gt, w, "bce", valid=torch.tensor([True, False]))
    assert only0.item() == pytest.approx(math.log(2) * 2.0, rel=1e-6)
    none = separation_loss(logits.requires_grad_(), gt, w, "bce", valid=torch.tensor([False, False]))
    assert none.item() == 0.0
    none.backward()
    with pytest.raises(ValueError):
        separation_loss(logits, gt, w, "l2")


def test_peak_cells_diagnostic():
    import torch

    from projects.oneavm.eval import peak_cells

    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 3] = 1  # top-right corner: a border cell
    maps[1, 1, 2] = 1  # interior
    maps[2, 2, 1] = 1  # interior
    gts = torch.zeros(3, 8, 8)
    gts[0, 0:2, 6:8] = 1  # centre in cell (0, 3): the peak's cell
    gts[1, 2:4, 4:6] = 1  # centre (3, 5) -> cell (1, 2): the peak's cell
    gts[2, 6:8, 0:2] = 1  # centre (7, 1) -> cell (3, 0): border, not the peak's cell
    out = peak_cells(maps, gts)
    assert out == pytest.approx({"peak_on_border": 1 / 3, "target_on_border": 2 / 3, "peak_in_target_cell": 2 / 3})
