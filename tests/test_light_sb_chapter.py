"""The Light Schrodinger Bridge chapter's own method, loaded from its `method` cells, against independent references:
the closed-form Gaussian EOT plan checked by its optimality structure and by Sinkhorn on a fine grid; the closed-form
conditional plan, log-partition and bridge drift checked by numerical quadrature; the training objective checked to
be stationary at the exact solution (Gauss-Hermite expectations); a short training run against the closed form."""
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from perturb.harness.notebook_code import load_method

DTYPE = torch.float64


@pytest.fixture(scope="module")
def method():
    return load_method("light-schrodinger-bridge")


def random_spd(dim, gen, low=0.3, high=2.0):
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=DTYPE))
    return (rotation * torch.empty(dim, dtype=DTYPE).uniform_(low, high, generator=gen)) @ rotation.T


def gaussian_pair(dim, seed):
    gen = torch.Generator().manual_seed(seed)
    mean0 = torch.randn(dim, generator=gen, dtype=DTYPE)
    mean1 = torch.randn(dim, generator=gen, dtype=DTYPE) + 1.0
    return mean0, random_spd(dim, gen), mean1, random_spd(dim, gen)


def exact_potential(method, mean0, mean1, eps, gain):
    """A one-component LightSB model set to the exact Gaussian solution: pi(y|x) = N(mean1 + G(x - mean0), eps G)."""
    dim = len(mean0)
    theta = method.AdjustedPotential(dim, 1, eps)
    with torch.no_grad():
        theta.r.copy_((mean1 - gain @ mean0)[None])
        theta.s_factor.copy_(torch.linalg.cholesky(gain - 1e-4 * torch.eye(dim, dtype=DTYPE))[None])
    return theta


def random_mixture(method, dim, num, eps, diagonal, seed):
    gen = torch.Generator().manual_seed(seed)
    theta = method.AdjustedPotential(dim, num, eps, diagonal=diagonal)
    with torch.no_grad():
        theta.r.copy_(torch.randn(num, dim, generator=gen, dtype=DTYPE))
        theta.log_alpha_raw.copy_(eps * torch.randn(num, generator=gen, dtype=DTYPE))
        if diagonal:
            theta.log_s.copy_(torch.empty(num, dim, dtype=DTYPE).uniform_(-1.0, 0.5, generator=gen))
        else:
            theta.s_factor.copy_(0.6 * torch.randn(num, dim, dim, generator=gen, dtype=DTYPE))
    return theta


def grid_2d(half_width=10.0, points=501):
    axis = torch.linspace(-half_width, half_width, points, dtype=DTYPE)
    yy = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    return yy, float(axis[1] - axis[0]) ** 2


@pytest.mark.parametrize("eps", [0.1, 1.0, 5.0])
def test_gaussian_closed_form_has_the_schrodinger_structure(method, eps):
    """The EOT plan is p(x, y) ~ f(x) g(y) exp(<x, y>/eps): the x-y block of its precision is -I/eps."""
    mean0, cov0, mean1, cov1 = gaussian_pair(3, 0)
    truth = method.gaussian_eot(mean0, cov0, mean1, cov1, eps)
    joint = torch.cat([torch.cat([cov0, truth["cross"]], 1), torch.cat([truth["cross"].T, cov1], 1)], 0)
    assert torch.linalg.eigvalsh(joint).min() > 0
    precision = torch.linalg.inv(joint)
    assert torch.allclose(precision[:3, 3:], -torch.eye(3, dtype=DTYPE) / eps, atol=1e-9)
    # The conditional covariance is eps times the (symmetric) gain.
    assert torch.allclose(truth["cond_cov"], eps * truth["gain"], atol=1e-10)


def test_gaussian_closed_form_matches_sinkhorn_on_a_grid(method):
    """Sinkhorn between the two Gaussians discretised on fine 2-D grids gives the same cross-covariance."""
    eps = 0.5
    mean0 = torch.tensor([0.0, 0.0], dtype=DTYPE)
    mean1 = torch.tensor([0.5, -0.3], dtype=DTYPE)
    cov0 = torch.tensor([[1.0, 0.4], [0.4, 0.6]], dtype=DTYPE)
    cov1 = torch.tensor([[0.5, -0.2], [-0.2, 0.9]], dtype=DTYPE)
    truth = method.gaussian_eot(mean0, cov0, mean1, cov1, eps)

    def discretise(mean, cov):
        axis = np.linspace(-5.0, 5.0, 31)
        pts = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2) + mean.numpy()
        diff = pts - mean.numpy()
        log_w = -0.5 * np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov.numpy()), diff)
        return pts, log_w - logsumexp(log_w)

    x, log_a = discretise(mean0, cov0)
    y, log_b = discretise(mean1, cov1)
    a, b = np.exp(log_a), np.exp(log_b)
    kernel = np.exp(-((x[:, None, :] - y[None]) ** 2).sum(-1) / (2 * eps))  # smallest entry ~1e-90: no underflow
    u, v = np.ones(len(x)), np.ones(len(y))
    for _ in range(2000):
        u = a / (kernel @ v)
        v = b / (kernel.T @ u)
    plan = u[:, None] * kernel * v[None]
    assert abs(plan.sum(1) - a).max() < 1e-10
    mx, my = np.exp(log_a) @ x, np.exp(log_b) @ y
    cross = (x - mx).T @ plan @ (y - my)
    assert np.abs(cross - truth["cross"].numpy()).max() < 1e-4  # mixing up eps and 2 eps gives ~0.1


@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_exact_parameters_reproduce_the_closed_form(method, eps):
    """With S = G and r = m1 - G m0, Eq. (eq-plan) is the true conditional and Eq. (eq-drift) the true drift."""
    mean0, cov0, mean1, cov1 = gaussian_pair(2, 1)
    truth = method.gaussian_eot(mean0, cov0, mean1, cov1, eps)
    theta = exact_potential(method, mean0, mean1, eps, truth["gain"])
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    with torch.no_grad():
        mean, cov = method.conditional_moments(theta, x)
    assert torch.allclose(mean, mean1 + (x - mean0) @ truth["gain"], atol=1e-10)
    assert torch.allclose(cov, truth["cond_cov"].expand_as(cov), atol=1e-10)
    # The drift is (E[Y | X_t = x] - x) / (1 - t), with E[Y | X_t] from Gaussian conditioning on the bridge.
    cross = truth["cross"]
    for t in (0.0, 0.3, 0.9):
        mean_t = t * mean1 + (1 - t) * mean0
        cov_t = t ** 2 * cov1 + (1 - t) ** 2 * cov0 + t * (1 - t) * (cross + cross.T + eps * torch.eye(2, dtype=DTYPE))
        cov_y_xt = t * cov1 + (1 - t) * cross.T
        expected_y = mean1 + (x - mean_t) @ torch.linalg.solve(cov_t, cov_y_xt.T)
        assert torch.allclose(method.sb_drift(theta, x, t), (expected_y - x) / (1 - t), atol=1e-8)


@pytest.mark.parametrize("diagonal", [True, False])
def test_conditional_plan_and_partition_match_quadrature(method, diagonal):
    """Eq. (eq-plan) against exp(<x, y>/eps) v(y) normalised numerically on a 2-D grid."""
    eps = 0.7
    theta = random_mixture(method, 2, 3, eps, diagonal, seed=3)
    yy, cell = grid_2d()
    with torch.no_grad():
        log_v = method.log_adjusted_potential(theta, yy)
        for x in torch.tensor([[0.3, -0.5], [-0.8, 0.4]], dtype=DTYPE):
            log_unnorm = yy @ x / eps + log_v
            log_c = torch.logsumexp(log_unnorm, 0) + math.log(cell)
            assert abs(float(log_c - method.log_partition(theta, x[None])[0])) < 1e-6
            density = (log_unnorm - log_c).exp() * cell
            mean = density @ yy
            cov = (yy - mean).T @ ((yy - mean) * density[:, None])
            model_mean, model_cov = method.conditional_moments(theta, x[None])
            assert torch.allclose(model_mean[0], mean, atol=1e-6)
            assert torch.allclose(model_cov[0], cov, atol=1e-6)
            weights = method.conditional_plan(theta, x[None])[0]
            assert abs(float(weights.sum()) - 1) < 1e-12


@pytest.mark.parametrize("diagonal", [True, False])
def test_drift_matches_quadrature(method, diagonal):
    """Eq. (eq-drift) against E[Y | X_t = x] = int y N(y | x, (1-t) eps I) phi(y) dy / int ... on a 2-D grid."""
    eps = 0.7
    theta = random_mixture(method, 2, 3, eps, diagonal, seed=4)
    yy, _ = grid_2d()
    with torch.no_grad():
        log_phi = yy.pow(2).sum(1) / (2 * eps) + method.log_adjusted_potential(theta, yy)
        x = torch.tensor([[0.3, -0.5], [-0.8, 0.4], [1.2, 0.9]], dtype=DTYPE)
        for t in (0.0, 0.5, 0.8):
            log_kernel = -(x[:, None, :] - yy[None]).pow(2).sum(-1) / (2 * (1 - t) * eps)
            weights = torch.softmax(log_kernel + log_phi[None], dim=1)
            expected = (weights @ yy - x) / (1 - t)
            assert torch.allclose(method.sb_drift(theta, x, t), expected, atol=1e-7)


def test_objective_is_stationary_at_the_exact_solution(method):
    """The population loss of Eq. (eq-loss), with exact Gauss-Hermite expectations, has zero gradient at the EOT
    solution, and a larger value at a perturbed potential."""
    eps = 0.5
    mean0, cov0, mean1, cov1 = gaussian_pair(2, 5)
    truth = method.gaussian_eot(mean0, cov0, mean1, cov1, eps)
    nodes, weights = np.polynomial.hermite_e.hermegauss(8)  # E over N(0, 1)
    z = torch.tensor(np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2), dtype=DTYPE)
    w = torch.tensor(np.outer(weights, weights).reshape(-1) / (2 * math.pi), dtype=DTYPE)
    x = mean0 + z @ torch.linalg.cholesky(cov0).T
    y = mean1 + z @ torch.linalg.cholesky(cov1).T

    def population_loss(theta):
        return w @ method.log_partition(theta, x) - w @ method.log_adjusted_potential(theta, y)

    theta = exact_potential(method, mean0, mean1, eps, truth["gain"])
    loss = population_loss(theta)
    grads = torch.autograd.grad(loss, [theta.r, theta.s_factor, theta.log_alpha_raw])
    assert max(float(g.abs().max()) for g in grads) < 1e-9
    with torch.no_grad():
        theta.r.add_(0.05)
        assert float(population_loss(theta)) > float(loss) + 1e-4


def test_training_and_sampling_recover_the_closed_form(method):
    """A short fit of the chapter's objective reaches the closed-form conditional mean; bridge and SDE samples
    have the right endpoint moments."""
    eps = 1.0
    mean0, cov0, mean1, cov1 = gaussian_pair(2, 6)
    truth = method.gaussian_eot(mean0, cov0, mean1, cov1, eps)
    chol0, chol1 = torch.linalg.cholesky(cov0), torch.linalg.cholesky(cov1)
    source = lambda n, gen: mean0 + torch.randn(n, 2, generator=gen, dtype=DTYPE) @ chol0.T  # noqa: E731
    target = lambda n, gen: mean1 + torch.randn(n, 2, generator=gen, dtype=DTYPE) @ chol1.T  # noqa: E731
    gen = torch.Generator().manual_seed(7)
    theta = method.AdjustedPotential(2, 2, eps)
    with torch.no_grad():
        theta.r.copy_(target(2, gen))
    method.fit(theta, source, target, 1000, 1e-2, 256, gen)
    x = source(4000, gen)
    true_mean = mean1 + (x - mean0) @ truth["gain"]
    with torch.no_grad():
        mean = method.conditional_moments(theta, x)[0]
    assert float((mean - true_mean).pow(2).sum(1).mean().sqrt() / (true_mean - mean1).pow(2).sum(1).mean().sqrt()) < 0.06
    y = method.sample_plan(theta, x, gen)
    assert torch.allclose(torch.cov(torch.cat([x, y], 1).T)[:2, 2:], truth["cross"], atol=0.08)
    end = method.euler_maruyama(theta, x, 100, gen)[-1]
    assert torch.allclose(end.mean(0), mean1, atol=0.08)
    assert torch.allclose(torch.cov(end.T), cov1, rtol=0.12, atol=0.05)
    half = method.bridge_sample(theta, x, 0.5, gen)
    assert torch.allclose(half.mean(0), 0.5 * (mean0 + mean1), atol=0.06)
