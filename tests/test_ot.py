"""perturb.ot against closed forms and brute force: the assignment Wasserstein distance against the sorted 1-D
formula, all permutations of tiny sets, a linear program for unequal sizes, and the Gaussian optimal map; Sinkhorn
against its marginal constraints, a direct solve of the entropic dual, the closed-form plan of two points, and its
eps -> 0 limit, the exact assignment."""
import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.stats
import torch

from perturb.ot import empirical_wasserstein, sinkhorn, sinkhorn_plan


@pytest.mark.parametrize("p", [1, 2, 3])
def test_assignment_matches_sorted_formula_in_one_dimension(p):
    """In 1-D the optimal plan between equal-size samples pairs the order statistics."""
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=300), rng.gamma(2.0, size=300)
    sorted_value = np.mean(np.abs(np.sort(u) - np.sort(v)) ** p) ** (1 / p)
    assert empirical_wasserstein(u, v, p) == pytest.approx(sorted_value, rel=1e-12)
    if p == 1:
        assert empirical_wasserstein(u, v, 1) == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-10)


def test_unequal_sizes_match_scipy_and_a_linear_program():
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=30), rng.gamma(2.0, size=45)
    assert empirical_wasserstein(u, v, 1) == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-10)
    a, b = rng.normal(size=(6, 2)), rng.normal(size=(9, 2)) + 0.5
    cost = ((a[:, None] - b[None]) ** 2).sum(-1)
    rows = [np.kron(np.eye(6)[i], np.ones(9)) for i in range(6)] + [np.kron(np.ones(6), np.eye(9)[j]) for j in range(9)]
    lp = scipy.optimize.linprog(cost.ravel(), A_eq=np.array(rows), b_eq=np.r_[np.full(6, 1 / 6), np.full(9, 1 / 9)],
                                bounds=(0, None), method="highs")
    assert empirical_wasserstein(a, b, 2) == pytest.approx(math.sqrt(lp.fun), rel=1e-8)


@pytest.mark.parametrize("p", [1, 2])
def test_assignment_matches_brute_force_over_permutations(p):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    cost = np.linalg.norm(x[:, None] - y[None], axis=-1) ** p
    best = min(cost[np.arange(7), list(perm)].mean() for perm in itertools.permutations(range(7)))
    assert empirical_wasserstein(x, y, p) == pytest.approx(best ** (1 / p), rel=1e-12)


def test_gaussian_optimal_map_is_the_assignment():
    """T(x) = m + A x with A symmetric positive definite is the gradient of a convex function, so pairing each x_i
    with T(x_i) is optimal: W2 of the sample and its image is the root mean square displacement, and for N(0, I)
    against N(m, A^2) it tends to the Bures-Wasserstein closed form."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    A = (q * np.array([0.5, 1.0, 2.0])) @ q.T
    m = np.array([1.0, -0.5, 0.2])
    x = rng.normal(size=(400, 3))
    image = m + x @ A.T
    displacement = math.sqrt(np.mean(((image - x) ** 2).sum(1)))
    assert empirical_wasserstein(x, image) == pytest.approx(displacement, rel=1e-12)
    cov = A @ A
    bures = m @ m + np.trace(np.eye(3) + cov - 2 * np.real(scipy.linalg.sqrtm(cov)))
    assert empirical_wasserstein(x, image) ** 2 == pytest.approx(bures, rel=0.1)


def test_torch_inputs_and_translation():
    points = torch.randn(200, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    shift = torch.tensor([0.3, -0.4, 0.0], dtype=torch.float64)
    assert empirical_wasserstein(points, points + shift, 1) == pytest.approx(0.5, rel=1e-10)
    assert empirical_wasserstein(points, points + shift, 2) == pytest.approx(0.5, rel=1e-10)


@pytest.mark.parametrize("eps", [0.05, 1.0, 3.0])
def test_sinkhorn_matches_direct_dual_solve(eps):
    """The entropic dual max <a, f> + <b, g> - eps sum_ij a_i b_j exp((f_i + g_j - C_ij) / eps), maximised by BFGS,
    with non-uniform weights."""
    rng = np.random.default_rng(5)
    n, m = 5, 7
    cost = 3.0 * rng.random((n, m))
    a, b = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(m))
    kernel = np.outer(a, b)

    def negative_dual(fg):
        f, g = fg[:n], fg[n:]
        plan = kernel * np.exp((f[:, None] + g[None, :] - cost) / eps)
        return -(a @ f + b @ g - eps * plan.sum()), -np.concatenate([a - plan.sum(1), b - plan.sum(0)])

    result = scipy.optimize.minimize(negative_dual, np.zeros(n + m), jac=True, method="BFGS", options={"gtol": 1e-13})
    direct = kernel * np.exp((result.x[:n, None] + result.x[None, n:] - cost) / eps)
    f, g = sinkhorn(cost, eps, a, b, tol=1e-13)
    ours = sinkhorn_plan(cost, f, g, eps, a, b)
    assert isinstance(ours, np.ndarray)
    assert np.abs(ours - direct).max() < 1e-7
    assert np.abs(ours.sum(1) - a).sum() < 1e-12 and np.abs(ours.sum(0) - b).max() < 1e-14


def test_sinkhorn_two_point_closed_form():
    """Two points to two points with cost [[0, 1], [1, 0]] and uniform weights: P = [[p, q], [q, p]] / 2 with
    p / q = exp(1 / eps), the Gibbs ratio of staying to swapping."""
    cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    for eps in (0.2, 1.0, 5.0):
        plan = sinkhorn_plan(cost, *sinkhorn(cost, eps), eps)
        stay = 1 / (1 + math.exp(-1 / eps))
        assert torch.allclose(plan, 0.5 * torch.tensor([[stay, 1 - stay], [1 - stay, stay]], dtype=torch.float64),
                              atol=1e-12)


def test_sinkhorn_tends_to_the_assignment_as_eps_shrinks():
    """For n points against n points the unregularised optimum is a permutation. The entropic plan's transport cost
    lies between it and it + eps log n (the permutation itself has KL log n to the product of the marginals), so it
    tends to the assignment as eps -> 0, and the plan's mass concentrates on the optimal permutation."""
    rng = np.random.default_rng(6)
    n = 8
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 0.3
    cost = torch.as_tensor(((x[:, None] - y[None]) ** 2).sum(-1) / 2)
    exact = empirical_wasserstein(x, y) ** 2 / 2
    rows, cols = scipy.optimize.linear_sum_assignment(cost.numpy())
    gaps = []
    for eps in (1.0, 0.1, 0.03):
        plan = sinkhorn_plan(cost, *sinkhorn(cost, eps, max_iter=20_000, tol=1e-8), eps)
        gaps.append(float((plan * cost).sum()) - exact)
        assert -1e-6 < gaps[-1] < eps * math.log(n)
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[-1] < 0.01 * exact
    assert float(plan[rows, cols].sum()) > 0.85
