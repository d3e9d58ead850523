import pytest
import torch

from projects.patch_ranking.baselines import bipartite_merge, encode_image_evit, encode_image_tome, tome_merge

pytestmark = pytest.mark.timeout(60)


def _tokens_into_block(m, layer, fn):
    seen = {}
    h = m.visual.transformer.resblocks[layer].register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    try:
        fn()
    finally:
        h.remove()
    return seen["x"]


@pytest.mark.parametrize("keep", [10, 6, 3])
def test_evit_and_tome_keep_the_stated_count(tiny_clip, keep):
    m = tiny_clip.model
    x = torch.randn(2, 3, 32, 32)
    t = _tokens_into_block(m, 1, lambda: encode_image_evit(m, x, keep, layer=1))
    assert t.shape[1] == 1 + keep        # CLS + (keep-1) attentive + 1 fused
    t = _tokens_into_block(m, 1, lambda: encode_image_tome(m, x, keep, layer=1))
    assert t.shape[1] == 1 + keep        # CLS + keep merged tokens (several rounds below N/2)


def test_full_budget_is_the_unpruned_tower(tiny_clip):
    m = tiny_clip.model
    x = torch.randn(2, 3, 32, 32)
    ref = m.encode_image(x)
    torch.testing.assert_close(encode_image_evit(m, x, 16, 1), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encode_image_tome(m, x, 16, 1), ref, atol=1e-5, rtol=1e-5)


def test_tome_merge_conserves_mass_and_size(tiny_clip):
    m = tiny_clip.model
    x = torch.randn(2, 17, 64)
    merged, sizes = tome_merge(x, m.visual.transformer.resblocks[1], 5, 16)
    assert merged.shape == (2, 6, 64) and sizes.shape == (2, 6)
    assert torch.allclose(sizes[:, 1:].sum(1), torch.full((2,), 16.0))
    # size-weighted sum of the tokens is preserved by merging
    torch.testing.assert_close((merged[:, 1:] * sizes[:, 1:, None]).sum(1), x[:, 1:].sum(1), atol=1e-4, rtol=1e-4)


def test_bipartite_merges_the_most_similar_pair():
    # tokens 0 (A) and 3 (B) identical, everything else orthogonal: r=1 merges exactly them
    x = torch.eye(6).unsqueeze(0)
    x[0, 0] = x[0, 3]
    out, _, size = bipartite_merge(x, x.clone(), torch.ones(1, 6), 1)
    assert out.shape == (1, 5, 6)
    assert size[0].tolist() == [1, 1, 1, 2, 1]
