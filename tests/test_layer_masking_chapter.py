"""The layer-masking chapter's method, loaded from its `method` cells, against an independent loop-by-loop
implementation of the fill of the official code (`fast_fmm`), a hand-checked one-convolution case, and the
identities that make layer masking a drop-in: an all-ones mask gives the ordinary network, and the global pool
averages over kept positions only."""
import numpy as np
import pytest
import torch

from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("layer-masking")


def loop_fill(h, keep, iterations, eps=1e-5):
    """The neighbour fill written with explicit loops over pixels (zero outside the image)."""
    h, keep = (h * keep).copy(), keep.copy()
    channels, rows, cols = h.shape
    for _ in range(iterations):
        total = np.zeros_like(h)
        count = np.zeros_like(keep)
        for i in range(rows):
            for j in range(cols):
                for di in (-1, 0, 1):
                    for dj in (-1, 0, 1):
                        a, b = i + di, j + dj
                        if 0 <= a < rows and 0 <= b < cols:
                            total[:, i, j] += h[:, a, b]
                            count[i, j] += keep[a, b]
        h = h + (1 - keep)[None] * total / (count[None] + eps)
        keep = np.minimum(keep + count, 1.0)
    return h


def test_fill_matches_a_loop_implementation(method):
    generator = torch.Generator().manual_seed(0)
    h = torch.rand(1, 3, 7, 7, generator=generator, dtype=torch.float64)
    keep = (torch.rand(1, 1, 7, 7, generator=generator) > 0.5).double()
    for iterations in (0, 1, 3):
        ours = method.fill_removed(h, keep, iterations)[0].numpy()
        reference = loop_fill(h[0].numpy(), keep[0, 0].numpy(), iterations)
        np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-12)
    # kept positions are never changed by the fill
    filled = method.fill_removed(h, keep, 3)
    assert torch.equal(filled * keep, h * keep)


def test_one_convolution_with_a_hidden_corner(method):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 2, 3, padding=1).double()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    keep = torch.ones_like(x)
    keep[..., 0, 0] = 0.0
    out, new_keep = method.masked_conv(conv, x * keep, keep)
    plain = conv(x)
    # a window that does not reach the hidden corner sees exactly the input
    far = torch.ones(6, 6, dtype=torch.bool)
    far[:2, :2] = False
    assert torch.allclose(out[0][:, far], plain[0][:, far], atol=1e-12)
    # the hidden pixel's value never matters: changing it leaves the output unchanged
    x_changed = x.clone()
    x_changed[..., 0, 0] = 7.0
    assert torch.allclose(method.masked_conv(conv, x_changed * keep, keep)[0], out, atol=1e-12)
    # a single hidden pixel is covered by the 3x3 windows of its kept neighbours: all of the output is kept
    assert torch.equal(new_keep, torch.ones_like(keep))
    # with the corner filled by the mean of its three kept neighbours, the conv is the ordinary one
    x_filled = x.clone()
    x_filled[..., 0, 0] = (x[..., 0, 1] + x[..., 1, 0] + x[..., 1, 1]) / 3
    assert torch.allclose(out, conv(x_filled), atol=1e-5)


def test_global_average_renormalises_by_the_kept_area(method):
    h = torch.arange(16.0).reshape(1, 1, 4, 4)
    keep = torch.zeros_like(h)
    keep[..., :2, :] = 1.0
    assert torch.allclose(method.masked_global_average(h, keep), h[..., :2, :].mean().reshape(1, 1))
    assert torch.allclose(method.masked_global_average(h, torch.ones_like(h)), h.mean().reshape(1, 1))


def test_all_ones_mask_is_the_ordinary_network_and_the_hidden_pixels_never_matter(method):
    torch.manual_seed(1)
    model = method.MaskableCNN(8, pixel_mean=0.3, pixel_std=0.2).eval()
    x = torch.rand(4, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(model(x, torch.ones_like(x)), model(x), atol=1e-5)
        keep = torch.ones_like(x)
        keep[..., 3:8, 2:9] = 0.0
        changed = x.clone()
        changed[..., 3:8, 2:9] = torch.rand(4, 1, 5, 7)
        assert torch.allclose(model(x, keep), model(changed, keep), atol=1e-6)
        # colour masking, by contrast, depends on the paint
        assert not torch.allclose(model(method.colour_mask(x, keep, 0.0)), model(method.colour_mask(x, keep, 0.5)))
