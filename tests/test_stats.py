"""perturb.stats against direct computations: the unbiased MMD^2 by an explicit double loop, the median
heuristic by numpy, and the permutation test's calibration under the null and its power under a shift."""
import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from perturb import stats


def double_loop_mmd2(X, Y, bandwidth):
    """MMD^2_u written term by term (Gretton et al. 2012, Eq. 3), in float64 numpy."""
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * bandwidth ** 2))
    m, n = len(X), len(Y)
    xx = sum(k(X[i], X[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(Y[i], Y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(X[i], Y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_unbiased_mmd2_matches_the_double_loop():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(13, 4))
    Y = rng.normal(loc=0.4, size=(9, 4))
    for bandwidth in (0.5, 1.0, 3.0):
        ours = stats.mmd2_unbiased(torch.as_tensor(X), torch.as_tensor(Y), bandwidth)
        assert ours == pytest.approx(double_loop_mmd2(X, Y, bandwidth), rel=1e-10, abs=1e-12)


def test_median_bandwidth_matches_numpy_and_is_used_by_default():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(10, 3)), rng.normal(size=(7, 3))
    Z = np.concatenate([X, Y])
    distances = np.sqrt(((Z[:, None] - Z[None]) ** 2).sum(-1))[~np.eye(len(Z), dtype=bool)]
    h = stats.median_bandwidth(torch.as_tensor(X), torch.as_tensor(Y))
    assert h == pytest.approx(np.median(distances), rel=1e-6)
    default = stats.mmd2_unbiased(torch.as_tensor(X), torch.as_tensor(Y))
    assert default == pytest.approx(double_loop_mmd2(X, Y, h), rel=1e-6)


def test_gaussian_kernel_rejects_bad_bandwidths():
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError):
        stats.gaussian_kernel(x, x, 0.0)
    with pytest.raises(ValueError):
        stats.mmd2_unbiased(x, x, "mean")
    with pytest.raises(ValueError):
        stats.mmd2_unbiased(x[:1], x)


def test_unbiased_estimate_is_centred_under_the_null():
    # E[MMD^2_u] = 0 when P = Q: the mean over many draws is within a few standard errors of zero.
    gen = torch.Generator().manual_seed(2)
    values = [stats.mmd2_unbiased(torch.randn(20, 3, generator=gen), torch.randn(15, 3, generator=gen), 1.5)
              for _ in range(300)]
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))


def test_permutation_test_is_calibrated_under_the_null():
    gen = torch.Generator().manual_seed(3)
    p_values = []
    for _ in range(40):
        X, Y = torch.randn(25, 5, generator=gen), torch.randn(20, 5, generator=gen)
        p_values.append(stats.mmd_permutation_test(X, Y, num_permutations=99, generator=gen)[1])
    p_values = np.array(p_values)
    # Rejection rate at alpha = 0.1 near 0.1 (binomial(40, 0.1): 12 or more rejections has probability < 0.001),
    # and the p-values do not depart from uniform by a Kolmogorov-Smirnov test.
    assert (p_values <= 0.1).sum() <= 11
    assert scipy_stats.kstest(p_values, "uniform").pvalue > 0.01
    assert p_values.min() >= 1 / 100  # the smallest p-value a 99-permutation test can give


def test_permutation_test_has_power_on_an_obvious_shift_and_is_reproducible():
    gen = torch.Generator().manual_seed(4)
    rejections = 0
    for _ in range(10):
        X, Y = torch.randn(30, 5, generator=gen), torch.randn(30, 5, generator=gen) + 1.0
        mmd2, p = stats.mmd_permutation_test(X, Y, num_permutations=99, generator=gen)
        rejections += (p <= 0.05) and mmd2 > 0
    assert rejections == 10
    X, Y = torch.randn(12, 2), torch.randn(12, 2)
    first = stats.mmd_permutation_test(X, Y, generator=torch.Generator().manual_seed(5))
    second = stats.mmd_permutation_test(X, Y, generator=torch.Generator().manual_seed(5))
    assert first == second


def test_permutation_null_is_returned_and_matches_relabelled_statistics():
    """return_null gives the permuted statistics themselves: the same p-value, and each one equal to MMD^2_u of
    the pooled sample relabelled by the same permutation (drawn again from a generator in the same state)."""
    rng = np.random.default_rng(8)
    X = torch.as_tensor(rng.normal(size=(12, 3)))
    Y = torch.as_tensor(rng.normal(loc=0.3, size=(10, 3)))
    plain = stats.mmd_permutation_test(X, Y, num_permutations=30, generator=torch.Generator().manual_seed(9))
    mmd2, p_value, null = stats.mmd_permutation_test(X, Y, num_permutations=30, return_null=True,
                                                     generator=torch.Generator().manual_seed(9))
    assert (mmd2, p_value) == plain and null.shape == (30,) and null.dtype == np.float64
    assert p_value == (1 + np.sum(null >= mmd2)) / 31
    h = stats.median_bandwidth(X, Y)
    Z, gen = torch.cat([X, Y]), torch.Generator().manual_seed(9)
    for value in null:
        order = torch.randperm(len(Z), generator=gen)
        assert value == pytest.approx(stats.mmd2_unbiased(Z[order[:12]], Z[order[12:]], bandwidth=h), rel=1e-9)
