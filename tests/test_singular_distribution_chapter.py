"""The instance-noise chapter's own method, loaded from its `method` cells, against closed forms and SciPy: the
quadrature likelihood against the Gaussian density (one node), the closed form for a straight segment
(scipy.stats.norm) and scipy.integrate.quad on a curved arc; the unbounded growth n (D - d) log(1/sigma) on clean
data; the exact W1 against scipy.stats.wasserstein_distance, a translation and a linear program; and a short fit on
perturbed data from a segment that recovers the instance noise and the segment."""
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats
import torch

from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("singular-distribution-instance-noise")


def segment_log_density(x, a, b, sigma):
    """log of int_0^1 phi_sigma(x - a - z (b - a)) dz in closed form."""
    length = np.linalg.norm(b - a)
    u = (b - a) / length
    t = (x - a) @ u
    r = np.linalg.norm((x - a) - np.outer(t, u), axis=1)
    D = len(a)
    return (scipy.stats.norm.logpdf(r, scale=sigma) - 0.5 * (D - 2) * np.log(2 * np.pi * sigma ** 2)
            + np.log(scipy.stats.norm.cdf(t / sigma) - scipy.stats.norm.cdf((t - length) / sigma)) - np.log(length))


def test_single_node_is_the_gaussian_density(method):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4))
    centre = rng.normal(size=(1, 4))
    ours = method.log_likelihood(torch.as_tensor(x), torch.as_tensor(centre), 0.7).numpy()
    reference = scipy.stats.multivariate_normal(centre[0], 0.7 ** 2 * np.eye(4)).logpdf(x)
    assert np.allclose(ours, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("sigma", [0.3, 0.05])
def test_segment_closed_form(method, sigma):
    rng = np.random.default_rng(1)
    a, b = np.array([0.0, 0.0, 0.0]), np.array([2.0, 0.5, 0.0])
    x = a + rng.uniform(0, 1, size=(30, 1)) * (b - a) + 0.2 * rng.normal(size=(30, 3))
    z = method.latent_grid(4000, dtype=torch.float64)
    points = torch.as_tensor(a) + z * torch.as_tensor(b - a)
    ours = method.log_likelihood(torch.as_tensor(x), points, sigma).numpy()
    # the midpoint rule is least accurate where a point faces an end of the segment: errors up to ~1e-5 there
    assert np.allclose(ours, segment_log_density(x, a, b, sigma), rtol=0, atol=5e-5)


def test_curved_arc_against_quad(method):
    def arc(z):
        angle = 1.5 * np.pi * z ** 2
        return np.stack([np.cos(angle), np.sin(angle)], axis=-1)

    sigma = 0.05
    x = np.array([[1.02, 0.1], [-0.5, 0.8], [0.0, -1.03], [0.3, 0.3]])
    z = method.latent_grid(2048, dtype=torch.float64)
    ours = method.log_likelihood(torch.as_tensor(x), torch.as_tensor(arc(z.numpy()[:, 0])), sigma).numpy()
    gauss = scipy.stats.multivariate_normal(np.zeros(2), sigma ** 2 * np.eye(2))
    for xi, value in zip(x, ours):
        reference, _ = scipy.integrate.quad(lambda s: gauss.pdf(xi - arc(s)), 0, 1, limit=500,
                                            epsabs=0, epsrel=1e-11)
        assert value == pytest.approx(np.log(reference), rel=1e-6)


def test_clean_likelihood_grows_like_codimension_log_one_over_sigma(method):
    """Points exactly on a segment in R^D: log p gains (D - d) log 5 when sigma shrinks five-fold."""
    D = 4
    a, b = np.zeros(D), np.r_[1.0, 1.0, np.zeros(D - 2)]
    rng = np.random.default_rng(2)
    x = torch.as_tensor(a + rng.uniform(0.1, 0.9, size=(50, 1)) * (b - a))
    points = torch.as_tensor(a) + method.latent_grid(20000, dtype=torch.float64) * torch.as_tensor(b - a)
    gain = (method.log_likelihood(x, points, 0.002) - method.log_likelihood(x, points, 0.01)).numpy()
    assert np.allclose(gain, (D - 1) * np.log(5), atol=1e-6)


def test_w1_matches_scipy_in_one_dimension(method):
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=30), rng.gamma(2.0, size=45)
    embed = lambda s: np.stack([s, np.zeros_like(s)], axis=1)  # noqa: E731
    assert method.wasserstein1(embed(u), embed(v)) == pytest.approx(scipy.stats.wasserstein_distance(u, v),
                                                                    rel=1e-10)


def test_w1_of_a_translation_is_its_length(method):
    rng = np.random.default_rng(4)
    points = rng.normal(size=(200, 3))
    shift = np.array([0.3, -0.4, 0.0])
    assert method.wasserstein1(points, points + shift) == pytest.approx(0.5, rel=1e-10)


def test_w1_matches_linear_program(method):
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(6, 2)), rng.normal(size=(9, 2)) + 0.5
    cost = np.linalg.norm(a[:, None] - b[None], axis=-1)
    rows = [np.kron(np.eye(6)[i], np.ones(9)) for i in range(6)] + [np.kron(np.ones(6), np.eye(9)[j]) for j in range(9)]
    lp = scipy.optimize.linprog(cost.ravel(), A_eq=np.array(rows), b_eq=np.r_[np.full(6, 1 / 6), np.full(9, 1 / 9)],
                                bounds=(0, None), method="highs")
    assert method.wasserstein1(a, b) == pytest.approx(lp.fun, rel=1e-8)


def test_arc_angle_is_continuous_on_the_support(method):
    angles = np.linspace(0, 1.5 * np.pi, 50)
    plane = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert np.allclose(method.arc_angle(plane), angles, atol=1e-12)


def test_fit_on_perturbed_segment_recovers_noise_and_segment(method):
    """Uniform mass on the segment [-1, 1] x {0}: the perturbed MLE finds sigma_* and the segment."""
    torch.manual_seed(0)
    n, sigma_star = 400, 0.1
    data = torch.stack([torch.rand(n) * 2 - 1, torch.zeros(n)], dim=1)
    model = method.CurveGenerator(2, 32, sigma_init=0.3)
    sigmas, _ = method.fit_generator(model, data, sigma_star, steps=800, lr=5e-3, num_nodes=64,
                                     generator=torch.Generator().manual_seed(1))
    assert abs(sigmas[-1] - sigma_star) < 0.015
    grid = method.latent_grid(500)
    with torch.no_grad():
        estimate = model(grid).numpy()
    truth = np.stack([np.linspace(-1, 1, 500), np.zeros(500)], axis=1)
    assert method.wasserstein1(estimate, truth) < 0.05
