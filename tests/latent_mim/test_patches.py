import pytest
import torch

from projects.latent_mim.patches import official_grid_pos_embed, patchify, unpatchify

pytestmark = pytest.mark.timeout(60)


def coordinate_image(b, c, h, w):
    """Pixel value encodes (channel, row, col) so each patch element says where it came from."""
    ch = torch.arange(c).view(1, c, 1, 1) * 1_000_000
    r = torch.arange(h).view(1, 1, h, 1) * 1000
    col = torch.arange(w).view(1, 1, 1, w)
    return (ch + r + col).expand(b, c, h, w).double()


def test_gap_patches_lie_inside_their_cells_as_contiguous_squares():
    p, gap, grid, c = 16, 4, 14, 3
    img = coordinate_image(2, c, grid * (p + gap), grid * (p + gap))
    x = patchify(img, p, gap, torch.Generator().manual_seed(0))
    assert x.shape == (2, grid * grid, p * p * c)
    v = x.view(2, grid * grid, p, p, c)  # (row, col, channel) order
    ch, rows, cols = v // 1_000_000, (v % 1_000_000) // 1000, v % 1000
    assert torch.equal(ch, torch.arange(c).view(1, 1, 1, 1, c).expand_as(ch))
    offsets_r, offsets_c = set(), set()
    for i in range(grid * grid):
        gr, gc = divmod(i, grid)
        r0, c0 = rows[:, i, 0, 0, 0], cols[:, i, 0, 0, 0]
        assert ((r0 >= gr * 20) & (r0 + p - 1 < gr * 20 + 20)).all()
        assert ((c0 >= gc * 20) & (c0 + p - 1 < gc * 20 + 20)).all()
        assert torch.equal(rows[:, i, :, 0, 0] - r0[:, None], torch.arange(p).double().expand(2, p))
        assert torch.equal(cols[:, i, 0, :, 0] - c0[:, None], torch.arange(p).double().expand(2, p))
        offsets_r |= set((r0 - gr * 20).long().tolist())
        offsets_c |= set((c0 - gc * 20).long().tolist())
    assert offsets_r == set(range(gap)) and offsets_c == set(range(gap))  # random offsets cover 0..gap-1


def test_offsets_differ_between_images_and_follow_the_generator():
    img = coordinate_image(2, 3, 280, 280)
    a = patchify(img, 16, 4, torch.Generator().manual_seed(1))
    b = patchify(img, 16, 4, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # same image content, independent offsets per image


def test_gap_zero_on_224_is_the_plain_grid_and_inverts():
    img = torch.randn(2, 3, 224, 224)
    x = patchify(img, 16, 0)
    ref = img.reshape(2, 3, 14, 16, 14, 16).permute(0, 2, 4, 3, 5, 1).reshape(2, 196, 768)  # nchpwq -> nhwpqc
    assert torch.equal(x, ref)
    assert torch.equal(unpatchify(x, 16, (14, 14), 3), img)


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of the cell size 20"):
        patchify(torch.randn(1, 3, 224, 224), 16, 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        patchify(torch.randn(3, 224, 224), 16, 0)


def official_pos_embed(grid, dim):
    """The official AbsolutePositionEmbeds + SinCosPEs (vits.py), re-implemented from reading it."""
    L = grid * grid + 1
    table = torch.zeros(L, dim)
    loc = torch.stack(torch.meshgrid(torch.linspace(0, 1, grid), torch.linspace(0, 1, grid), indexing="ij"), 2).flatten(0, 1)
    y, x = loc.chunk(2, dim=-1)

    def emb(pos):
        omega = torch.arange(dim // 4) / dim * 4.0
        omega = 1.0 / 10000 ** omega
        scaled = (pos - 0.0) * ((grid - 0.0) / (1.0 - 0.0)) + 0.0
        out = torch.einsum("ml,d->mld", scaled, omega)
        return torch.cat((torch.sin(out), torch.cos(out)), dim=-1)

    table[1:] = torch.cat((emb(x), emb(y)), dim=-1).squeeze(1)
    return table


@pytest.mark.parametrize("grid,dim", [(14, 768), (7, 64)])
def test_positions_are_the_official_grid(grid, dim):
    ours = official_grid_pos_embed((grid, grid), dim)
    torch.testing.assert_close(ours, official_pos_embed(grid, dim), atol=2e-5, rtol=0)
    assert torch.equal(ours[0], torch.zeros(dim))
    # spacing: patch (0, 1) has column coordinate grid/(grid-1), not 1
    col = ours[2, : dim // 4]
    torch.testing.assert_close(col[0], torch.tensor(grid / (grid - 1)).sin(), atol=1e-6, rtol=0)
