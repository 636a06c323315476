"""The momentum-diffusion-sampling chapter's own method (loaded from its `method` cells), checked against
independent references: the official beta-dependent multistep table of the paper's code, diffusers' PLMS
(`PNDMScheduler`) for single steps, the library's DPM-Solver++(2M), a direct eigenvalue computation of the
one-step linear map of each recurrence, textbook Adams-Bashforth stability facts, and measured orders."""
import math

import numpy as np
import pytest
import torch

from perturb import diffusion
from perturb.harness.notebook_code import load_method

# The multistep table of the official GHVB scheduler (numerators, before the division by beta), as published in
# the paper's repository (sWizad/momentum-diffusion, `AdamBmixer`): a fact to compare with, not code to run.
OFFICIAL_TABLE = {
    1: (lambda b: [b], 1.0),
    2: (lambda b: [2 + b, -(2 - b)], 2.0),
    3: (lambda b: [18 + 5 * b, -(24 - 8 * b), 6 - b], 12.0),
    4: (lambda b: [46 + 9 * b, -(78 - 19 * b), 42 - 5 * b, -(10 - b)], 24.0),
}


@pytest.fixture(scope="module")
def method():
    return load_method("momentum-diffusion-sampling")


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("beta", [1.0, 0.8, 0.5, 0.3])
def test_ghvb_coefficients_match_official_table(method, order, beta):
    numerators, denominator = OFFICIAL_TABLE[order]
    expected = np.array(numerators(beta)) / denominator
    assert np.allclose(method.ghvb_coefficients(order, beta), expected, atol=1e-12)


def test_beta_one_gives_adams_bashforth(method):
    assert np.allclose(method.ghvb_coefficients(4, 1.0), np.array([55, -59, 37, -9]) / 24, atol=1e-13)
    assert np.allclose(method.ghvb_coefficients(3, 1.0), np.array([23, -16, 5]) / 12, atol=1e-13)


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("beta", [1.0, 0.6])
def test_ghvb_polynomials_have_order_k(method, order, beta):
    """rho(e^h) - h sigma(e^h) = O(h^(k+1)): halving h divides the residual by about 2^(k+1)."""
    poly = method.characteristic_polynomials(order, beta, "GHVB", 0.0)  # rho alone (omega = 0)
    rho = poly.real
    sigma = np.zeros(order + 2)
    sigma[1:order + 1] = method.ghvb_coefficients(order, beta)[::-1]
    m = np.arange(order + 2)

    def residual(h):
        return abs(np.sum(rho * np.exp(m * h)) - h * np.sum(sigma * np.exp(m * h)))

    slope = math.log2(residual(0.02) / residual(0.01))
    assert abs(slope - (order + 1)) < 0.15


def _solve_scalar(method, order, beta, variant, num_steps):
    """y' = -y + sin(2 s) + y^2 / 4 on s in [0, 1], y(0) = 1, with uniform steps and the chapter's step."""
    f = lambda s, y: -y + math.sin(2 * s) + 0.25 * y * y  # noqa: E731
    h = 1.0 / num_steps
    y, velocity, history = 1.0, None, []
    for n in range(num_steps):
        y, velocity, history = method.momentum_step(y, h, f(n * h, y), velocity, history, order, beta, variant)
    return y


def test_convergence_orders(method):
    """HB is first order; PLMS and GHVB keep a higher order (the AB-1 warm-up step limits them to 2 globally)."""
    fine = _solve_scalar(method, 4, 1.0, "HB", 20000)

    def slope(order, beta, variant):
        errors = [abs(_solve_scalar(method, order, beta, variant, n) - fine) for n in (100, 200, 400)]
        return np.polyfit(np.log([100, 200, 400]), np.log(errors), 1)[0] * -1

    assert 0.85 < slope(4, 0.8, "HB") < 1.2
    assert slope(4, 1.0, "HB") > 1.85
    assert slope(3, 0.5, "GHVB") > 1.85


def _official_run(f, deltas, x_bar, order, beta, variant):
    """The official schedulers' rule, restated: the table above, velocity initialised with the first evaluation."""
    ets, vel = [], None
    for delta in deltas:
        eps = f(x_bar)
        if vel is None:
            vel = eps
        if variant == "HB":
            ets = (ets + [eps])[-order:]
            numerators, denominator = OFFICIAL_TABLE[len(ets)]
            prime = sum(c * e for c, e in zip(numerators(1.0), reversed(ets))) / denominator
            vel = (1 - beta) * vel + beta * prime
            x_bar = x_bar + delta * vel
        else:
            vel = (1 - beta) * vel + beta * eps
            ets = (ets + [vel])[-order:]
            numerators, denominator = OFFICIAL_TABLE[len(ets)]
            prime = sum(c * e for c, e in zip(numerators(beta), reversed(ets))) / denominator / beta
            x_bar = x_bar + delta * prime
    return x_bar


@pytest.mark.parametrize("order,beta,variant", [(4, 0.8, "HB"), (4, 0.5, "HB"), (3, 0.5, "GHVB"), (4, 0.8, "GHVB")])
def test_momentum_step_matches_official_rule(method, order, beta, variant):
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(5, 5, generator=gen, dtype=torch.float64) * 0.3
    f = lambda x: torch.tanh(x @ a) - 0.5 * x  # noqa: E731
    deltas = [-0.3, -0.25, -0.2, -0.2, -0.15, -0.1, -0.1]
    x0 = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    expected = _official_run(f, deltas, x0, order, beta, variant)
    x, velocity, history = x0, None, []
    for delta in deltas:
        x, velocity, history = method.momentum_step(x, delta, f(x), velocity, history, order, beta, variant)
    assert (x - expected).abs().max() < 1e-12


def test_plms_single_step_matches_diffusers(method):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False)
    scheduler.set_timesteps(20)
    gen = torch.Generator().manual_seed(5)
    sample = torch.randn(3, 8, generator=gen)
    history = [torch.randn(3, 8, generator=gen) for _ in range(4)]
    timestep = int(scheduler.timesteps[8])
    prev_timestep = timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    scheduler.ets, scheduler.counter = [h.clone() for h in history[:3]], 5
    theirs = scheduler.step(history[3], timestep, sample).prev_sample.double()
    ab_t = float(scheduler.alphas_cumprod[timestep])
    ab_prev = float(scheduler.alphas_cumprod[prev_timestep])
    sigma_bar = lambda ab: math.sqrt((1 - ab) / ab)  # noqa: E731
    x_bar, _, _ = method.momentum_step(sample.double() / math.sqrt(ab_t), sigma_bar(ab_prev) - sigma_bar(ab_t),
                                       history[3].double(), None, [h.double() for h in history[:3]], 4, 1.0)
    assert (x_bar * math.sqrt(ab_prev) - theirs).abs().max() < 1e-5


def _one_step_matrix(method, order, beta, variant, omega):
    """The linear map of one step on y' = lambda y (step 1, lambda = omega), applied to the unit vectors of the
    state (x_n, v_{n-1}, eps_{n-k+1..n-1}) for HB and (x_n, v_{n-k+1..n-1}) for GHVB (v_{n-1} is the newest)."""
    if variant == "HB":
        size = order + 1

        def step(state):
            x, v, hist = state[0], state[1], list(state[2:])
            x, v, hist = method.momentum_step(x, 1.0, omega * x, v, hist, order, beta, "HB")
            return [x, v] + hist[len(hist) - (order - 1):] if order > 1 else [x, v]
    else:
        size = max(order, 2)

        def step(state):
            x, hist = state[0], list(state[1:])
            x, v, hist = method.momentum_step(x, 1.0, omega * x, hist[-1], hist, order, beta, "GHVB")
            return [x] + (hist[len(hist) - (order - 1):] if order > 1 else [v])
    columns = [step([complex(i == j) for i in range(size)]) for j in range(size)]
    return np.array(columns, dtype=complex).T


@pytest.mark.parametrize("order,beta,variant", [(1, 0.7, "HB"), (2, 0.8, "HB"), (4, 1.0, "HB"), (4, 0.8, "HB"),
                                                (4, 0.5, "HB"), (2, 0.6, "GHVB"), (3, 0.5, "GHVB"),
                                                (4, 0.8, "GHVB")])
@pytest.mark.parametrize("omega", [-0.35, -0.8 + 0.4j, 0.3j, -2.0])
def test_characteristic_polynomial_matches_recurrence(method, order, beta, variant, omega):
    eig = np.linalg.eigvals(_one_step_matrix(method, order, beta, variant, omega))
    roots = np.roots(method.characteristic_polynomials(order, beta, variant, omega)[::-1])
    eig, roots = eig[np.abs(eig) > 1e-7], list(roots[np.abs(roots) > 1e-7])
    assert len(eig) == len(roots)
    for z in eig:  # match each eigenvalue to a distinct root
        nearest = int(np.argmin([abs(z - r) for r in roots]))
        assert abs(z - roots.pop(nearest)) < 1e-7
    assert abs(np.abs(eig).max() - method.spectral_radius(order, beta, variant, omega)) < 1e-9


def test_textbook_stability_facts(method):
    stable, cell, _ = method.stability_region(1, 1.0, "HB", (-2.5, 0.5), (-1.5, 1.5), 301)
    assert abs(stable.sum() * cell - math.pi) < 0.05  # AB-1: the unit disk centred at -1
    assert abs(method.real_stability_interval(1, 1.0, "HB") + 2.0) < 2e-3
    assert abs(method.real_stability_interval(2, 1.0, "HB") + 1.0) < 2e-3
    assert abs(method.real_stability_interval(3, 1.0, "HB") + 6.0 / 11.0) < 2e-3
    assert abs(method.real_stability_interval(4, 1.0, "HB") + 0.3) < 2e-3
    for beta in (0.8, 0.5):  # AB-2 + HB (exercise 1): the interval ends at (beta - 2) / beta
        assert abs(method.real_stability_interval(2, beta, "HB", left=-4.0, points=4001) - (beta - 2) / beta) < 2e-3


@pytest.fixture(scope="module")
def problem():
    schedule = diffusion.VPLinear()
    model = diffusion.digits_gmm(1)
    gen = torch.Generator().manual_seed(11)
    x_T = torch.randn(8, 64, generator=gen, dtype=torch.float64)
    classes = torch.randint(0, 10, (8,), generator=gen)
    return schedule, model.noise_fn(schedule, classes, 8.0), x_T


@pytest.mark.parametrize("num_steps", [8, 12])
@pytest.mark.parametrize("spacing", ["time_uniform", "logSNR"])
def test_dpm_solver_pp_2m_beta_one_is_library(method, problem, num_steps, spacing):
    schedule, eps_fn, x_T = problem
    grid = diffusion.timesteps(schedule, num_steps, spacing)
    ours = method.dpm_solver_pp_2m_momentum(eps_fn, schedule, x_T, grid, 1.0)
    library = diffusion.dpm_solver_pp(eps_fn, schedule, x_T, grid, order=2)
    assert (ours - library).abs().max() < 1e-12


def test_plms_beta_one_variants_agree_and_first_step_is_ddim(method, problem):
    schedule, eps_fn, x_T = problem
    grid = diffusion.timesteps(schedule, 10, "time_uniform")
    hb = method.momentum_plms(eps_fn, schedule, x_T, grid, 4, 1.0, "HB")
    ghvb = method.momentum_plms(eps_fn, schedule, x_T, grid, 4, 1.0, "GHVB")
    assert (hb - ghvb).abs().max() < 1e-12
    one_step = method.momentum_plms(eps_fn, schedule, x_T, grid[:2], 4, 0.5, "GHVB")
    ddim = diffusion.ddim(eps_fn, schedule, x_T, grid[:2])
    assert (one_step - ddim).abs().max() < 1e-12


def test_artifact_score(method):
    x = torch.tensor([[0.0, 4.0, -5.0, 2.9]])
    assert method.artifact_score(x, 0.0, 1.0) == pytest.approx((4.0 + 5.0) / 4)
