"""The DPM-Solver-v3 chapter's own method, loaded from its `method` cells: with fixed statistics it must reduce
to the samplers of perturb.diffusion (DPM-Solver++ for l=1, s=b=0; DPM-Solver for l=0, s=-1, b=0), and its
estimators of the empirical model statistics must match closed forms."""
import math

import numpy as np
import pytest
import torch

from perturb import diffusion
from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("dpm-solver-v3")


@pytest.fixture(scope="module")
def problem(method):
    schedule = diffusion.VPLinear()
    model = diffusion.digits_gmm(1)
    x_T = torch.randn(16, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    lam = torch.linspace(float(schedule.lam(1.0)), float(schedule.lam(1e-3)), 121, dtype=torch.float64)
    return schedule, model.noise_fn(schedule), x_T, lam, method.grid_times(schedule, lam)


@pytest.mark.parametrize("num_steps", [5, 8, 12])
@pytest.mark.parametrize("l_value, s_value, prediction", [(1.0, 0.0, "data"), (0.0, -1.0, "noise")])
def test_first_order_sampler_is_ddim(method, problem, num_steps, l_value, s_value, prediction):
    schedule, eps_fn, x_T, lam, times = problem
    tables = method.ConstantEMSTables(lam, 64, l_value, s_value)
    indices = method.snapped_indices(120, num_steps)
    ours = method.dpm_solver_v3(eps_fn, schedule, tables, x_T, indices, order=1, use_corrector=False)
    library = diffusion.sample_multistep(eps_fn, schedule, x_T, times[indices], 1, prediction)
    assert (ours - library).abs().max() < 1e-10


@pytest.mark.parametrize("l_value, s_value, prediction", [(1.0, 0.0, "data"), (0.0, -1.0, "noise")])
def test_third_order_step_is_multistep_update(method, problem, l_value, s_value, prediction):
    """The full Taylor system integrates the quadratic interpolant exactly, as the corrected 3M does."""
    schedule, eps_fn, x_T, lam, times = problem
    tables = method.ConstantEMSTables(lam, 64, l_value, s_value)
    indices = [40, 50, 62, 75]  # uneven steps
    _, path = diffusion.dpm_solver_pp(eps_fn, schedule, x_T, times[[0] + indices[:3]], order=2,
                                      return_trajectory=True)
    history = [(x, eps_fn(x, float(t)), i) for (t, x), i in zip(path[1:], indices[:3])]
    alpha = schedule.alpha(times)[:, None]
    sigma = schedule.sigma(times)[:, None]
    ours = method.v3_update(tables, alpha, sigma, history[::-1], indices[3], 3, False)
    outputs = [diffusion.model_output(eps_fn, schedule, x, float(times[i]), prediction) for x, _, i in history]
    library = diffusion.multistep_update(schedule, history[-1][0], outputs, [float(times[i]) for i in indices[:3]],
                                         float(times[indices[3]]), 3, prediction)
    assert (ours - library).abs().max() < 1e-10


def test_trapezoid_tables_converge_to_closed_form(method, problem):
    """The trapezoid tables of the degenerate statistics approach the closed forms (second order in the grid)."""
    _, _, _, lam, _ = problem
    gaps = []
    for refine in (1, 2):
        fine = torch.linspace(float(lam[0]), float(lam[-1]), 120 * refine + 1, dtype=torch.float64)
        ones = torch.ones(len(fine), 3, dtype=torch.float64)
        trapezoid = method.EMSTables(fine, ones, 0 * ones, 0 * ones)
        exact = method.ConstantEMSTables(fine, 3, 1.0, 0.0)
        gaps.append(float(((trapezoid.I - exact.I) / exact.I[-1]).abs().max()))
        moment, exact_moment = float(trapezoid.moment(0, 30 * refine, 2)[0]), float(exact.moment(0, 30 * refine, 2)[0])
        assert abs(moment / exact_moment - 1) < 5e-3
    assert 3.5 < gaps[0] / gaps[1] < 4.5


def test_diagonal_jacobian_against_jacrev(method, problem):
    schedule, eps_fn, x_T, _, _ = problem
    x, t = x_T[:6], 0.4
    exact = torch.func.vmap(torch.func.jacrev(lambda y: eps_fn(y[None], t)[0]))(x).diagonal(dim1=1, dim2=2)
    basis = torch.eye(64, dtype=torch.float64)[:, None, :].expand(64, len(x), 64)
    estimate, eps = method.diagonal_jacobian(eps_fn, x, t, basis)
    assert (64 * estimate - exact).abs().max() < 1e-10
    assert (eps - eps_fn(x, t)).abs().max() < 1e-12
    probes = method.rademacher_probes(2000, x.shape, torch.Generator().manual_seed(1), x)
    estimate, _ = method.diagonal_jacobian(eps_fn, x, t, probes)
    assert float((estimate - exact).norm() / exact.norm()) < 0.03


def test_ems_of_a_gaussian(method):
    """For one Gaussian N(mu, Sigma), eps = sigma P (x - alpha mu) with P = (alpha^2 Sigma + sigma^2 I)^-1, so
    l = sigma^2 diag(P) at every lambda, whatever the samples."""
    schedule = diffusion.VPLinear()
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(8, 8, generator=gen, dtype=torch.float64)
    covariance = 0.3 * a @ a.T / 8 + 0.05 * torch.eye(8, dtype=torch.float64)
    mean = torch.randn(1, 8, generator=gen, dtype=torch.float64)
    model = diffusion.GaussianMixtureDenoiser(mean, covariance[None], torch.ones(1, dtype=torch.float64))
    lam = torch.linspace(float(schedule.lam(1.0)), float(schedule.lam(1e-3)), 41, dtype=torch.float64)
    x_start = torch.randn(256, 8, generator=gen, dtype=torch.float64)
    l, s, b = method.estimate_ems(model.noise_fn(schedule), schedule, lam, x_start, gen, num_probes=2)
    times = method.grid_times(schedule, lam)
    alpha, sigma = schedule.alpha(times), schedule.sigma(times)
    precision = torch.linalg.inv(alpha[:, None, None] ** 2 * covariance + sigma[:, None, None] ** 2 * torch.eye(8))
    exact = sigma[:, None] ** 2 * precision.diagonal(dim1=1, dim2=2)
    assert float((l - exact).abs().max()) < 0.05
    assert torch.isfinite(s).all() and torch.isfinite(b).all()


def test_linear_fit_matches_polyfit(method):
    gen = np.random.default_rng(0)
    f = gen.normal(size=(3, 50, 4))
    f_dot = 0.7 * f - 0.2 + 0.1 * gen.normal(size=f.shape)
    s, b = method.fit_linear_dynamics(torch.as_tensor(f), torch.as_tensor(f_dot))
    for k in range(3):
        for d in range(4):
            slope, intercept = np.polyfit(f[k, :, d], f_dot[k, :, d], 1)
            assert math.isclose(float(s[k, d]), slope, rel_tol=1e-9)
            assert math.isclose(float(b[k, d]), intercept, rel_tol=1e-9, abs_tol=1e-12)



@pytest.mark.parametrize("num_steps", [6, 12, 15])
def test_final_orders_are_lowered_at_every_budget(method, problem, num_steps):
    """As the official sample(): lower_order_final lowers the last steps at any number of steps (DPM-Solver++ only
    below 10), so the flag changes a 12- or 15-step run as much as a 6-step one."""
    schedule, eps_fn, x_T, lam, times = problem
    tables = method.ConstantEMSTables(lam, 64, 1.0, 0.0)
    indices = method.snapped_indices(120, num_steps)
    lowered, kept = (method.dpm_solver_v3(eps_fn, schedule, tables, x_T, indices, use_corrector=False,
                                          lower_order_final=flag) for flag in (True, False))
    assert (lowered - kept).abs().max() > 1e-6
