"""perturb.bounds (IBP, CROWN, CROWN-IBP on node graphs) against independent references: the interval certifier
of the Adversarial Robustness Toolbox (IBP), sampling (soundness of CROWN and CROWN-IBP, on chains and on a graph
with addition nodes) and the exact MILP verifier of perturb.milp (IBP <= CROWN <= exact)."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from perturb import bounds, milp
from perturb.attacks import input_box
from perturb.data import load_digits
from perturb.training import mlp


def random_mlp(widths, seed, dtype=torch.float64):
    torch.manual_seed(seed)
    return mlp(widths).to(dtype)


def sampled_spec_values(forward, spec, x_lower, x_upper, num_samples, generator):
    """spec @ f at random points of each box, half inside uniformly, half at corners: (batch, samples, m)."""
    shape = (len(x_lower), num_samples, x_lower.shape[1])
    uniform = torch.rand(shape, generator=generator, dtype=x_lower.dtype)
    corners = (torch.rand(shape, generator=generator) < 0.5).to(x_lower.dtype)
    fraction = torch.cat([uniform[:, : num_samples // 2], corners[:, num_samples // 2:]], dim=1)
    points = x_lower[:, None] + fraction * (x_upper - x_lower)[:, None]
    with torch.no_grad():
        outputs = forward(points.reshape(-1, x_lower.shape[1])).reshape(len(x_lower), num_samples, -1)
    return torch.einsum("bmk,bsk->bsm", spec, outputs)


def test_graph_of_an_mlp_evaluates_to_the_model():
    model = random_mlp([5, 7, 7, 3], seed=0)
    x = torch.rand(4, 5, dtype=torch.float64)
    graph = bounds.graph_of(model)
    assert [node.op for node in graph] == ["input", "linear", "relu", "linear", "relu", "linear"]
    with torch.no_grad():
        assert torch.allclose(bounds.evaluate(graph, x)[graph[-1].name], model(x))


def test_margin_spec_rows_are_true_minus_other_class():
    y = torch.tensor([0, 3])
    spec = bounds.margin_spec(y, 4)
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    margins = (spec @ logits[..., None]).squeeze(-1)
    assert torch.equal(margins, torch.tensor([[-1.0, -2.0, -3.0], [3.0, 2.0, 1.0]]))


def test_ibp_matches_adversarial_robustness_toolbox():
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
    graph = bounds.graph_of(model)
    with torch.no_grad():
        lower, upper = bounds.ibp_bounds(graph, x_lower, x_upper)[graph[-1].name]
    np.testing.assert_allclose(lower.numpy(), art_bounds[:, 0], atol=1e-5)
    np.testing.assert_allclose(upper.numpy(), art_bounds[:, 1], atol=1e-5)


@pytest.mark.parametrize("intermediate", ["crown", "ibp"])
def test_crown_lower_bounds_are_never_above_sampled_values(intermediate):
    model = random_mlp([8, 24, 24, 5], seed=1)
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(16, 8, generator=generator, dtype=torch.float64)
    x_lower, x_upper = input_box(x, 0.15)
    spec = torch.randn(16, 4, 5, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        bound = bounds.crown_margin_lower(bounds.graph_of(model), x_lower, x_upper, spec, intermediate)
    values = sampled_spec_values(model, spec, x_lower, x_upper, 4000, generator)
    assert torch.all(bound[:, None, :] <= values + 1e-9)
    # The bound is informative: within a moderate distance of the smallest sampled value.
    assert torch.all(values.min(1).values - bound < 5.0)


def test_preactivation_bounds_contain_every_sampled_preactivation():
    model = random_mlp([6, 16, 16, 16, 3], seed=7)
    generator = torch.Generator().manual_seed(8)
    x = torch.rand(5, 6, generator=generator, dtype=torch.float64)
    x_lower, x_upper = input_box(x, 0.2)
    graph = bounds.graph_of(model)
    fraction = torch.rand(5, 2000, 6, generator=generator, dtype=torch.float64)
    points = x_lower[:, None] + fraction * (x_upper - x_lower)[:, None]
    with torch.no_grad():
        values = bounds.evaluate(graph, points.reshape(-1, 6))
        crown = bounds.preactivation_bounds(graph, x_lower, x_upper, "crown")
        ibp = bounds.preactivation_bounds(graph, x_lower, x_upper, "ibp")
    assert list(crown) == list(ibp) == ["linear0", "linear2", "linear4"]
    for name, (lower, upper) in crown.items():
        sampled = values[name].reshape(5, 2000, -1)
        assert torch.all(lower[:, None] <= sampled + 1e-9) and torch.all(sampled <= upper[:, None] + 1e-9)
        # Not a theorem neuron by neuron, but for this seeded network CROWN narrows every layer in total.
        width_crown, width_ibp = (upper - lower).sum(), (ibp[name][1] - ibp[name][0]).sum()
        assert width_crown <= width_ibp + 1e-9


def test_bounds_on_a_graph_with_addition_nodes_are_sound():
    torch.manual_seed(3)
    stem, inner, outer, head = nn.Linear(6, 12), nn.Linear(12, 12), nn.Linear(12, 12), nn.Linear(12, 4)
    graph = [bounds.Node("x", "input"),
             bounds.Node("stem", "linear", ("x",), stem.weight.double(), stem.bias.double()),
             bounds.Node("inner", "linear", ("stem",), inner.weight.double(), inner.bias.double()),
             bounds.Node("relu", "relu", ("inner",)),
             bounds.Node("outer", "linear", ("relu",), outer.weight.double(), outer.bias.double()),
             bounds.Node("add", "add", ("stem", "outer")),
             bounds.Node("relu_out", "relu", ("add",)),
             bounds.Node("head", "linear", ("relu_out",), head.weight.double(), head.bias.double())]
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(12, 6, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        # The graph's forward pass is the obvious residual computation.
        z = x @ graph[1].weight.T + graph[1].bias
        z = z + torch.relu(z @ graph[2].weight.T + graph[2].bias) @ graph[4].weight.T + graph[4].bias
        expected = torch.relu(z) @ graph[-1].weight.T + graph[-1].bias
        assert torch.allclose(bounds.evaluate(graph, x)["head"], expected)
        x_lower, x_upper = input_box(x, 0.1)
        spec = torch.randn(12, 3, 4, generator=generator, dtype=torch.float64)
        crown = bounds.crown_margin_lower(graph, x_lower, x_upper, spec)
        crown_ibp = bounds.crown_margin_lower(graph, x_lower, x_upper, spec, "ibp")
        ibp = bounds.ibp_margin_lower(graph, x_lower, x_upper, spec)
    values = sampled_spec_values(lambda p: bounds.evaluate(graph, p)["head"], spec, x_lower, x_upper, 4000, generator)
    for bound in (crown, crown_ibp, ibp):
        assert torch.all(bound[:, None, :] <= values + 1e-9)


def test_ibp_below_crown_below_exact_milp():
    # Not a theorem for every network and specification, but for this seeded one the ordering is strict.
    model = random_mlp([10, 20, 20, 4], seed=5)
    generator = torch.Generator().manual_seed(6)
    x = torch.rand(3, 10, generator=generator, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    x_lower, x_upper = input_box(x, 0.1)
    spec = bounds.margin_spec(y, 4).double()
    graph = bounds.graph_of(model)
    with torch.no_grad():
        ibp = bounds.ibp_margin_lower(graph, x_lower, x_upper, spec)
        intervals = bounds.preactivation_bounds(graph, x_lower, x_upper, "crown")
        crown = bounds.backward_lower_bound(graph, graph[-1].name, spec, x_lower, x_upper, intervals)
    layers = [(layer.weight, layer.bias) for layer in model if isinstance(layer, nn.Linear)]
    for i in range(len(x)):
        intervals_i = [(lo[i].numpy(), hi[i].numpy()) for lo, hi in intervals.values()]
        for j in range(spec.shape[1]):
            exact = milp.minimize_linear(layers, spec[i, j].numpy(), x_lower[i].numpy(), x_upper[i].numpy(),
                                         intervals_i)
            assert ibp[i, j] <= crown[i, j] + 1e-9
            assert crown[i, j] <= exact.value + 1e-7
            assert exact.num_binary > 0  # the box leaves some ReLUs undecided, so the relaxation matters


def test_margin_lower_bound_methods_and_their_order():
    model = random_mlp([8, 16, 16, 4], seed=9)
    generator = torch.Generator().manual_seed(10)
    x = torch.rand(6, 8, generator=generator, dtype=torch.float64)
    y = torch.arange(6) % 4
    with torch.no_grad():
        found = {m: bounds.margin_lower_bound(model, x, y, 0.05, m, num_classes=4)
                 for m in ("ibp", "crown-ibp", "crown")}
        # At eps = 0 every bound is the margin itself.
        exact = (bounds.margin_spec(y, 4).double() @ model(x)[..., None]).squeeze(-1)
        for method in found:
            assert torch.allclose(bounds.margin_lower_bound(model, x, y, 0.0, method, num_classes=4), exact)
    assert all(b.shape == (6, 3) for b in found.values())
    assert torch.all(found["ibp"] <= found["crown"] + 1e-9)
    with pytest.raises(ValueError):
        bounds.margin_lower_bound(model, x, y, 0.05, "lp")


def test_bounds_are_differentiable_in_the_weights():
    model = mlp([8, 12, 4])
    x = torch.rand(3, 8)
    y = torch.tensor([0, 1, 2])
    bound = bounds.margin_lower_bound(model, x, y, 0.1, "crown-ibp", num_classes=4)
    bound.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
