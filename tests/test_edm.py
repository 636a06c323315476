"""perturb.edm against the closed forms of Karras et al. (2022): the noise levels of their Eq. 5 and the
preconditioning of their Table 1, checked through the properties that define them."""
import math

import numpy as np
import pytest
import torch

from perturb import edm


def test_levels_match_eq_5_term_by_term():
    M, lo, hi, rho = 18, 0.002, 80.0, 7.0
    sigmas = edm.karras_sigmas(M, lo, hi, rho)
    expected = [(hi ** (1 / rho) + i / (M - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(M)]
    np.testing.assert_allclose(sigmas.numpy(), expected, rtol=1e-12)
    assert sigmas.dtype == torch.float64 and len(sigmas) == M


def test_levels_end_points_order_and_zero():
    sigmas = edm.karras_sigmas(20, 0.002, 2.0)
    assert float(sigmas[0]) == pytest.approx(2.0, rel=1e-12)
    assert float(sigmas[-1]) == pytest.approx(0.002, rel=1e-12)
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    with_zero = edm.karras_sigmas(20, 0.002, 2.0, append_zero=True)
    assert len(with_zero) == 21 and float(with_zero[-1]) == 0.0
    torch.testing.assert_close(with_zero[:-1], sigmas)


def test_levels_are_uniform_in_sigma_to_the_one_over_rho():
    rho = 7.0
    roots = edm.karras_sigmas(12, 0.01, 40.0, rho) ** (1 / rho)
    steps = roots[1:] - roots[:-1]
    torch.testing.assert_close(steps, torch.full_like(steps, float(steps[0])), rtol=1e-10, atol=0)


def test_rho_one_is_linear_and_large_rho_tends_to_geometric():
    np.testing.assert_allclose(edm.karras_sigmas(5, 1.0, 5.0, rho=1.0).numpy(), [5, 4, 3, 2, 1], rtol=1e-12)
    geometric = 40.0 * (0.01 / 40.0) ** (np.arange(9) / 8)
    np.testing.assert_allclose(edm.karras_sigmas(9, 0.01, 40.0, rho=1e6).numpy(), geometric, rtol=1e-4)


def test_levels_dtype_device_and_bad_arguments():
    assert edm.karras_sigmas(4, 0.1, 1.0, dtype=torch.float32).dtype == torch.float32
    for args in ((1, 0.1, 1.0), (4, 1.0, 0.1), (4, 0.0, 1.0)):
        with pytest.raises(ValueError):
            edm.karras_sigmas(*args)


def test_preconditioning_matches_table_1():
    sd = 0.5
    for sigma in (0.002, 0.1, 0.5, 1.0, 80.0):
        c = edm.preconditioning(sigma, sd)
        assert float(c.c_skip) == pytest.approx(sd ** 2 / (sigma ** 2 + sd ** 2), rel=1e-12)
        assert float(c.c_out) == pytest.approx(sigma * sd / math.sqrt(sigma ** 2 + sd ** 2), rel=1e-12)
        assert float(c.c_in) == pytest.approx(1 / math.sqrt(sigma ** 2 + sd ** 2), rel=1e-12)
        assert float(c.c_noise) == pytest.approx(math.log(sigma) / 4, rel=1e-12)
        assert float(edm.loss_weight(sigma, sd)) == pytest.approx((sigma ** 2 + sd ** 2) / (sigma * sd) ** 2,
                                                                  rel=1e-12)


def test_preconditioning_design_properties():
    """The properties EDM derives the scalings from (Appendix B.6): unit-variance network input, unit-variance
    effective target, c_skip minimising c_out, and the loss weight equal to 1 / c_out^2."""
    sd = 0.5
    sigma = torch.logspace(-3, 2, 41, dtype=torch.float64)
    c = edm.preconditioning(sigma, sd)
    # Var(c_in (y + sigma n)) = 1 for Var(y) = sd^2
    torch.testing.assert_close(c.c_in ** 2 * (sd ** 2 + sigma ** 2), torch.ones_like(sigma))
    # effective target (y - c_skip (y + sigma n)) / c_out has unit variance
    target_var = ((1 - c.c_skip) ** 2 * sd ** 2 + c.c_skip ** 2 * sigma ** 2) / c.c_out ** 2
    torch.testing.assert_close(target_var, torch.ones_like(sigma))
    # c_skip is the minimiser of that variance: its derivative in c_skip vanishes there
    derivative = -2 * (1 - c.c_skip) * sd ** 2 + 2 * c.c_skip * sigma ** 2
    torch.testing.assert_close(derivative, torch.zeros_like(sigma), atol=1e-12, rtol=0)
    torch.testing.assert_close(edm.loss_weight(sigma, sd), 1 / c.c_out ** 2)
    # limits: identity at no noise, pure prediction at large noise
    assert float(c.c_skip[0]) == pytest.approx(1.0, abs=1e-4) and float(c.c_skip[-1]) < 1e-4
    assert float(c.c_out[-1]) == pytest.approx(sd, rel=1e-4)


def test_preconditioning_keeps_tensor_dtype_and_shape():
    sigma = torch.tensor([[0.1], [2.0]], dtype=torch.float32)
    c = edm.preconditioning(sigma)
    assert all(v.dtype == torch.float32 and v.shape == (2, 1) for v in c)
    assert edm.loss_weight(sigma).dtype == torch.float32


def test_simulated_optimal_denoiser_has_unit_variance_target():
    """With Gaussian data of std sigma_data the optimal D is the shrinkage sd^2/(sd^2+sigma^2) x = c_skip x, so
    the optimal F is zero: the preconditioning puts the trivial part of the denoiser into c_skip."""
    gen = torch.Generator().manual_seed(0)
    sd, sigma = 0.5, 0.7
    y = sd * torch.randn(200000, generator=gen, dtype=torch.float64)
    x = y + sigma * torch.randn(200000, generator=gen, dtype=torch.float64)
    c = edm.preconditioning(sigma, sd)
    slope = float((x * y).mean() / (x * x).mean())                         # least-squares E[y | x] = slope x
    assert slope == pytest.approx(float(c.c_skip), rel=0.01)
    assert float(((y - c.c_skip * x) / c.c_out).var()) == pytest.approx(1.0, rel=0.02)
