"""The EPS chapter's own method, loaded from its `method` cells, against closed forms for Gaussian data under
the VP noising x_t = alpha_t x + sigma_t eps of perturb.diffusion.VPLinear: for x ~ N(mu, s^2 I) the exact noise
prediction is sigma_t (x_t - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2), the smallest denoising loss is
d alpha_t^2 s^2 / (alpha_t^2 s^2 + sigma_t^2), and the EPS is
-(x - mu) mean_k alpha_k sigma_k / (alpha_k^2 s^2 + sigma_k^2). The detection score is checked against a direct
double loop."""
import math

import numpy as np
import pytest
import torch

from perturb.diffusion import VPLinear
from perturb.harness.notebook_code import load_method

DIM, STD = 8, 0.2
TIMES_RANGE = (0.003, 0.05)


@pytest.fixture(scope="module")
def method():
    return load_method("expected-perturbation-score")


@pytest.fixture(scope="module")
def mean():
    return -0.6 + 1.2 * torch.rand(DIM, generator=torch.Generator().manual_seed(0))


def coefficients(t):
    schedule = VPLinear()
    return float(schedule.alpha(t)), float(schedule.sigma(t))


class ExactNoisePrediction(torch.nn.Module):
    """-sigma_t * grad log p_t for data N(mean, STD^2 I) noised to time t: the minimiser of the denoising loss."""

    def __init__(self, mean):
        super().__init__()
        self.mean = mean

    def forward(self, x_noisy, t):
        schedule = VPLinear()
        alpha, sigma = schedule.alpha(t).float()[:, None], schedule.sigma(t).float()[:, None]
        return sigma * (x_noisy - alpha * self.mean) / (alpha ** 2 * STD ** 2 + sigma ** 2)


def test_schedule_helpers_invert_and_match_vp_linear(method):
    sigmas = torch.tensor([0.01, 0.045, 0.1716, 0.6, 0.995], dtype=torch.float64)
    t = method.time_of_sigma(sigmas)
    torch.testing.assert_close(VPLinear().sigma(t), sigmas, rtol=1e-10, atol=0)
    assert float(method.time_of_sigma(0.1716)) == pytest.approx(0.05, abs=2e-4)  # the paper's t* = 50 / 1000
    alpha, sigma = method.vp_coefficients(torch.tensor([0.01, 0.3]))
    assert alpha.shape == (2, 1) and alpha.dtype == torch.float32
    torch.testing.assert_close(alpha ** 2 + sigma ** 2, torch.ones(2, 1))
    times = method.perturbation_times(*TIMES_RANGE, 8)
    assert times[0] == pytest.approx(0.003) and times[-1] == pytest.approx(0.05)
    assert np.allclose(np.diff(np.log(times)), math.log(0.05 / 0.003) / 7)
    assert method.perturbation_times(0.01, 0.2, 1) == [0.01]
    x = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(method.to_model_units(x), torch.tensor([-1.0, 0.0, 1.0]))


def test_exact_noise_prediction_attains_the_smallest_denoising_loss(method, mean):
    gen = torch.Generator().manual_seed(1)
    exact = ExactNoisePrediction(mean)
    for time in (0.003, 0.05, 0.3):
        alpha, sigma = coefficients(time)
        x = mean + STD * torch.randn(200_000, DIM, generator=gen)
        t = torch.full((len(x),), time)
        noise = torch.randn(x.shape, generator=gen)
        loss = method.dsm_loss(exact, x, t, noise).item()
        # E||eps - E[eps | x_t]||^2 = d (1 - sigma^2 / (alpha^2 s^2 + sigma^2))
        assert loss == pytest.approx(DIM * alpha ** 2 * STD ** 2 / (alpha ** 2 * STD ** 2 + sigma ** 2), rel=0.01)
        # Any other predictor does worse, e.g. the exact one scaled by 0.9.
        scaled = method.dsm_loss(lambda xs, tt: 0.9 * exact(xs, tt), x, t, noise).item()
        assert scaled > loss
    # The score is -eps / sigma_t: for the exact predictor, the Gaussian score.
    alpha, sigma = coefficients(0.01)
    x = mean + 0.2 * torch.randn(5, DIM, generator=gen)
    t = torch.full((5,), 0.01)
    expected = -(x - alpha * mean) / (alpha ** 2 * STD ** 2 + sigma ** 2)
    torch.testing.assert_close(method.score(exact, x, t), expected, rtol=1e-4, atol=1e-4)


def test_eps_with_the_exact_score_matches_the_closed_form(method, mean):
    times = method.perturbation_times(*TIMES_RANGE, 8)
    x = mean + STD * torch.randn(100, DIM, generator=torch.Generator().manual_seed(2))
    draws = 400
    eps = method.expected_perturbation_score(ExactNoisePrediction(mean), x, times, draws,
                                             torch.Generator().manual_seed(3))
    coeffs = [coefficients(t) for t in times]
    shrink = np.mean([a * s / (a ** 2 * STD ** 2 + s ** 2) for a, s in coeffs])
    closed_form = -(x - mean) * shrink
    # What is left is the Monte Carlo average of -sigma^2 eps / (alpha^2 s^2 + sigma^2) over times x draws.
    mc_std = math.sqrt(np.mean([(s ** 2 / (a ** 2 * STD ** 2 + s ** 2)) ** 2 for a, s in coeffs])
                       / (len(times) * draws))
    assert (eps - closed_form).abs().max() < 5 * mc_std
    assert (eps - closed_form).std() == pytest.approx(mc_std, rel=0.1)


def test_trained_score_network_gives_the_exact_eps_on_gaussian_data(method, mean):
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(5)
    # Many more samples than the network sees (1500 x 512), so it learns the Gaussian's score, not the score of
    # a finite empirical sample (which at small sigma points to the nearest training point).
    X = mean + STD * torch.randn(1_000_000, DIM, generator=gen)
    model = method.ScoreNetwork(DIM, hidden=128, depth=2, data_std=STD)
    method.train_score_model(model, X, steps=1500, batch_size=512, lr=2e-3, sigma_min=0.01, sigma_max=0.995,
                             generator=gen)
    x = mean + STD * torch.randn(100, DIM, generator=gen)
    times = method.perturbation_times(*TIMES_RANGE, 8)
    # The same noise draws for both, so the difference is the network's error alone.
    learned = method.expected_perturbation_score(model, x, times, 2, torch.Generator().manual_seed(6))
    exact = method.expected_perturbation_score(ExactNoisePrediction(mean), x, times, 2,
                                               torch.Generator().manual_seed(6))
    relative_error = ((learned - exact).norm() / exact.norm()).item()
    assert relative_error < 0.05


def test_detection_score_is_the_mmd_of_one_point_against_the_reference(method):
    rng = np.random.default_rng(7)
    reference, points = rng.normal(size=(15, 3)), rng.normal(size=(4, 3)) + 0.5
    h = 1.3
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * h ** 2))  # noqa: E731
    n = len(reference)
    within = sum(k(reference[i], reference[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    direct = [k(a, a) - 2 * np.mean([k(a, r) for r in reference]) + within for a in points]
    ours = method.detection_scores(torch.as_tensor(points), torch.as_tensor(reference), h)
    np.testing.assert_allclose(ours.numpy(), direct, rtol=1e-10)
