"""The EPS chapter's own method, loaded from its `method` cells, against closed forms for Gaussian data:
for x ~ N(mu, s^2 I) noised as x + sigma * eps, the exact noise prediction is sigma (x_sigma - mu) / (s^2 + sigma^2),
the smallest denoising loss is d s^2 / (s^2 + sigma^2), and the EPS is -(x - mu) mean_k sigma_k / (s^2 + sigma_k^2).
The detection score is checked against a direct double loop."""
import math

import numpy as np
import pytest
import torch

from perturb.harness.notebook_code import load_method

DIM, STD = 8, 0.1
LEVELS_RANGE = (0.01, 0.08)


@pytest.fixture(scope="module")
def method():
    return load_method("expected-perturbation-score")


@pytest.fixture(scope="module")
def mean():
    return 0.2 + 0.6 * torch.rand(DIM, generator=torch.Generator().manual_seed(0))


class ExactNoisePrediction(torch.nn.Module):
    """-sigma * grad log p_sigma for data N(mean, STD^2 I): the minimiser of the denoising loss."""

    def __init__(self, mean):
        super().__init__()
        self.mean = mean

    def forward(self, x_noisy, sigma):
        return sigma[:, None] * (x_noisy - self.mean) / (STD ** 2 + sigma[:, None] ** 2)


def test_exact_noise_prediction_attains_the_smallest_denoising_loss(method, mean):
    gen = torch.Generator().manual_seed(1)
    exact = ExactNoisePrediction(mean)
    for level in (0.01, 0.05, 0.3):
        x = mean + STD * torch.randn(200_000, DIM, generator=gen)
        sigma = torch.full((len(x),), level)
        noise = torch.randn(x.shape, generator=gen)
        loss = method.dsm_loss(exact, x, sigma, noise).item()
        assert loss == pytest.approx(DIM * STD ** 2 / (STD ** 2 + level ** 2), rel=0.01)
        # Any other predictor does worse, e.g. the exact one scaled by 0.9.
        scaled = method.dsm_loss(lambda xs, sg: 0.9 * exact(xs, sg), x, sigma, noise).item()
        assert scaled > loss
    # The score is -eps / sigma: for the exact predictor, the Gaussian score -(x - mean) / (s^2 + sigma^2).
    x = mean + 0.2 * torch.randn(5, DIM, generator=gen)
    sigma = torch.full((5,), 0.04)
    assert torch.allclose(method.score(exact, x, sigma), -(x - mean) / (STD ** 2 + 0.04 ** 2), atol=1e-5)


def test_eps_with_the_exact_score_matches_the_closed_form(method, mean):
    levels = method.noise_levels(*LEVELS_RANGE, 8)
    assert levels[0] == pytest.approx(0.01) and levels[-1] == pytest.approx(0.08)
    assert np.allclose(np.diff(np.log(levels)), math.log(8) / 7)
    x = mean + STD * torch.randn(100, DIM, generator=torch.Generator().manual_seed(2))
    draws = 400
    eps = method.expected_perturbation_score(ExactNoisePrediction(mean), x, levels, draws,
                                             torch.Generator().manual_seed(3))
    shrink = np.mean([s / (STD ** 2 + s ** 2) for s in levels])
    closed_form = -(x - mean) * shrink
    # What is left is the Monte Carlo average of -sigma^2 eps / (s^2 + sigma^2) over levels x draws.
    mc_std = math.sqrt(np.mean([(s ** 2 / (STD ** 2 + s ** 2)) ** 2 for s in levels]) / (len(levels) * draws))
    assert (eps - closed_form).abs().max() < 5 * mc_std
    assert (eps - closed_form).std() == pytest.approx(mc_std, rel=0.1)


def test_trained_score_network_gives_the_exact_eps_on_gaussian_data(method, mean):
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(5)
    # Many more samples than the network sees (1500 x 512), so it learns the Gaussian's score, not the score of
    # a finite empirical sample (which at small sigma points to the nearest training point).
    X = mean + STD * torch.randn(1_000_000, DIM, generator=gen)
    model = method.ScoreNetwork(DIM, hidden=128, depth=2)
    method.train_score_model(model, X, steps=1500, batch_size=512, lr=2e-3, sigma_min=0.005, sigma_max=1.0,
                             generator=gen)
    x = mean + STD * torch.randn(100, DIM, generator=gen)
    levels = method.noise_levels(*LEVELS_RANGE, 8)
    # The same noise draws for both, so the difference is the network's error alone.
    learned = method.expected_perturbation_score(model, x, levels, 2, torch.Generator().manual_seed(6))
    exact = method.expected_perturbation_score(ExactNoisePrediction(mean), x, levels, 2,
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
