"""The multi-marginal Schrödinger bridge chapter's own method, loaded from its `method` cells, against closed forms:
Van Loan's transition against numerical quadrature, the static bridge (Sinkhorn) against a direct solve of its entropic-OT dual, the
static bridge between Gaussians against its closed-form coupling, the bridge sampler against direct conditioning
of the joint Gaussian, the drift MLE on exact paths, and the whole refinement loop on a problem with known answer."""
import numpy as np
import pytest
from scipy.integrate import quad_vec
from scipy.linalg import expm
from scipy.optimize import minimize

from perturb.harness.notebook_code import load_method

A_TRUE = np.array([[-0.1, -1.0], [1.0, -0.1]])


@pytest.fixture(scope="module")
def method():
    return load_method("multi-marginal-schrodinger-bridge")


def rotation(angle):
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


@pytest.mark.parametrize("A", [A_TRUE, np.array([[0.3, -0.7], [0.2, -0.5]]), np.zeros((2, 2))])
def test_van_loan_transition_matches_quadrature(method, A):
    sigma, delta = 0.3, 1.3
    Phi, Q = method.linear_transition(A, sigma, delta)
    Q_quad, _ = quad_vec(lambda s: expm(A * s) @ expm(A * s).T * sigma**2, 0.0, delta, epsabs=1e-13, epsrel=1e-12)
    assert np.abs(Phi - expm(A * delta)).max() < 1e-12
    assert np.abs(Q - Q_quad).max() < 1e-10


def test_grid_transitions_match_direct(method):
    Phis, Qs = method.grid_transitions(A_TRUE, 0.2, 2.0, 16)
    for k in (1, 5, 16):
        Phi, Q = method.linear_transition(A_TRUE, 0.2, 2.0 * k / 16)
        assert np.abs(Phis[k] - Phi).max() < 1e-12 and np.abs(Qs[k] - Q).max() < 1e-12


def test_static_bridge_matches_direct_dual_solve(method):
    """The static bridge of Eq. (eq-mmsb-static-sb) on a few points against a direct BFGS solve of its dual."""
    rng = np.random.default_rng(0)
    n, m = 5, 7
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
    Phi, Q = method.linear_transition(A_TRUE, 0.5, 1.0)
    cost = method.bridge_cost(x, y, Phi, Q)
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)

    def negative_dual(fg):  # entropic OT with regularisation 1: plan exp(f_i + g_j - C_ij)
        f, g = fg[:n], fg[n:]
        plan = np.exp(f[:, None] + g[None, :] - cost)
        value = a @ f + b @ g - plan.sum()
        return -value, -np.concatenate([a - plan.sum(1), b - plan.sum(0)])

    result = minimize(negative_dual, np.zeros(n + m), jac=True, method="BFGS", options={"gtol": 1e-13})
    direct = np.exp(result.x[:n, None] + result.x[None, n:] - cost)
    ours = method.static_bridge(x, y, Phi, Q)
    assert np.abs(ours - direct).max() < 1e-8
    assert np.abs(ours.sum(1) - a).max() < 1e-10 and np.abs(ours.sum(0) - b).max() < 1e-12


def test_static_bridge_between_gaussians_matches_closed_form(method):
    """Reference A = -a I + w J: Phi = e^{-a D} R(w D), Q = q I. Between N(m0, s0 I) and N(m1, s1 I) the static bridge
    is Gaussian with Cov(x, y) = c R^T, where c / (s0 s1 - c^2) = e^{-a D} / q, so E[y | x] = m1 + (c / s0) R (x - m0)."""
    rng = np.random.default_rng(1)
    a, w, sigma, delta = 0.1, 1.0, 0.5, 1.0
    A = np.array([[-a, -w], [w, -a]])
    m0, m1, s0, s1 = np.array([2.0, 0.0]), np.array([0.5, 1.5]), 0.5**2, 0.8**2
    q = sigma**2 * (1 - np.exp(-2 * a * delta)) / (2 * a)
    k = np.exp(-a * delta) / q
    c = (-1 + np.sqrt(1 + 4 * k**2 * s0 * s1)) / (2 * k)
    expected_slope = c / s0 * rotation(w * delta)

    n = 800
    x = m0 + np.sqrt(s0) * rng.standard_normal((n, 2))
    y = m1 + np.sqrt(s1) * rng.standard_normal((n, 2))
    Phi, Q = method.linear_transition(A, sigma, delta)
    plan = method.static_bridge(x, y, Phi, Q)
    barycentric = n * plan @ y  # E[y | x_i] under the plan
    design = np.hstack([x - x.mean(0), np.ones((n, 1))])
    slope = np.linalg.lstsq(design, barycentric, rcond=None)[0][:2].T
    assert np.linalg.norm(slope - expected_slope) / np.linalg.norm(expected_slope) < 0.05


def test_bridge_sampler_matches_conditioned_gaussian(method):
    rng = np.random.default_rng(2)
    A, sigma, delta, num_steps, count = np.array([[0.3, -0.7], [0.2, -0.5]]), 0.4, 1.5, 10, 40_000
    x, y = np.array([1.0, -0.5]), np.array([-0.3, 0.8])
    paths = method.bridge_paths(np.tile(x, (count, 1)), np.tile(y, (count, 1)), A, sigma, delta, num_steps, rng)
    Phi_D, Q_D = method.linear_transition(A, sigma, delta)
    for k in (3, 7):
        s = delta * k / num_steps
        Phi_s, Q_s = method.linear_transition(A, sigma, s)
        Phi_r, _ = method.linear_transition(A, sigma, delta - s)
        gain = Q_s @ Phi_r.T @ np.linalg.inv(Q_D)  # Cov(X_s, X_D | x) Var(X_D | x)^-1
        mean = Phi_s @ x + gain @ (y - Phi_D @ x)
        cov = Q_s - gain @ Phi_r @ Q_s
        sample = paths[:, k]
        assert np.all(np.abs(sample.mean(0) - mean) < 5 * np.sqrt(np.diag(cov) / count))
        assert np.abs(np.cov(sample.T) - cov).max() < 0.05 * np.abs(cov).max()
    assert np.array_equal(paths[:, 0], np.tile(x, (count, 1))) and np.array_equal(paths[:, -1], np.tile(y, (count, 1)))


def exact_paths(rng, A, sigma, h, num_paths, num_steps, start):
    Phi_h, chol_h = expm(A * h), np.linalg.cholesky(_transition_cov(A, sigma, h))
    paths = np.empty((num_paths, num_steps + 1, 2))
    paths[:, 0] = start + 0.3 * rng.standard_normal((num_paths, 2))
    for n in range(num_steps):
        paths[:, n + 1] = paths[:, n] @ Phi_h.T + rng.standard_normal((num_paths, 2)) @ chol_h.T
    return paths


def _transition_cov(A, sigma, t):
    value, _ = quad_vec(lambda s: expm(A * s) @ expm(A * s).T * sigma**2, 0.0, t, epsabs=1e-13)
    return value


def test_drift_mle_recovers_A_on_exact_paths(method):
    rng = np.random.default_rng(3)
    h = 0.01
    paths = exact_paths(rng, A_TRUE, 0.2, h, 1000, 400, np.array([2.0, 0.0]))
    A_hat = method.fit_linear_drift([paths[:, :201], paths[:, 200:]], h)
    assert np.linalg.norm(A_hat - A_TRUE) / np.linalg.norm(A_TRUE) < 0.03


def test_refinement_recovers_known_drift(method):
    """Snapshots of the damped rotation drawn from its exact transition, fresh particles at each time; four rounds
    of refinement from the Brownian reference must recover A_TRUE, which plain Brownian bridges cannot."""
    rng = np.random.default_rng(4)
    sigma, times, n = 0.2, np.arange(0.0, 9.0, 2.0), 150
    snapshots = []
    for t in times:
        Phi, Q = expm(A_TRUE * t), _transition_cov(A_TRUE, sigma, t) if t > 0 else np.zeros((2, 2))
        start = np.array([2.0, 0.0]) + 0.3 * rng.standard_normal((n, 2))
        noise = rng.standard_normal((n, 2)) @ np.linalg.cholesky(Q + 1e-15 * np.eye(2)).T
        snapshots.append(start @ Phi.T + noise)
    references, bridges = method.sbirr(snapshots, times, sigma, 4, 40, np.random.default_rng(5))
    errors = [np.linalg.norm(A - A_TRUE) / np.linalg.norm(A_TRUE) for A in references]
    assert errors[0] == 1.0 and errors[-1] < 0.2
    assert len(bridges) == 5 and all(len(bridge) == len(times) - 1 for bridge in bridges)
