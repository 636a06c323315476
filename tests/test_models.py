"""perturb.models against independent computations: torch's own multi-head attention and scaled dot-product
attention, a hand-written softmax(QK^T / sqrt(d)) V, a hand-written rollout product, and the symmetry that a
transformer without position embeddings must have."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perturb.models import SmallCNN, TinyViT, as_images, attention_rollout, num_parameters, small_cnn


def seeded_vit(seed=0, **kwargs):
    torch.manual_seed(seed)
    options = dict(image_size=8, patch_size=2, dim=32, depth=2, heads=4, num_classes=10)
    options.update(kwargs)
    return TinyViT(**options).eval()


def test_output_and_attention_shapes_and_rows_sum_to_one():
    model = seeded_vit(depth=3)
    x = torch.rand(5, 64)
    logits, attentions = model(x, return_attention=True)
    assert logits.shape == (5, 10)
    assert len(attentions) == 3
    for attention in attentions:
        assert attention.shape == (5, 4, 17, 17)
        assert torch.all(attention >= 0)
        torch.testing.assert_close(attention.sum(-1), torch.ones(5, 4, 17))
    torch.testing.assert_close(model(x), logits)


def test_flat_and_image_inputs_agree_and_bad_shapes_are_refused():
    vit, cnn = seeded_vit(), small_cnn().eval()
    x = torch.rand(3, 64)
    for model in (vit, cnn):
        torch.testing.assert_close(model(x), model(x.reshape(3, 1, 8, 8)))
        with pytest.raises(ValueError):
            model(torch.rand(3, 63))
    with pytest.raises(ValueError):
        as_images(torch.rand(2, 1, 4, 8), 1, 8)


def test_patchify_reads_grid_cells_in_row_major_order():
    model = seeded_vit()
    image = torch.arange(64.0).reshape(1, 64)
    patches = model.patchify(image)
    assert patches.shape == (1, 16, 4)
    grid = image.reshape(8, 8)
    for cell in range(16):
        row, col = divmod(cell, 4)
        torch.testing.assert_close(patches[0, cell], grid[2 * row:2 * row + 2, 2 * col:2 * col + 2].reshape(4))


def test_attention_matches_torch_multihead_attention_and_sdpa():
    torch.manual_seed(1)
    model = seeded_vit(seed=1)
    attn = model.blocks[0].attn
    h = torch.randn(4, 17, 32)
    out, weights = attn(h)

    reference = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(attn.qkv.weight)
        reference.in_proj_bias.copy_(attn.qkv.bias)
        reference.out_proj.weight.copy_(attn.proj.weight)
        reference.out_proj.bias.copy_(attn.proj.bias)
    ref_out, ref_weights = reference(h, h, h, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)

    # The same with F.scaled_dot_product_attention and with a hand-written softmax(QK^T / sqrt(d)) V.
    q, k, v = attn.qkv(h).reshape(4, 17, 3, 4, 8).permute(2, 0, 3, 1, 4)
    sdpa = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(4, 17, 32)
    torch.testing.assert_close(out, attn.proj(sdpa), atol=1e-5, rtol=1e-5)
    manual = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    torch.testing.assert_close(weights, manual)


def test_temperature_flattens_attention_and_matches_scaled_logits():
    model = seeded_vit(seed=2)
    x = torch.rand(3, 64)
    _, sharp = model(x, return_attention=True)
    model.set_temperature(2.0)
    _, flat = model(x, return_attention=True)
    attn = model.blocks[0].attn
    h = model.blocks[0].norm1(model.tokens(x))
    q, k, v = attn.qkv(h).reshape(3, 17, 3, 4, 8).permute(2, 0, 3, 1, 4)
    expected = F.scaled_dot_product_attention(q, k, v, scale=1 / (math.sqrt(8) * 2.0))
    _, weights = attn(h)
    torch.testing.assert_close((weights @ v), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(flat[0], weights)

    def entropy(a):
        return -(a * a.clamp_min(1e-12).log()).sum(-1).mean()
    assert entropy(flat[0]) > entropy(sharp[0])
    model.set_temperature(1e6)
    _, uniform = model(x, return_attention=True)
    torch.testing.assert_close(uniform[-1], torch.full_like(uniform[-1], 1 / 17), atol=1e-4, rtol=0)


def permute_patches(x, order, grid=4, patch=2):
    """Move patch order[t] of each image to position t (images as flat 8x8 rows)."""
    images = x.reshape(len(x), grid, patch, grid, patch).permute(0, 1, 3, 2, 4).reshape(len(x), grid * grid, -1)
    shuffled = images[:, order].reshape(len(x), grid, grid, patch, patch).permute(0, 1, 3, 2, 4)
    return shuffled.reshape(len(x), -1)


def test_without_positions_the_vit_is_permutation_invariant_and_attention_equivariant():
    model = seeded_vit(seed=3, position_embedding=False)
    x = torch.rand(4, 64)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    logits, attentions = model(x, return_attention=True)
    shuffled = permute_patches(x, order)
    torch.testing.assert_close(model.patchify(shuffled), model.patchify(x)[:, order])
    logits_p, attentions_p = model(shuffled, return_attention=True)
    torch.testing.assert_close(logits_p, logits, atol=1e-5, rtol=1e-5)
    tokens = torch.cat([torch.zeros(1, dtype=torch.long), order + 1])   # the class token stays first
    for a, a_p in zip(attentions, attentions_p):
        torch.testing.assert_close(a_p, a[:, :, tokens][:, :, :, tokens], atol=1e-6, rtol=1e-5)
    # With learned position embeddings the same shuffle changes the output.
    positioned = seeded_vit(seed=3)
    with torch.no_grad():
        positioned.pos_embed.normal_(0, 1.0)
    assert not torch.allclose(positioned(shuffled), positioned(x), atol=1e-3)


def test_rollout_matches_manual_product():
    model = seeded_vit(seed=4, depth=3)
    _, attentions = model(torch.rand(2, 64), return_attention=True)
    eye = torch.eye(17)
    layers = [0.5 * eye + 0.5 * a.mean(1) for a in attentions]
    manual = layers[2] @ layers[1] @ layers[0]
    rollout = attention_rollout(attentions)
    torch.testing.assert_close(rollout, manual)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 17))
    torch.testing.assert_close(attention_rollout(attentions, residual=1.0), eye.expand(2, 17, 17))


def test_small_cnn_size_and_gradients_reach_the_input():
    cnn = small_cnn()
    assert isinstance(cnn, SmallCNN)
    assert 10_000 < num_parameters(cnn) < 20_000
    assert 10_000 < num_parameters(seeded_vit()) < 30_000
    for model in (cnn.eval(), seeded_vit()):
        x = torch.rand(3, 64, requires_grad=True)
        model(x).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_vit_rejects_inconsistent_sizes():
    with pytest.raises(ValueError):
        TinyViT(image_size=8, patch_size=3)
    with pytest.raises(ValueError):
        TinyViT(dim=30, heads=4)
