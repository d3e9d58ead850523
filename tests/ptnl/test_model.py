"""The CoOp prompt learner on a frozen random-init tiny CLIP (open_clip, ViT and ModifiedResNet)."""
import pytest
import torch
import torch.nn.functional as F

from shared.clip.models import encode_text_embeddings, load_clip
from projects.ptnl.model import CoOpCLIP, PromptLearner

NAMES = ["red square", "green_circle", "ankle boot", "t-shirt"]


@pytest.fixture(scope="module", params=["tiny-clip-vit", "tiny-clip-rn"])
def bundle(request):
    torch.manual_seed(0)
    return load_clip(request.param, None)


def test_only_the_context_vectors_receive_gradients(bundle):
    model = CoOpCLIP(bundle.model, bundle.tokenizer, NAMES, n_ctx=16)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]
    assert model.prompt_learner.ctx.shape == (16, bundle.model.ln_final.weight.shape[0])
    assert 0.015 < float(model.prompt_learner.ctx.detach().std()) < 0.025   # N(0, 0.02^2)
    model.train()
    assert not model.clip.training  # the frozen CLIP stays in eval mode (BatchNorm statistics untouched)
    x = torch.randn(3, 3, bundle.image_size, bundle.image_size)
    logits = model(x)
    assert logits.shape == (3, len(NAMES))
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert model.prompt_learner.ctx.grad is not None and model.prompt_learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.clip.parameters())


def test_ctx_init_from_words_gives_the_frozen_encoders_text_features(bundle):
    m = bundle.model
    pl = PromptLearner(m, bundle.tokenizer, NAMES, ctx_init="a photo of a")
    assert pl.n_ctx == 4
    feats = encode_text_embeddings(m, pl(), pl.tokenized_prompts)
    tok = bundle.tokenizer([f"a photo of a {n.replace('_', ' ')}." for n in NAMES])
    with torch.no_grad():
        ref = m.encode_text(tok)
    assert torch.equal(pl.tokenized_prompts, tok)
    assert torch.allclose(feats, ref, atol=1e-5)
    # the causal mask matters: the same transformer without it gives other features (open_clip pitfall)
    x = m.token_embedding(tok) + m.positional_embedding
    no_mask = m.ln_final(m.transformer(x))[torch.arange(len(NAMES)), tok.argmax(-1)] @ m.text_projection
    assert not torch.allclose(no_mask, ref, atol=1e-3)


def test_class_token_positions(bundle):
    m = bundle.model
    end = PromptLearner(m, bundle.tokenizer, NAMES, n_ctx=4)
    for pos in ("middle", "front"):
        pl = PromptLearner(m, bundle.tokenizer, NAMES, n_ctx=4, class_token_position=pos)
        pl.ctx.data.copy_(end.ctx.data)
        out, ref = pl(), end()
        assert out.shape == ref.shape
        for i, n in enumerate(pl.name_lens):
            name = ref[i, 1 + 4:1 + 4 + n]
            at = 1 + 2 if pos == "middle" else 1
            assert torch.equal(out[i, at:at + n], name)
    with pytest.raises(ValueError):
        PromptLearner(m, bundle.tokenizer, NAMES, class_token_position="left")


def test_class_specific_contexts(bundle):
    pl = PromptLearner(bundle.model, bundle.tokenizer, NAMES, n_ctx=3, csc=True)
    assert pl.ctx.shape[:2] == (len(NAMES), 3) and pl().shape[0] == len(NAMES)


def test_frozen_image_tower_keeps_nothing_for_backward(bundle):
    """Saved activations do not grow with the image batch: only the text side (needed for the
    gradient w.r.t. the context vectors) keeps tensors."""
    model = CoOpCLIP(bundle.model, bundle.tokenizer, NAMES, n_ctx=4)

    def saved_bytes(batch):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        x = torch.randn(batch, 3, bundle.image_size, bundle.image_size)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
        return total[0]

    small, big = saved_bytes(2), saved_bytes(16)
    text_only = [0]

    def count(t):
        text_only[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        model.text_features()
    dim = bundle.model.text_projection.shape[1]
    # growth with the batch: the [B, D] image features the logits' gradient w.r.t. the text needs
    assert 0 < big - small <= (16 - 2) * dim * 4 * 2
    assert small - text_only[0] <= 2 * dim * 4 * 2 + 64   # nothing of the image tower's activations


def test_prompt_longer_than_context_is_an_error():
    b = load_clip("tiny-clip-vit", None)
    with pytest.raises(ValueError, match="context length"):
        PromptLearner(b.model, b.tokenizer, ["word " * 70])


def test_logits_are_fp32_outside_the_callers_autocast(bundle):
    """The towers may run in bf16 autocast; the logits scale * img @ txt.T are computed in fp32
    (a bf16 product would round them, changing arg-maxes between train/test and zero-shot)."""
    torch.manual_seed(1)
    model = CoOpCLIP(bundle.model, bundle.tokenizer, NAMES, n_ctx=4).eval()
    x = torch.randn(5, 3, bundle.image_size, bundle.image_size)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        img, txt = model.image_features(x), model.text_features()
        logits = model(x, txt)
        in_bf16 = model.logit_scale() * img @ txt.t()      # what the product gives inside autocast
    assert logits.dtype == torch.float32 and in_bf16.dtype == torch.bfloat16
    ref = model.logit_scale().float() * img.float() @ txt.float().t()
    assert torch.equal(logits, ref)
    assert not torch.equal(logits, in_bf16.float())
