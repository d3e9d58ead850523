import pytest
import torch
import torch.nn.functional as F

from projects.patch_ranking.predictor import MixerPredictor, ranking_kl_loss, soft_target, top_overlap

pytestmark = pytest.mark.timeout(60)


# The official train_predictor.py, re-implemented from reading it (CEWu/PatchRanking):
def official_target(ranking):
    scores = torch.zeros(len(ranking))
    for index, rank in enumerate(ranking):
        scores[rank] = -5 - index * 0.1 if index >= len(ranking) - 50 else 0
    return F.softmax(scores, dim=-1)


def official_loss(pred, rankings):
    losses = [F.kl_div(F.softmax(pred[i], dim=0).log(), official_target(rankings[i]), reduction="sum")
              for i in range(len(rankings))]
    return sum(losses) / len(rankings)


def official_top_n_match(a, b, n=-50):
    return len(set(a[n:].tolist()) & set(b[n:])) / 50 * 100


def test_target_loss_and_metric_match_the_official_code():
    torch.manual_seed(0)
    order = torch.stack([torch.randperm(196) for _ in range(4)])
    scores = torch.randn(4, 196)
    torch.testing.assert_close(soft_target(order), torch.stack([official_target(o.tolist()) for o in order]))
    torch.testing.assert_close(ranking_kl_loss(scores, order), official_loss(scores, order.tolist()))
    ours = top_overlap(scores, order, 50)
    theirs = [official_top_n_match(s.numpy().argsort()[::-1], o.tolist()) for s, o in zip(scores, order)]
    torch.testing.assert_close(ours, torch.tensor(theirs, dtype=torch.float32))


def test_target_with_a_short_ranking():
    t = soft_target(torch.arange(16).view(1, -1), tail=6)
    assert torch.allclose(t[0, :10], t[0, 0].expand(10))      # untouched head: equal mass
    assert (t[0, 10:].diff() < 0).all() and t[0, 10] < t[0, 9]  # tail decreasing


def test_predictor_shape_and_size():
    p = MixerPredictor(196)
    assert p(torch.randn(2, 197, 768)).shape == (2, 196)
    assert sum(q.numel() for q in p.parameters()) < 60_000     # lightweight: tens of thousands
    with pytest.raises(ValueError, match="196 patches"):
        p(torch.randn(2, 150, 768))


def test_loss_falls_on_a_tiny_set():
    torch.manual_seed(0)
    feats = torch.randn(16, 17, 32)
    # a learnable rule: the ranking sorts patches by their mean feature
    order = feats[:, 1:].mean(-1).argsort(dim=1, descending=True)
    p = MixerPredictor(16, pool_dim=16)
    opt = torch.optim.Adam(p.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = ranking_kl_loss(p(feats), order, tail=6)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert float(top_overlap(p(feats), order, 6).mean()) > 60.0   # chance: 6/16 = 37.5 %
