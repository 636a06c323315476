"""perturb.smoothing against scipy's binomial statistics, the closed form of a smoothed linear classifier, the
coverage the Clopper-Pearson bound promises, and the randomized-smoothing certifier of the Adversarial Robustness
Toolbox."""
import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, binomtest, norm
from torch import nn

from perturb import smoothing


@pytest.mark.parametrize("n", [1, 10, 100, 1000, 100_000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_lower_is_the_beta_quantile(n, alpha):
    k = np.unique(np.linspace(0, n, 13).round().astype(int))
    expected = np.where(k > 0, beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)
    np.testing.assert_allclose(smoothing.clopper_pearson_lower(k, n, alpha), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k, n", [(0, 20), (3, 20), (20, 20), (512, 1000), (990, 1000)])
def test_one_sided_bounds_match_scipy_binomtest_interval(k, n):
    # A two-sided exact interval at level 1 - 2 alpha has the one-sided 1 - alpha bounds as its ends.
    alpha = 0.01
    interval = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert smoothing.clopper_pearson_lower(k, n, alpha) == pytest.approx(interval.low, abs=1e-10)
    assert smoothing.clopper_pearson_upper(k, n, alpha) == pytest.approx(interval.high, abs=1e-10)


def test_lower_bound_is_where_the_upper_tail_has_probability_alpha():
    # Defining property: at p = bound, P(X >= k) = alpha, and the bound increases with k.
    n, alpha = 500, 0.001
    k = np.arange(1, n + 1)
    bound = smoothing.clopper_pearson_lower(k, n, alpha)
    np.testing.assert_allclose(binom.sf(k - 1, n, bound), alpha, rtol=1e-6)
    assert np.all(np.diff(bound) > 0)
    assert bound[-1] == pytest.approx(alpha ** (1 / n))


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError):
        smoothing.clopper_pearson_lower(5, 4, 0.05)
    with pytest.raises(ValueError):
        smoothing.clopper_pearson_lower(1, 4, 1.5)


@pytest.mark.parametrize("p, n", [(0.3, 50), (0.7, 200), (0.95, 1000)])
def test_lower_bound_covers_the_true_proportion_over_many_draws(p, n):
    alpha, draws = 0.05, 20_000
    successes = np.random.default_rng(0).binomial(n, p, size=draws)
    misses = np.mean(smoothing.clopper_pearson_lower(successes, n, alpha) > p)
    # Clopper-Pearson is conservative: the miss rate is at most alpha (up to Monte Carlo error).
    assert misses <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / draws)


def test_certified_radius_formula_and_abstention():
    radius = smoothing.certified_radius([0.4, 0.5, norm.cdf(1.5)], sigma=0.25)
    np.testing.assert_allclose(radius, [0.0, 0.0, 0.375], atol=1e-12)


def linear_binary_classifier(dim, seed):
    """f(x) = class 1 if w.x + b > 0 else class 0, as two logits."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=gen, dtype=torch.float64)
    b = torch.randn((), generator=gen, dtype=torch.float64)
    classify = lambda x: torch.stack([torch.zeros_like(x[:, 0]), x @ w + b], dim=1)  # noqa: E731
    return w, b, classify


def test_sample_counts_follow_the_smoothed_linear_probability():
    # Under x + sigma e, w.x + b is Gaussian with standard deviation sigma ||w||: P(class 1) = Phi(d / (sigma ||w||)).
    sigma, n = 0.5, 4000
    w, b, classify = linear_binary_classifier(6, seed=1)
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.3
    counts = smoothing.sample_counts(classify, x, sigma, n, 2, torch.Generator().manual_seed(3), batch_size=5000)
    assert counts.sum(1).eq(n).all()
    p_exact = norm.cdf(((x @ w + b) / (sigma * w.norm())).numpy())
    z = (counts[:, 1].numpy() / n - p_exact) / np.sqrt(p_exact * (1 - p_exact) / n + 1e-12)
    assert np.abs(z).max() < 4.5


def test_certify_radius_of_a_linear_classifier_is_below_and_close_to_the_exact_radius():
    # For a linear binary classifier the smoothed classifier is exact: g(x) = f(x) and its certified radius is the
    # distance |w.x + b| / ||w|| to the decision boundary (which sigma * Phi^-1(p_A) reproduces exactly).
    sigma, alpha = 0.5, 0.001
    w, b, classify = linear_binary_classifier(5, seed=4)
    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 0.4
    distance = ((x @ w + b).abs() / w.norm()).numpy()
    exact_class = ((x @ w + b) > 0).long().numpy()
    gaps = []
    for n in (100, 10_000):
        cert = smoothing.certify(classify, x, sigma, n0=100, n=n, alpha=alpha, num_classes=2,
                                 generator=torch.Generator().manual_seed(n))
        answered = cert.prediction != smoothing.ABSTAIN
        assert np.all(cert.prediction[answered] == exact_class[answered])
        # Each radius exceeds the truth with probability <= alpha; allow one such point among 300.
        assert np.sum(cert.radius > distance + 1e-9) <= 1
        certifiable = distance < 0.8 * sigma * norm.ppf(alpha ** (1 / n))  # away from the cap at p_lower=alpha^(1/n)
        gaps.append(np.mean((distance - cert.radius)[certifiable & answered]))
    assert gaps[1] < 0.5 * gaps[0] and gaps[1] < 0.05   # the bound tightens as n grows


def test_certify_uses_separate_selection_and_estimation_samples():
    # A classifier that counts its calls: selection and estimation are two separate sets of noisy evaluations.
    seen = []

    def classify(x):
        seen.append(len(x))
        return torch.stack([x[:, 0], -x[:, 0]], dim=1)

    x = torch.zeros(3, 2)
    smoothing.certify(classify, x, 1.0, n0=7, n=11, alpha=0.01, num_classes=2,
                      generator=torch.Generator().manual_seed(0), batch_size=1000)
    assert seen == [3 * 7, 3 * 11]


def test_certify_is_reproducible_and_batch_size_does_not_change_counts_distribution():
    w, b, classify = linear_binary_classifier(4, seed=6)
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    run = lambda bs: smoothing.certify(classify, x, 0.25, n0=50, n=500, alpha=0.001, num_classes=2,  # noqa: E731
                                       generator=torch.Generator().manual_seed(8), batch_size=bs)
    first, second = run(256), run(256)
    np.testing.assert_array_equal(first.counts, second.counts)
    np.testing.assert_array_equal(first.radius, second.radius)
    other = run(37)
    assert np.all(np.abs(other.counts - first.counts) <= 4 * np.sqrt(500 * 0.25) + 1)


def test_predict_abstains_on_a_tie_and_answers_on_a_clear_margin():
    w = torch.tensor([1.0, 0.0])
    classify = lambda x: torch.stack([torch.zeros(len(x)), x @ w], dim=1)  # noqa: E731
    x = torch.tensor([[0.0, 0.0], [3.0, 0.0], [-3.0, 0.0]])
    pred = smoothing.predict(classify, x, 0.5, n=2000, alpha=0.001, num_classes=2,
                             generator=torch.Generator().manual_seed(9))
    assert pred[1] == 1 and pred[2] == 0
    assert pred[0] == smoothing.ABSTAIN  # a fair coin: the tie test should not reject at alpha = 0.001


def test_certified_accuracy_counts_correct_points_with_enough_radius():
    cert = smoothing.Certificate(prediction=np.array([0, 1, smoothing.ABSTAIN, 2]),
                                 radius=np.array([0.3, 0.6, 0.0, 1.0]), p_lower=np.zeros(4), counts=np.zeros((4, 3)))
    np.testing.assert_allclose(cert.certified_accuracy(torch.tensor([0, 1, 2, 0]), [0.0, 0.5, 0.7]),
                               [0.5, 0.25, 0.0])


def test_agrees_with_adversarial_robustness_toolbox_certify():
    # ART's CERTIFY takes its Clopper-Pearson bound from statsmodels, which the book does not install; it is
    # replaced here by scipy's exact binomial interval, so the comparison is about sampling, selection and radius.
    import warnings

    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    sigma, alpha, n = 0.5, 0.001, 1000
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(80, 8, generator=torch.Generator().manual_seed(11))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = PyTorchRandomizedSmoothing(model=model, loss=nn.CrossEntropyLoss(), input_shape=(8,), nb_classes=4,
                                         device_type="cpu", sample_size=100, scale=sigma, alpha=alpha)
    art._lower_confidence_bound = lambda k, total: binomtest(int(k), int(total)).proportion_ci(
        confidence_level=1 - 2 * alpha, method="exact").low
    np.random.seed(12)
    art_prediction, art_radius = art.certify(x.numpy(), n=n, batch_size=1000)
    with torch.no_grad():
        ours = smoothing.certify(model, x, sigma, n0=100, n=n, alpha=alpha, num_classes=4,
                                 generator=torch.Generator().manual_seed(13))
        labels = model(x).argmax(1).numpy()  # the base prediction at the clean point, as a reference label
    radii = [0.0, 0.25, 0.5, 0.75, 1.0]
    ours_acc = ours.certified_accuracy(labels, radii)
    art_acc = np.array([np.mean((art_prediction == labels) & (art_radius >= r)) for r in radii])
    assert np.abs(ours_acc - art_acc).max() <= 0.05
    assert np.mean(art_prediction == ours.prediction) >= 0.9
    both = (art_prediction == ours.prediction) & (ours.prediction != smoothing.ABSTAIN)
    assert np.median(np.abs(art_radius[both] - ours.radius[both])) < 0.05
