"""The stochastic-interpolants chapter's own method, loaded from its `method` cells, against closed forms and
independent libraries: the exact score against autograd of torch.distributions' mixture log-density, the
minimiser of the chapter's velocity loss against the closed-form velocity for Gaussian endpoints, the ODE and
SDE marginals against the exact Gaussian marginal, and the energy distance against SciPy."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import energy_distance as scipy_energy_distance

from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("stochastic-interpolants")


@pytest.fixture(scope="module")
def mixtures(method):
    rho0 = method.isotropic_mixture(torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, -1.5]]), 0.5, [0.2, 0.3, 0.5])
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    rho1 = method.isotropic_mixture(3.0 * torch.stack([angles.cos(), angles.sin()], 1),
                                   torch.linspace(0.2, 0.4, 8, dtype=torch.float64))
    return rho0, rho1


def interpolant_distribution(rho0, rho1, t, a):
    """rho(t) as a torch.distributions mixture over the pairs of components (independent implementation)."""
    means = ((1 - t) * rho0.means[:, None, :] + t * rho1.means[None, :, :]).reshape(-1, 2)
    var0, var1 = rho0.covariances[:, 0, 0], rho1.covariances[:, 0, 0]  # isotropic components
    var = ((1 - t) ** 2 * var0[:, None] + t ** 2 * var1[None, :] + a * t * (1 - t)).reshape(-1)
    logits = (rho0.log_weights[:, None] + rho1.log_weights[None, :]).reshape(-1)
    components = torch.distributions.Independent(torch.distributions.Normal(means, var.sqrt()[:, None]), 1)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logits), components)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("a", [1.0, 2.5])
def test_exact_score_and_density_match_autograd(method, mixtures, t, a):
    rho0, rho1 = mixtures
    x = 4 * torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    log_rho, _, score = method.mixture_interpolant_fields(t, x, rho0, rho1, a)
    x_req = x.clone().requires_grad_(True)
    reference = interpolant_distribution(rho0, rho1, t, a).log_prob(x_req)
    (grad,) = torch.autograd.grad(reference.sum(), x_req)
    assert torch.allclose(log_rho, reference.detach(), atol=1e-10)
    assert torch.allclose(score, grad, atol=1e-9)


def test_velocity_loss_minimiser_is_the_exact_velocity(method):
    """For Gaussian endpoints b(t, .) is affine; minimising the chapter's L_b over affine fields at a fixed t
    (LBFGS, many samples) must recover the closed form b = (n - m) + (c / v) (x - mu)."""
    rho0 = method.isotropic_mixture(torch.tensor([[-1.0, 2.0]]), 0.7)
    rho1 = method.isotropic_mixture(torch.tensor([[2.0, -0.5]]), 0.4)
    gen = torch.Generator().manual_seed(1)
    num, t_value = 200_000, 0.3
    x0, x1 = rho0.sample(num, gen), rho1.sample(num, gen)
    z = torch.randn(num, 2, dtype=torch.float64, generator=gen)
    t = torch.full((num,), t_value, dtype=torch.float64)
    linear = torch.nn.Linear(2, 2).double()
    velocity_net = lambda tt, x: linear(x)  # noqa: E731
    denoiser_net = lambda tt, x: torch.zeros_like(x)  # noqa: E731
    optimiser = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss_b, _ = method.interpolant_losses(velocity_net, denoiser_net, t, x0, x1, z, a=1.0)
        loss_b.backward()
        return loss_b

    optimiser.step(closure)
    probe = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.5]], dtype=torch.float64)
    _, exact_b, _ = method.mixture_interpolant_fields(t_value, probe, rho0, rho1, 1.0)
    with torch.no_grad():
        assert torch.allclose(linear(probe), exact_b, atol=0.03)


def test_denoiser_identity(method, mixtures):
    """eta_z = E[z | x_t] = -gamma s: the score returned by score_from_denoiser inverts it exactly."""
    rho0, rho1 = mixtures
    x = torch.randn(32, 2, dtype=torch.float64)
    t = torch.tensor(0.4, dtype=torch.float64)
    _, _, score = method.mixture_interpolant_fields(t, x, rho0, rho1, 1.0)
    denoiser = lambda tt, xx: -method.gamma(tt, 1.0) * method.mixture_interpolant_fields(tt, xx, rho0, rho1, 1.0)[2]  # noqa: E731
    assert torch.allclose(method.score_from_denoiser(denoiser, t, x, 1.0), score, atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 1.0])
def test_ode_and_sde_share_the_gaussian_marginals(method, eps):
    """Gaussian endpoints: rho(t) = N(mu_t, v_t I) exactly; ODE and SDE particles must match its moments."""
    rho0 = method.isotropic_mixture(torch.tensor([[-2.0, 1.0]]), 0.6)
    rho1 = method.isotropic_mixture(torch.tensor([[2.0, -1.0]]), 0.4)
    gen = torch.Generator().manual_seed(2)
    times = torch.linspace(1e-3, 1 - 1e-3, 401, dtype=torch.float64)
    fields = lambda t, x: method.mixture_interpolant_fields(t, x, rho0, rho1, 1.0)[1:]  # noqa: E731
    _, path = method.generate(fields, rho0.sample(20_000, gen), eps, times, gen, return_path=True)
    for index in (100, 200, 400):
        t = float(times[index])
        mean = (1 - t) * rho0.means[0] + t * rho1.means[0]
        var = (1 - t) ** 2 * 0.36 + t ** 2 * 0.16 + t * (1 - t)
        particles = path[index]
        assert torch.allclose(particles.mean(0), mean, atol=0.03)
        assert torch.allclose(particles.var(0), torch.full((2,), var, dtype=torch.float64), rtol=0.05)


def test_energy_distance_matches_scipy_in_one_dimension(method):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=300), rng.normal(0.5, 1.3, size=400)
    ours = method.energy_distance(torch.tensor(x)[:, None], torch.tensor(y)[:, None])
    assert ours == pytest.approx(scipy_energy_distance(x, y) ** 2, rel=1e-10)


def test_pde_residuals_vanish_for_exact_fields(method, mixtures):
    rho0, rho1 = mixtures
    gen = torch.Generator().manual_seed(4)
    t = 0.1 + 0.8 * torch.rand(50, dtype=torch.float64, generator=gen)
    x = 3 * torch.randn(50, 2, dtype=torch.float64, generator=gen)
    continuity, fokker_planck, d_t = method.pde_residuals(rho0, rho1, t, x, eps=1.0)
    scale = d_t.abs().max()
    assert continuity.abs().max() / scale < 1e-5 and fokker_planck.abs().max() / scale < 1e-5
