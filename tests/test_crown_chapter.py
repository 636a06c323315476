"""The CROWN chapter's own `method` cells (certified training loss, a residual network defined by its graph) on
top of perturb.bounds; the bound propagation itself is tested against independent references in
tests/test_bounds.py."""
import pytest
import torch
from torch import nn

from perturb import bounds
from perturb.attacks import input_box
from perturb.data import load_digits
from perturb.harness.notebook_code import load_method
from perturb.training import mlp


@pytest.fixture(scope="module")
def method():
    return load_method("crown-bound-propagation")


def test_the_chapter_runs_the_shared_bound_propagation(method):
    # One copy of the code: the chapter imports its bounds from perturb.bounds instead of defining its own.
    for name in ("Node", "graph_of", "evaluate", "margin_spec", "ibp_margin_lower", "crown_margin_lower"):
        assert getattr(method, name) is getattr(bounds, name)


def test_residual_graph_bounds_are_sound_and_match_its_forward(method):
    torch.manual_seed(3)
    model = method.ResidualMLP(6, 16, 4, blocks=2).double()
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(12, 6, generator=generator, dtype=torch.float64)
    # The graph's forward pass is the obvious residual computation.
    z = model.stem(x)
    for inner, outer in zip(model.inner, model.outer):
        z = z + outer(torch.relu(inner(z)))
    assert torch.allclose(model(x), model.head(torch.relu(z)))
    x_lower, x_upper = input_box(x, 0.1)
    spec = torch.randn(12, 3, 4, generator=generator, dtype=torch.float64)
    graph = bounds.graph_of(model)
    with torch.no_grad():
        crown = bounds.crown_margin_lower(graph, x_lower, x_upper, spec)
        ibp = bounds.ibp_margin_lower(graph, x_lower, x_upper, spec)
    shape = (len(x), 4000, x.shape[1])
    uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
    corners = (torch.rand(shape, generator=generator) < 0.5).double()
    fraction = torch.cat([uniform[:, :2000], corners[:, 2000:]], dim=1)
    points = x_lower[:, None] + fraction * (x_upper - x_lower)[:, None]
    with torch.no_grad():
        values = torch.einsum("bmk,bsk->bsm", spec, model(points.reshape(-1, 6)).reshape(len(x), 4000, -1))
    assert torch.all(crown[:, None, :] <= values + 1e-9)
    assert torch.all(ibp[:, None, :] <= values + 1e-9)


def test_certified_loss_is_differentiable_and_upper_bounds_natural_worst_case(method):
    model = mlp([64, 16, 10])
    split = load_digits()
    x, y = split.X_train[:32], split.y_train[:32]
    loss = method.certified_loss(model, x, y, eps=0.05, kappa=0.0, beta=0.5)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # At eps = 0 the robust term is the ordinary cross-entropy of the margins, i.e. the natural loss.
    natural = nn.functional.cross_entropy(model(x), y)
    robust_at_zero = method.certified_loss(model, x, y, eps=0.0, kappa=0.0, beta=1.0)
    assert torch.allclose(robust_at_zero, natural, atol=1e-5)
