"""The WGAN-GP submodel chapter's own method, loaded from its `method` cells: the finite-difference wave solver
against d'Alembert's closed form (error and second-order convergence, for the force-loaded full model and for the
displacement-driven submodel), the gradient penalty against a direct per-sample autograd computation and a
closed form for a linear critic, and the whitened PCA against numpy's covariance."""
import numpy as np
import pytest
import torch

from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("wgan-gp-uncertainty")


def full_model_error(method, n_cells, x=0.5, t_end=2.0):
    dx = 1.0 / n_cells
    dt = 0.5 * dx
    steps = int(round(t_end / dt))
    trace, _ = method.leapfrog_bar(np.ones((1, n_cells)), dx, dt, steps, force=method.impact_force(np.ones(1)),
                                   record=int(round(x * n_cells)))
    exact = method.dalembert_trace(x, np.arange(steps + 1) * dt)
    return np.abs(trace[0] - exact).max() / np.abs(exact).max()


def test_solver_matches_dalembert_at_second_order(method):
    errors = [full_model_error(method, n) for n in (50, 100, 200)]
    assert errors[1] < 0.02
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(orders > 1.8) and np.all(orders < 2.4), orders
    assert full_model_error(method, 100, x=0.25) < 0.02  # another station, same accuracy


def test_submodel_strain_matches_dalembert(method):
    """Drive the submodel by the exact u(0.5, t); the strain at the clamped end is -2 G'(t - 1) = -2 F(t - 1)
    (incident plus reflected wave), exact for t < 3."""
    errors = []
    for n_cells in (100, 200):
        dx, dt, t_end = 1.0 / n_cells, 0.5 / n_cells, 2.0
        steps = int(round(t_end / dt))
        times = np.arange(steps + 1) * dt
        signal = method.dalembert_trace(0.5, times)[None, :]
        _, strain = method.leapfrog_bar(np.ones((1, n_cells // 2)), dx, dt, steps,
                                        displacement=method.linear_boundary(signal, times))
        exact = -2.0 * method.impact_force(np.ones(1))(times - 1.0) * (times >= 1.0)
        errors.append(np.abs(strain[0] - exact).max() / np.abs(exact).max())
    assert errors[0] < 0.05
    assert errors[1] < 0.6 * errors[0]


def test_gradient_penalty_matches_direct_autograd(method):
    torch.manual_seed(0)
    critic = method.mlp(5, 32, 1).double()
    real, fake = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    epsilon = torch.rand(7, 1, dtype=torch.float64)
    penalty, norms = method.gradient_penalty(critic, real, fake, epsilon)
    direct = []
    for i in range(7):
        point = (epsilon[i] * real[i] + (1 - epsilon[i]) * fake[i]).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(point[None]).squeeze(), point)
        direct.append(grad.norm())
    direct = torch.stack(direct)
    torch.testing.assert_close(norms, direct)
    torch.testing.assert_close(penalty, ((direct - 1) ** 2).mean())
    # the penalty is differentiable in the critic's weights (it is part of the critic's loss)
    penalty.backward()
    assert critic[0].weight.grad is not None  # (the last bias does not change input gradients: no grad there)
    assert all(torch.isfinite(p.grad).all() for p in critic.parameters() if p.grad is not None)


def test_gradient_penalty_linear_critic_closed_form(method):
    weight = torch.tensor([[3.0, -4.0]])  # gradient norm 5 everywhere
    critic = torch.nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.copy_(weight)
    real, fake = torch.randn(10, 2), torch.randn(10, 2)
    loss, wasserstein, norms = method.critic_loss(critic, real, fake, torch.rand(10, 1), penalty_weight=10.0)
    torch.testing.assert_close(norms, torch.full((10,), 5.0))
    expected_w = (real.mean(0) - fake.mean(0)) @ weight[0]
    torch.testing.assert_close(wasserstein, expected_w)
    torch.testing.assert_close(loss.detach(), -expected_w + 10.0 * 16.0)


def test_whitened_pca(method):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((500, 3)) @ rng.standard_normal((3, 12)) + rng.standard_normal(12)
    pca = method.WhitenedPCA(data, 3)
    codes = pca.encode(data)
    np.testing.assert_allclose(codes.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(np.cov(codes.T), np.eye(3), atol=1e-10)
    np.testing.assert_allclose(pca.decode(codes), data, atol=1e-8)  # rank 3: exact reconstruction
    samples = pca.sample_gaussian(200000, rng)
    np.testing.assert_allclose(np.cov(samples.T), np.cov(data.T), atol=0.05 * np.abs(np.cov(data.T)).max())
