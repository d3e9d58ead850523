import pytest
import torch

from projects.latent_mim.convert import encoder_state, timm_vit, to_timm
from projects.latent_mim.model import build_model

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("layout", ["ours", "official"])
def test_timm_model_gives_the_encoders_features(cfg_factory, layout):
    cfg = cfg_factory("model.in_chans=3", "model.heads=2")
    model = build_model(cfg).eval()
    state = model.state_dict()
    ckpt = {"model": state} if layout == "ours" else {"state_dict": {"module." + k: v for k, v in state.items()}}
    vit = timm_vit(to_timm(encoder_state(ckpt)), num_heads=2).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ours = model.encoder.norm(model.encoder.tokens(x))
        theirs = vit.forward_features(x)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert torch.equal(vit.pos_embed[0], model.encoder.pos_embed.pos_embeds)  # copied, not regenerated


def test_target_encoder_and_errors(cfg_factory):
    model = build_model(cfg_factory())
    with torch.no_grad():
        model.target_encoder.cls_token.add_(1)
    enc = encoder_state({"model": model.state_dict()}, "target")
    assert torch.equal(enc["cls_token"], model.target_encoder.cls_token)
    assert not any(k.startswith("head.") for k in to_timm(enc))
    with pytest.raises(KeyError, match="no 'encoder"):
        encoder_state({"model": {"decoder.x": torch.zeros(1)}})
    with pytest.raises(ValueError, match="not a checkpoint"):
        encoder_state([1, 2])


def test_convert_cli_checks_its_files(cfg_factory, tmp_path):
    from projects.latent_mim import convert
    from shared.checkpoint import CheckpointError

    model = build_model(cfg_factory("model.in_chans=3", "model.heads=2"))
    src = tmp_path / "run" / "checkpoints" / "step_00000010.pt"
    src.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "project": "latent_mim"}, src)
    with pytest.raises(ValueError, match="is the input checkpoint"):
        convert.main([str(src), str(src)])
    with pytest.raises(ValueError, match="checkpoints/ folder.*--force"):
        convert.main([str(src), str(src.parent / "timm.pth")])
    convert.main([str(src), str(tmp_path / "timm.pth")])  # official and ours load through load_weights
    vit = timm_vit(torch.load(tmp_path / "timm.pth", weights_only=True), num_heads=2)
    assert vit.pos_embed.shape[1] == model.encoder.pos_embed.pos_embeds.shape[0]
    convert.main([str(src), str(src.parent / "timm.pth"), "--force"])
    assert not list(src.parent.glob("*.tmp*"))  # written atomically
    # a truncated file, a text file, another project's checkpoint: one line naming the file
    (tmp_path / "cut.pt").write_bytes(src.read_bytes()[:200])
    (tmp_path / "notes.txt").write_text("hello")
    torch.save({"model": model.state_dict(), "project": "ezvsl"}, tmp_path / "other.pt")
    torch.save({"model": {"decoder.w": torch.zeros(1)}}, tmp_path / "nodec.pt")
    for name, match in [("cut.pt", "cut.pt"), ("notes.txt", "notes.txt"), ("other.pt", "project 'ezvsl'"),
                        ("nodec.pt", "nodec.pt is not a Latent MIM")]:
        with pytest.raises(CheckpointError, match=match):
            convert.main([str(tmp_path / name), str(tmp_path / "x.pth")])
