"""The PFGM++ chapter's own method, loaded from its `method` cells, against closed forms and SciPy: the kernel's
radius sampler against the Beta-prime and chi laws, its density against numerical integration, the limit
D -> inf against the Gaussian kernel, the reduced field against the full (N+D)-dimensional Coulomb field and the
gradient of its potential, the unbiased perturbation objective against the closed-form posterior mean, the Heun
sampler against the exact ODE solution for Gaussian data, and the Frechet distance against scipy.linalg.sqrtm."""
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats
import torch

from perturb import edm
from perturb.harness.notebook_code import load_method

N = 64


@pytest.fixture(scope="module")
def method():
    return load_method("pfgm-pp")


@pytest.mark.parametrize("D", [1, 3, 8, 64, 2048])
def test_radius_sampler_matches_betaprime(method, D):
    sigma = 0.7
    R = method.sample_radius(np.full(20000, sigma), N, D, np.random.default_rng(D))
    t = R ** 2 / (D * sigma ** 2)  # R^2 / r^2 with r = sigma sqrt(D)
    assert scipy.stats.kstest(t, scipy.stats.betaprime(N / 2, D / 2).cdf).pvalue > 0.01


@pytest.mark.parametrize("D", [1, 3, 16, 256])
def test_radius_density_normalised_and_equal_to_betaprime(method, D):
    sigma = 0.7
    r2 = D * sigma ** 2
    total, _ = scipy.integrate.quad(lambda R: np.exp(method.radius_log_density(R, sigma, N, D)), 0, np.inf,
                                    limit=200)
    assert abs(total - 1) < 1e-6
    R = np.array([0.5, 2.0, 5.0, 20.0])
    via_betaprime = scipy.stats.betaprime(N / 2, D / 2).logpdf(R ** 2 / r2) + np.log(2 * R / r2)
    assert np.allclose(method.radius_log_density(R, sigma, N, D), via_betaprime, atol=1e-9)


def test_large_D_recovers_gaussian_kernel(method):
    sigma = 1.3
    R = method.sample_radius(np.full(20000, sigma), N, 1e7, np.random.default_rng(5))
    result = scipy.stats.kstest(R / sigma, scipy.stats.chi(N).cdf)
    assert result.statistic < 0.01 and result.pvalue > 0.01
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(50, N, generator=gen, dtype=torch.float64)
    x = data[:20] + 0.8 * torch.randn(20, N, generator=gen, dtype=torch.float64)
    gaussian = method.optimal_denoiser(x, data, 0.8, math.inf)
    direct = torch.softmax(-torch.cdist(x, data).pow(2) / (2 * 0.8 ** 2), 1) @ data
    assert (gaussian - direct).abs().max() < 1e-12
    assert (method.optimal_denoiser(x, data, 0.8, 1e7) - gaussian).abs().max() < 1e-3
    # the D = inf perturbation is the Gaussian one
    y = torch.zeros(20000, N, dtype=torch.float64)
    radii = method.perturb_data(y, torch.full((20000,), sigma), math.inf, np.random.default_rng(6), gen).norm(dim=1)
    assert scipy.stats.kstest(radii.numpy() / sigma, scipy.stats.chi(N).cdf).pvalue > 0.01


def test_small_sigma_denoiser_returns_nearest_point(method):
    gen = torch.Generator().manual_seed(1)
    data = torch.randn(30, N, generator=gen, dtype=torch.float64)
    x = data[:10] + 0.05 * torch.randn(10, N, generator=gen, dtype=torch.float64)
    for D in (4, math.inf):
        assert (method.optimal_denoiser(x, data, 1e-3, D) - data[:10]).abs().max() < 1e-9


def test_reduced_field_equals_full_coulomb_field(method):
    gen = torch.Generator().manual_seed(2)
    n_dim, D = 2, 3
    charges = torch.randn(6, n_dim, generator=gen, dtype=torch.float64)
    x = 2 * torch.randn(40, n_dim, generator=gen, dtype=torch.float64)
    z = 0.3 + torch.randn(40, D, generator=gen, dtype=torch.float64)
    r = z.norm(dim=1)
    points = torch.cat([x, z], 1).requires_grad_(True)
    lifted = torch.cat([charges, torch.zeros(6, D, dtype=torch.float64)], 1)
    offsets = points[:, None] - lifted[None]
    dist = offsets.norm(dim=-1)
    coulomb = (offsets / dist[..., None] ** (n_dim + D)).sum(1)
    potential = (dist ** -(n_dim + D - 2)).sum() / (n_dim + D - 2)
    minus_grad = -torch.autograd.grad(potential, points)[0]
    E_x, E_r = method.augmented_field(x, r, charges, D)
    rebuilt = torch.cat([E_x, E_r[:, None] * z / r[:, None]], 1)
    for full in (coulomb.detach(), minus_grad):
        scale = full.norm(dim=1, keepdim=True) / rebuilt.norm(dim=1, keepdim=True)
        assert torch.allclose(rebuilt * scale, full, rtol=1e-10, atol=1e-12)
    # the field line dx/dr = E_x / E_r is (x - D*) / r with D* the kernel-weighted mean (Eq. eq-pfgm-ode)
    E_x, E_r = method.augmented_field(x, torch.full((40,), 0.9, dtype=torch.float64), charges, D)
    denoised = method.optimal_denoiser(x, charges, 0.9 / math.sqrt(D), D)
    assert torch.allclose(0.9 * E_x / E_r[:, None], x - denoised, atol=1e-12)


def test_empirical_posterior_mean_matches_closed_form(method):
    """The perturbation objective is unbiased: E[y | x] from kernel samples is D*(x)."""
    gen = torch.Generator().manual_seed(3)
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    charges = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    queries = torch.tensor([[1.0, 0.5], [2.6, 0.0], [-2.5, 1.5]], dtype=torch.float64)
    rng = np.random.default_rng(3)
    for D in (2, math.inf):
        y = charges[torch.randint(0, 8, (300000,), generator=gen)]
        x = method.perturb_data(y, torch.full((300000,), 1.0), D, rng, gen)
        exact = method.optimal_denoiser(queries, charges, 1.0, D)
        for q, target in zip(queries, exact):
            near = y[(x - q).norm(dim=1) < 0.15]
            standard_error = float(near.var(0).sum().sqrt()) / math.sqrt(len(near))
            assert float((near.mean(0) - target).norm()) < 4 * standard_error


def test_heun_sampler_solves_the_gaussian_ode(method):
    """Data N(0, s^2 I): D*(x, sigma) = s^2 x / (s^2 + sigma^2), and the ODE's solution is
    x(sigma) = x_T sqrt((s^2 + sigma^2) / (s^2 + sigma_max^2))."""
    s2, sigma_max = 0.25, 40.0
    gen = torch.Generator().manual_seed(4)
    x_T = method.prior_sample(200, 8, math.inf, sigma_max, np.random.default_rng(4), gen, "cpu")
    exact = x_T * math.sqrt(s2 / (s2 + sigma_max ** 2))
    errors = []
    for levels in (18, 36, 72):
        out = method.heun_sampler(lambda x, sigma: s2 * x / (s2 + sigma ** 2), x_T,
                                  edm.karras_sigmas(levels, 0.002, sigma_max, append_zero=True))
        errors.append(float(((out - exact).norm(dim=1) / exact.norm(dim=1)).max()))
    assert errors[0] < 0.06
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert (orders > 1.8).all()  # Heun is second order in the step size
    sigmas = edm.karras_sigmas(18, 0.002, sigma_max, append_zero=True)
    assert len(sigmas) == 19 and float(sigmas[0]) == pytest.approx(sigma_max) and float(sigmas[-1]) == 0.0
    assert float(sigmas[-2]) == pytest.approx(0.002)


def test_frechet_distance_matches_sqrtm(method):
    rng = np.random.default_rng(7)
    a = rng.normal(size=(500, 10)) @ rng.normal(size=(10, 10))
    b = rng.normal(size=(400, 10)) * 1.5 + 0.3
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b)
                 - 2 * np.trace(scipy.linalg.sqrtm(cov_a @ cov_b).real))
    assert method.frechet_distance(a, b) == pytest.approx(reference, rel=1e-8)
    assert abs(method.frechet_distance(a, a)) < 1e-8


def test_loss_and_denoiser_shapes(method):
    torch.manual_seed(0)
    net = method.EDMDenoiser(N, 32)
    y = torch.rand(16, N) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    for D in (4, math.inf):
        loss = method.pfgmpp_loss(net, y, D, np.random.default_rng(0), gen)
        assert loss.ndim == 0 and torch.isfinite(loss)
    # c_skip -> 1 and c_out -> 0 as sigma -> 0: the denoiser is the identity on clean data
    assert (net(y, 1e-6) - y).abs().max() < 1e-4
