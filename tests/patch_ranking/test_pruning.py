import pytest
import torch

from projects.patch_ranking import pruning
from projects.patch_ranking.pruning import encode_image_pruned, encode_image_staged, index_scorer, parse_stages

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_all_kept_equals_encode_image(tiny_clip, layer):
    m = tiny_clip.model
    x = torch.randn(3, 3, 32, 32)
    keep = torch.arange(16).expand(3, -1)
    torch.testing.assert_close(encode_image_pruned(m, x, keep, layer), m.encode_image(x), atol=1e-5, rtol=1e-5)


def test_each_image_keeps_cls_and_its_own_k_patches(tiny_clip):
    m = tiny_clip.model
    x = torch.randn(2, 3, 32, 32)
    keep = torch.tensor([[0, 5, 9, 15], [1, 2, 3, 4]])
    seen = {}
    h = m.visual.transformer.resblocks[1].register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    try:
        out = encode_image_pruned(m, x, keep, layer=1)
    finally:
        h.remove()
    assert seen["x"].shape == (2, 1 + 4, 64)  # CLS + exactly K tokens
    full = pruning.run_blocks(m.visual, pruning.embed(m.visual, x), 0, 1)
    torch.testing.assert_close(seen["x"][:, 0], full[:, 0])                       # CLS kept
    for b in range(2):
        torch.testing.assert_close(seen["x"][b, 1:], full[b, 1 + keep[b]])         # its own positions
        single = encode_image_pruned(m, x[b:b + 1], keep[b:b + 1], layer=1)        # batching changes nothing
        torch.testing.assert_close(out[b:b + 1], single, atol=1e-5, rtol=1e-5)


def test_dropping_a_patch_changes_the_output(tiny_clip):
    m = tiny_clip.model
    x = torch.randn(1, 3, 32, 32)
    full = encode_image_pruned(m, x, torch.arange(16).view(1, -1), 1)
    part = encode_image_pruned(m, x, torch.arange(1, 16).view(1, -1), 1)
    assert (full - part).abs().max() > 1e-4


def test_staged_equals_pruned_for_one_stage_and_multistage_runs(tiny_clip):
    m = tiny_clip.model
    x = torch.randn(2, 3, 32, 32)
    keep = torch.tensor([[0, 3, 7, 8, 12, 14], [2, 4, 6, 9, 10, 11]])
    a = encode_image_staged(m, x, [(1, 6)], index_scorer(keep, 16))
    torch.testing.assert_close(a, encode_image_pruned(m, x, keep, 1), atol=1e-5, rtol=1e-5)
    two = encode_image_staged(m, x, [(0, 10), (1, 4)], lambda t, ids: torch.rand(2, 16))
    assert two.shape == (2, 32)


def test_bad_input_is_a_clear_error(tiny_clip):
    m = tiny_clip.model
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="patch indices"):
        encode_image_pruned(m, x, torch.tensor([[0, 16]]), 1)
    with pytest.raises(ValueError, match="keep ratio"):
        parse_stages([[1, 0.0]], 16, 2)
    with pytest.raises(ValueError, match="between 1 and 16"):
        parse_stages([[1, 20]], 16, 2)
    with pytest.raises(ValueError, match="increasing"):
        parse_stages([[1, 0.5], [0, 0.4]], 16, 2)
    assert parse_stages([[1, 0.6]], 196, 12) == [(1, 118)]
    assert parse_stages([[3, 1.0], [5, 100]], 196, 12) == [(3, 196), (5, 100)]
