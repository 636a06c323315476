"""The causal-minimax-invariance chapter's method, loaded from its `method` cells, against independent references:
equivalence classes of stable subsets against a separately written d-separation test (moralised ancestral graph),
the graphical condition on the companion graph, the exact quadrature risk against Monte Carlo with a fine-grid
posterior, closed-form Gaussian Bayes risks, and the linear additive control's invariance to interventions."""
import itertools

import networkx as nx
import numpy as np
import pytest

from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("causal-minimax-invariance")


def d_separated(graph, x, y, given):
    """Lauritzen's criterion: x and y are d-separated by `given` iff they are disconnected in the moralised
    ancestral graph of {x, y} and `given` once `given` is removed."""
    keep = {x, y} | set(given)
    for v in list(keep):
        keep |= nx.ancestors(graph, v)
    sub = graph.subgraph(keep)
    moral = nx.Graph(sub.to_undirected())
    for v in sub:
        for a, b in itertools.combinations(list(sub.predecessors(v)), 2):
            moral.add_edge(a, b)
    moral.remove_nodes_from(given)
    return not nx.has_path(moral, x, y)


def test_graphical_condition_fails_on_the_companion_graph(method):
    mutable, mutable_children, k, holds = method.graphical_condition(method.GRAPH)
    assert mutable == {"M"} and mutable_children == {"M"} and k == {"X"} and not holds
    # Remove the edge Y -> X: X is no longer a child of Y and the condition holds.
    graph = method.GRAPH.copy()
    graph.remove_edge("Y", "X")
    assert method.graphical_condition(graph)[3]


def test_equivalence_classes_match_an_independent_d_separation(method):
    graph_do = method.do_graph(method.GRAPH)
    assert set(graph_do.predecessors("M")) == set() and "E" not in graph_do
    classes = method.equivalence_classes(method.GRAPH)
    for rep, members in classes.items():
        for subset in members:
            boundary = frozenset(v for v in subset
                                 if not d_separated(graph_do, "Y", v, (set(subset) - {v}) | {"M"}))
            assert boundary == rep
    assert sorted(len(m) for m in classes.values()) == [1, 1, 1, 1, 2, 2, 2, 2, 4]


def test_exact_risk_against_monte_carlo(method):
    rng = np.random.default_rng(0)
    y_grid = np.linspace(-6, 6, 2001)
    whole = frozenset({"X", "V", "Z"})
    for y, m in [(2.5, 0.75), (-3.0, -1.0), (0.5, 2.0)]:
        n = 4000
        v, ex, ez = rng.standard_normal((3, n))
        x, z = (y - m) ** 2 + v + method.NOISE_X * ex, y + method.SIGMA_Z * ez
        log_post = (-0.5 * y_grid ** 2 - 0.5 * (x[:, None] - v[:, None] - (y_grid - m) ** 2) ** 2 / method.NOISE_X ** 2
                    - 0.5 * (z[:, None] - y_grid) ** 2 / method.SIGMA_Z ** 2)
        post = np.exp(log_post - log_post.max(1, keepdims=True))
        mc = np.mean((y - (post * y_grid).sum(1) / post.sum(1)) ** 2)
        exact = method.risk_map(whole, np.array([y]), np.array([m]))[0, 0]
        assert abs(exact - mc) <= 0.08 * mc + 0.02, (y, m, exact, mc)


def test_gaussian_bayes_risks_and_linear_control(method):
    y = np.linspace(-4.5, 4.5, 61)
    w = np.exp(-0.5 * y ** 2)
    w /= w.sum()
    m = np.linspace(-3, 3, 7)
    z_risk = method.risk_map(frozenset({"Z"}), y, m)
    assert np.allclose(z_risk, z_risk[:, :1]) and abs(w @ z_risk[:, 0] - 0.8) < 1e-3
    lin = method.risk_map(frozenset({"X", "V", "Z"}), y, m, linear=True)
    assert np.allclose(lin, lin[:, :1], atol=1e-6)
    assert abs(w @ lin[:, 0] - 1 / (1 + 1 / method.NOISE_X ** 2 + 1 / method.SIGMA_Z ** 2)) < 2e-3
    # the nonlinear whole set is not invariant: its worst case exceeds its average over m
    nonlin = method.risk_map(frozenset({"X", "V", "Z"}), y, m)
    assert w @ nonlin.max(1) > 1.1 * (w @ nonlin.mean(1))
