"""The exact MILP verifier against brute force on networks small enough to enumerate."""
import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from perturb import milp


def random_layers(widths, seed):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(n_out, n_in)) / np.sqrt(n_in), rng.normal(size=n_out) * 0.3)
            for n_in, n_out in zip(widths[:-1], widths[1:])]


def affine_pieces(layers, pattern):
    """For a fixed on/off pattern of every hidden neuron: each hidden pre-activation and the output as affine
    maps of x, i.e. lists of (A, a) with value A @ x + a."""
    n_in = layers[0][0].shape[1]
    A, a = np.eye(n_in), np.zeros(n_in)
    pre = []
    start = 0
    for weight, bias in layers[:-1]:
        z_A, z_a = weight @ A, weight @ a + bias
        pre.append((z_A, z_a))
        on = np.asarray(pattern[start:start + weight.shape[0]], dtype=float)
        start += weight.shape[0]
        A, a = on[:, None] * z_A, on * z_a
    weight, bias = layers[-1]
    return pre, (weight @ A, weight @ a + bias)


def brute_force_min(layers, c, x_lower, x_upper):
    """Minimum of c @ f(x) over the box: one LP per activation pattern (the network is affine on each)."""
    num_hidden = sum(w.shape[0] for w, _ in layers[:-1])
    best = np.inf
    for pattern in itertools.product((0, 1), repeat=num_hidden):
        pre, (out_A, out_a) = affine_pieces(layers, pattern)
        signs = 1.0 - 2.0 * np.asarray(pattern, dtype=float)  # on: z >= 0 -> -z <= 0; off: z <= 0
        z_A = np.vstack([p[0] for p in pre])
        z_a = np.concatenate([p[1] for p in pre])
        res = linprog(c @ out_A, A_ub=signs[:, None] * z_A, b_ub=-signs * z_a,
                      bounds=list(zip(x_lower, x_upper)), method="highs")
        if res.status == 0:
            best = min(best, res.fun + c @ out_a)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_enumeration_of_activation_patterns(seed):
    layers = random_layers([2, 5, 4, 3], seed)
    c = np.array([1.0, -1.0, 0.5])
    x_lower, x_upper = np.array([-1.0, -0.5]), np.array([0.8, 1.0])
    exact = milp.minimize_linear(layers, c, x_lower, x_upper)
    reference = brute_force_min(layers, c, x_lower, x_upper)
    assert exact.value == pytest.approx(reference, abs=1e-7)
    assert exact.dual_bound == pytest.approx(reference, abs=1e-6)
    # The reported minimiser is a real input in the box that attains the value.
    assert np.all(exact.x >= x_lower - 1e-9) and np.all(exact.x <= x_upper + 1e-9)
    assert c @ milp.forward(layers, exact.x) == pytest.approx(exact.value, abs=1e-6)


def test_dense_grid_never_beats_the_milp_and_comes_close():
    layers = random_layers([2, 8, 8, 2], seed=3)
    c = np.array([1.0, -1.0])
    x_lower, x_upper = np.array([0.0, 0.0]), np.array([1.0, 1.0])
    exact = milp.minimize_linear(layers, c, x_lower, x_upper)
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 401), np.linspace(0, 1, 401)), -1).reshape(-1, 2)
    grid_min = (milp.forward(layers, grid) @ c).min()
    assert grid_min >= exact.value - 1e-9
    assert grid_min - exact.value < 1e-2  # a 1/400 grid of a Lipschitz function lands close to the minimum


def test_tighter_sound_bounds_give_the_same_minimum():
    layers = random_layers([3, 6, 6, 2], seed=4)
    c = np.array([-1.0, 2.0])
    x_lower, x_upper = np.full(3, -0.3), np.full(3, 0.4)
    loose = milp.minimize_linear(layers, c, x_lower, x_upper)
    # Sampled pre-activation ranges widened slightly are not sound in general; exact per-neuron ranges are.
    exact_bounds = []
    for k, (weight, _) in enumerate(layers[:-1]):
        lows, highs = [], []
        for j in range(weight.shape[0]):
            spec_layers = layers[:k] + [(layers[k][0][j:j + 1], layers[k][1][j:j + 1])]
            lows.append(milp.minimize_linear(spec_layers, np.array([1.0]), x_lower, x_upper).value)
            highs.append(-milp.minimize_linear(spec_layers, np.array([-1.0]), x_lower, x_upper).value)
        exact_bounds.append((np.array(lows), np.array(highs)))
    tight = milp.minimize_linear(layers, c, x_lower, x_upper, exact_bounds)
    assert tight.value == pytest.approx(loose.value, abs=1e-7)
    assert tight.num_binary <= loose.num_binary


def test_rejects_mismatched_shapes():
    layers = random_layers([2, 3, 2], seed=0)
    with pytest.raises(ValueError):
        milp.minimize_linear(layers, np.ones(3), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError):
        milp.minimize_linear(layers, np.ones(2), np.ones(2), np.zeros(2))
