"""The DPM-Solver++ chapter's own 2M sampler, loaded from its `method` cells, against perturb.diffusion (which is
itself checked against diffusers' DPMSolverMultistepScheduler in tests/test_diffusion.py) and against the
second-order convergence it should have."""
import numpy as np
import pytest
import torch

from perturb import diffusion
from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("dpm-solver-pp")


@pytest.fixture(scope="module")
def problem():
    schedule = diffusion.VPLinear()
    model = diffusion.digits_gmm(1)
    gen = torch.Generator().manual_seed(11)
    x_T = torch.randn(16, 64, generator=gen, dtype=torch.float64)
    classes = torch.randint(0, 10, (16,), generator=gen)
    return schedule, model, x_T, classes


@pytest.mark.parametrize("num_steps", [6, 15])
@pytest.mark.parametrize("clip", [False, True])
def test_chapter_2m_equals_library_2m(method, problem, num_steps, clip):
    schedule, model, x_T, classes = problem
    eps_fn = model.noise_fn(schedule, classes, 8.0)
    grid = diffusion.timesteps(schedule, num_steps)
    ours = method.dpm_solver_pp_2m(eps_fn, schedule, x_T, grid, clip=clip)
    library = diffusion.dpm_solver_pp(eps_fn, schedule, x_T, grid, order=2, thresholding="static" if clip else None)
    assert (ours - library).abs().max() < 1e-12


def test_chapter_first_order_step_is_ddim(method, problem):
    schedule, model, x_T, classes = problem
    eps_fn = model.noise_fn(schedule, classes, 4.0)
    d = method.data_prediction(eps_fn, schedule, x_T, 1.0)
    ours = method.first_order_step(x_T, d, schedule, 1.0, 0.7)
    noise_form = diffusion.first_order_update(schedule, x_T, 1.0, 0.7, eps_fn(x_T, 1.0), "noise")
    assert (ours - noise_form).abs().max() < 1e-12


def test_chapter_2m_is_second_order(method, problem):
    schedule, model, x_T, classes = problem
    eps_fn = model.noise_fn(schedule, classes, 1.0)
    reference = diffusion.reference_solution(eps_fn, schedule, x_T, 1500)
    sizes = [20, 40, 80]
    errors = [diffusion.sampler_error(method.dpm_solver_pp_2m(eps_fn, schedule, x_T,
                                                              diffusion.timesteps(schedule, n)), reference)
              for n in sizes]
    slope = -np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    assert 1.75 < slope < 2.5


def test_3m_global_orders_on_a_gaussian():
    """Whole runs of DPM-Solver++(3M) on data from one Gaussian, whose probability-flow ODE has a closed-form
    solution: with the exact third-order coefficient the global error falls at least as h^3; with the official
    (halved) coefficient only as h^2. Both start with the usual lower-order warm-up steps."""
    schedule = diffusion.VPLinear()
    gen = torch.Generator().manual_seed(0)
    mean = 0.5 * torch.randn(8, generator=gen, dtype=torch.float64)
    variance = 0.01 + 0.5 * torch.rand(8, generator=gen, dtype=torch.float64)
    x_T = torch.randn(16, 8, generator=gen, dtype=torch.float64)

    def eps_fn(x, t):
        alpha, sigma = float(schedule.alpha(t)), float(schedule.sigma(t))
        return sigma * (x - alpha * mean) / (alpha ** 2 * variance + sigma ** 2)

    def marginal_std(t):
        return torch.sqrt(float(schedule.alpha(t)) ** 2 * variance + float(schedule.sigma(t)) ** 2)

    # x_t - alpha_t mean scales with the marginal standard deviation along the ODE
    exact = (float(schedule.alpha(diffusion.T_END)) * mean + marginal_std(diffusion.T_END)
             / marginal_std(diffusion.T_START) * (x_T - float(schedule.alpha(diffusion.T_START)) * mean))
    assert diffusion.sampler_error(diffusion.reference_solution(eps_fn, schedule, x_T, 400), exact) < 1e-8
    sizes = [20, 40, 80, 160]
    slopes = {}
    for variant in ("corrected", "official"):
        errors = [diffusion.sampler_error(diffusion.dpm_solver_pp(eps_fn, schedule, x_T, n, order=3,
                                                                  lower_order_final=False, third_order=variant),
                                          exact) for n in sizes]
        slopes[variant] = -np.polyfit(np.log(sizes[1:]), np.log(errors[1:]), 1)[0]
    assert slopes["corrected"] > 2.8, slopes
    assert 1.8 < slopes["official"] < 2.5, slopes
