import pytest
import torch
import torch.nn.functional as F

from projects.patch_ranking.model import PrunedCLIP
from projects.patch_ranking.prompts import TextPrompts

pytestmark = pytest.mark.timeout(60)
NAMES = ["red square", "green circle", "blue cross"]


def test_text_prompts_start_as_the_hand_written_prompt(tiny_clip):
    m, tok = tiny_clip.model, tiny_clip.tokenizer
    tp = TextPrompts(m, tok, NAMES, n_ctx=2, ctx_init="a photo of a", depth=1)  # no deep tokens
    with torch.no_grad():
        ref = F.normalize(m.encode_text(tok([f"a photo of a {n}." for n in NAMES])).float(), dim=-1)
        torch.testing.assert_close(tp(m), ref, atol=1e-5, rtol=1e-5)


def test_gradients_reach_exactly_the_prompt_tokens(tiny_clip):
    model = PrunedCLIP(tiny_clip.model, tiny_clip.tokenizer, [[1, 0.6]], method="random")
    model.set_classes(NAMES, "a photo of a {}.")
    model.add_prompts(n_vis=2, n_txt=2, depth_vis=2, depth_txt=2)
    logits = model(torch.randn(4, 3, 32, 32))
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"visual_prompts.shallow", "visual_prompts.deep.0", "text_prompts.ctx", "text_prompts.deep.0"}
    for n, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == (n in trainable), n


def test_visual_prompts_survive_pruning(tiny_clip):
    model = PrunedCLIP(tiny_clip.model, tiny_clip.tokenizer, [[1, 6]], method="random")
    model.set_classes(NAMES, "a photo of a {}.")
    model.add_prompts(n_vis=2, n_txt=2, depth_vis=2, depth_txt=2)
    seen = {}
    blk = tiny_clip.model.visual.transformer.resblocks[1]
    h = blk.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    try:
        model.image_features(torch.randn(2, 3, 32, 32))
    finally:
        h.remove()
    assert seen["x"].shape[1] == 1 + 6 + 2          # CLS, 6 kept patches, 2 (deep) visual tokens
    torch.testing.assert_close(seen["x"][0, -2:], model.visual_prompts.deep[0].detach())
