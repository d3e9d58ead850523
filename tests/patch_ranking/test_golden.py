import pytest
import torch
import torch.nn.functional as F

from projects.patch_ranking.golden import GoldenConfig, block_ids, golden_ranking
from projects.patch_ranking.pruning import encode_image_pruned

pytestmark = pytest.mark.timeout(60)


def test_block_ids_on_the_original_grid():
    assert block_ids((4, 4), 2).view(4, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert block_ids((3, 3), 2).view(3, 3).tolist() == [[0, 0, 1], [0, 0, 1], [2, 2, 3]]  # edge blocks smaller


def test_deterministic_and_a_permutation(tiny_clip):
    x = torch.randn(3, 3, 32, 32)
    cfg = GoldenConfig(layer=1, block_size=2, tokens_per_step=4, steps=2)
    a, b = golden_ranking(tiny_clip.model, x, cfg), golden_ranking(tiny_clip.model, x, cfg)
    assert torch.equal(a["order"], b["order"]) and torch.equal(a["score"], b["score"])
    for o in a["order"]:
        assert sorted(o.tolist()) == list(range(16))
    # removed patches are at the tail, the first-removed last
    for o, rs in zip(a["order"], a["removed_step"]):
        steps = rs[o].tolist()
        assert steps[:8] == [-1] * 8 and steps[8:] == [1] * 4 + [0] * 4


@pytest.mark.parametrize("block,per_step,steps", [(1, 3, 4), (2, 3, 3), (2, 5, 2)])
def test_non_square_kept_counts(tiny_clip, block, per_step, steps):
    # 16 -> 13 -> 10 -> 7 ... kept patches: never a square grid after the first step
    x = torch.randn(2, 3, 32, 32)
    out = golden_ranking(tiny_clip.model, x, GoldenConfig(layer=1, block_size=block, tokens_per_step=per_step,
                                                           steps=steps))
    for s in range(steps):
        assert ((out["removed_step"] == s).sum(1) == per_step).all()
    assert ((out["removed_step"] < 0).sum(1) == 16 - per_step * steps).all()


@pytest.mark.parametrize("block", [1, 2])
def test_first_removal_is_the_best_candidate_by_brute_force(tiny_clip, block):
    m = tiny_clip.model
    x = torch.randn(2, 3, 32, 32)
    out = golden_ranking(m, x, GoldenConfig(layer=1, block_size=block, tokens_per_step=block * block, steps=1))
    ids = block_ids((4, 4), block)
    with torch.no_grad():
        full = F.normalize(m.encode_image(x), dim=-1)
        for b in range(2):
            sims = []
            for u in ids.unique():
                keep = (ids != u).nonzero().squeeze(1).view(1, -1)
                e = F.normalize(encode_image_pruned(m, x[b:b + 1], keep, 1), dim=-1)
                sims.append(float((e * full[b]).sum()))
            best = int(torch.tensor(sims).argmax())
            removed = (out["removed_step"][b] == 0).nonzero().squeeze(1)
            assert set(removed.tolist()) == set((ids == best).nonzero().squeeze(1).tolist())
            assert out["score"][b, removed[0]] == pytest.approx(max(sims), abs=1e-5)


def test_label_and_max_scores_use_logits(tiny_clip):
    m = tiny_clip.model
    x = torch.randn(2, 3, 32, 32)
    clf = F.normalize(torch.randn(5, 32), dim=-1)
    lab = torch.tensor([1, 3])
    out = golden_ranking(m, x, GoldenConfig(layer=1, block_size=4, tokens_per_step=16 - 1, steps=1, score="label"),
                         labels=lab, classifier=clf, scale=100.0)
    # one 4x4 block = all patches: its removal leaves CLS only; the score is the GT logit of that sequence
    with torch.no_grad():
        e = F.normalize(encode_image_pruned(m, x, torch.zeros(2, 0, dtype=torch.long), 1), dim=-1)
    torch.testing.assert_close(out["score"][:, 0], (100 * e @ clf.t()).gather(1, lab.view(-1, 1)).squeeze(1))
    mx = golden_ranking(m, x, GoldenConfig(layer=1, block_size=4, tokens_per_step=15, steps=1, score="max"),
                        classifier=clf, scale=100.0)
    torch.testing.assert_close(mx["score"][:, 0], (100 * e @ clf.t()).max(1).values)
    with pytest.raises(ValueError, match="classifier"):
        golden_ranking(m, x, GoldenConfig(layer=1, score="max", steps=1))
    with pytest.raises(ValueError, match="leave at least one"):
        golden_ranking(m, x, GoldenConfig(layer=1, tokens_per_step=8, steps=2))
