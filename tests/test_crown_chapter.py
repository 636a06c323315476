"""The CROWN chapter's own bound propagation, loaded from its `method` cells, against independent references:
the interval certifier of the Adversarial Robustness Toolbox (IBP), sampling (soundness of CROWN) and the exact
MILP verifier of perturb.milp (IBP <= CROWN <= exact)."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from perturb import milp
from perturb.attacks import input_box
from perturb.data import load_digits
from perturb.notebook_code import load_method
from perturb.training import mlp


@pytest.fixture(scope="module")
def method():
    return load_method("crown-bound-propagation")


def random_mlp(widths, seed, dtype=torch.float64):
    torch.manual_seed(seed)
    return mlp(widths).to(dtype)


def sampled_spec_values(model, spec, x_lower, x_upper, num_samples, generator):
    """spec @ f at random points of each box, half inside uniformly, half at corners: (batch, samples, m)."""
    shape = (len(x_lower), num_samples, x_lower.shape[1])
    uniform = torch.rand(shape, generator=generator, dtype=x_lower.dtype)
    corners = (torch.rand(shape, generator=generator) < 0.5).to(x_lower.dtype)
    fraction = torch.cat([uniform[:, : num_samples // 2], corners[:, num_samples // 2:]], dim=1)
    points = x_lower[:, None] + fraction * (x_upper - x_lower)[:, None]
    with torch.no_grad():
        outputs = model(points.reshape(-1, x_lower.shape[1])).reshape(len(x_lower), num_samples, -1)
    return torch.einsum("bmk,bsk->bsm", spec, outputs)


def test_ibp_matches_adversarial_robustness_toolbox(method):
    from art.estimators.certification.interval import PyTorchIBPClassifier

    torch.manual_seed(0)
    model = mlp([64, 32, 32, 10])  # Linear/ReLU only: ART's converter does not accept a leading Flatten
    x = load_digits().X_test[:20]
    eps = 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art_model = PyTorchIBPClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(64,),
                                         nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
        art_bounds = art_model.predict_intervals(x.numpy(), bounds=eps, limits=[0.0, 1.0])
    x_lower, x_upper = input_box(x, eps)
    with torch.no_grad():
        lower, upper = method.ibp_bounds(method.graph_of(model), x_lower, x_upper)[method.graph_of(model)[-1].name]
    np.testing.assert_allclose(lower.numpy(), art_bounds[:, 0], atol=1e-5)
    np.testing.assert_allclose(upper.numpy(), art_bounds[:, 1], atol=1e-5)


@pytest.mark.parametrize("intermediate", ["crown", "ibp"])
def test_crown_lower_bounds_are_never_above_sampled_values(method, intermediate):
    model = random_mlp([8, 24, 24, 5], seed=1)
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(16, 8, generator=generator, dtype=torch.float64)
    x_lower, x_upper = input_box(x, 0.15)
    spec = torch.randn(16, 4, 5, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        bound = method.crown_margin_lower(method.graph_of(model), x_lower, x_upper, spec, intermediate)
    values = sampled_spec_values(model, spec, x_lower, x_upper, 4000, generator)
    assert torch.all(bound[:, None, :] <= values + 1e-9)
    # The bound is informative: within a moderate distance of the smallest sampled value.
    assert torch.all(values.min(1).values - bound < 5.0)


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
    graph = method.graph_of(model)
    with torch.no_grad():
        crown = method.crown_margin_lower(graph, x_lower, x_upper, spec)
        ibp = method.ibp_margin_lower(graph, x_lower, x_upper, spec)
    values = sampled_spec_values(model, spec, x_lower, x_upper, 4000, generator)
    assert torch.all(crown[:, None, :] <= values + 1e-9)
    assert torch.all(ibp[:, None, :] <= values + 1e-9)


def test_ibp_below_crown_below_exact_milp(method):
    # Not a theorem for every network and specification, but for this seeded one the ordering is strict.
    model = random_mlp([10, 20, 20, 4], seed=5)
    generator = torch.Generator().manual_seed(6)
    x = torch.rand(3, 10, generator=generator, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    x_lower, x_upper = input_box(x, 0.1)
    spec = method.margin_spec(y, 4).double()
    graph = method.graph_of(model)
    with torch.no_grad():
        ibp = method.ibp_margin_lower(graph, x_lower, x_upper, spec)
        intervals = method.preactivation_bounds(graph, x_lower, x_upper, "crown")
        crown = method.backward_lower_bound(graph, graph[-1].name, spec, x_lower, x_upper, intervals)
    layers = [(layer.weight, layer.bias) for layer in model if isinstance(layer, nn.Linear)]
    for i in range(len(x)):
        bounds = [(lo[i].numpy(), hi[i].numpy()) for lo, hi in intervals.values()]
        for j in range(spec.shape[1]):
            exact = milp.minimize_linear(layers, spec[i, j].numpy(), x_lower[i].numpy(), x_upper[i].numpy(), bounds)
            assert ibp[i, j] <= crown[i, j] + 1e-9
            assert crown[i, j] <= exact.value + 1e-7
            assert exact.num_binary > 0  # the box leaves some ReLUs undecided, so the relaxation matters


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
