"""The BDIA chapter's own method, loaded from its `method` cells: gamma = 0 is the library's DDIM (itself checked
against diffusers in tests/test_diffusion.py), the inverse step undoes the forward step to round-off, a
two-step case computed by hand, and the determinant of an EDICT step behind the chapter's account of its error."""
import math

import pytest
import torch

from perturb import diffusion
from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("bdia-exact-inversion")


@pytest.fixture(scope="module")
def problem():
    schedule = diffusion.VPLinear()
    model = diffusion.digits_gmm(1)
    gen = torch.Generator().manual_seed(5)
    x_T = torch.randn(16, 64, generator=gen, dtype=torch.float64)
    images = model.sample(16, generator=gen).clamp(-1.0, 1.0)
    return schedule, model.noise_fn(schedule), x_T, images


class TableSchedule:
    """alpha_t, sigma_t given at three times by Pythagorean triples, so the hand computation is exact."""
    alphas = {0: 0.96, 1: 0.8, 2: 0.6}

    def alpha(self, t):
        return torch.tensor(self.alphas[int(t)], dtype=torch.float64)

    def sigma(self, t):
        return torch.tensor(math.sqrt(1.0 - self.alphas[int(t)] ** 2), dtype=torch.float64)


@pytest.mark.parametrize("spacing", ["time_uniform", "logSNR"])
@pytest.mark.parametrize("num_steps", [2, 7, 25])
def test_gamma_zero_is_library_ddim(method, problem, spacing, num_steps):
    schedule, eps_fn, x_T, _ = problem
    grid = diffusion.timesteps(schedule, num_steps, spacing)
    ours = method.bdia_sample(eps_fn, schedule, x_T, grid, 0.0)
    library = diffusion.ddim(eps_fn, schedule, x_T, grid)
    assert (ours - library).abs().max() < 1e-10


def test_ddim_invert_matches_library_update(method, problem):
    schedule, eps_fn, _, images = problem
    grid = [float(t) for t in diffusion.timesteps(schedule, 1, "time_uniform", t_start=0.3, t_end=0.2)]
    ours = method.ddim_invert(eps_fn, schedule, images, grid)
    library = diffusion.first_order_update(schedule, images, 0.2, 0.3, eps_fn(images, 0.2), "noise")
    assert (ours - library).abs().max() < 1e-12


@pytest.mark.parametrize("gamma", [1.0, 0.7])
def test_inverse_step_undoes_forward_step(method, problem, gamma):
    schedule, eps_fn, x_T, _ = problem
    z_plus, z_i = x_T, 0.9 * x_T
    z_minus = method.bdia_step(eps_fn, schedule, z_plus, z_i, 0.6, 0.5, 0.4, gamma)
    back = method.bdia_inverse_step(eps_fn, schedule, z_minus, z_i, 0.6, 0.5, 0.4, gamma)
    assert (back - z_plus).abs().max() < 1e-13


@pytest.mark.parametrize("num_steps", [3, 30])
def test_roundtrip_is_identity_and_ddim_is_not(method, problem, num_steps):
    schedule, eps_fn, _, images = problem
    grid = diffusion.timesteps(schedule, num_steps, "time_uniform")
    pair = method.bdia_invert(eps_fn, schedule, images, grid, 1.0)
    assert (method.bdia_sample(eps_fn, schedule, pair, grid, 1.0) - images).abs().max() < 1e-12
    latent = method.ddim_invert(eps_fn, schedule, images, grid)
    assert (diffusion.ddim(eps_fn, schedule, latent, grid) - images).abs().max() > 1e-2


def test_edict_roundtrip_is_identity(method, problem):
    schedule, eps_fn, _, images = problem
    grid = [float(t) for t in diffusion.timesteps(schedule, 20, "time_uniform")]
    pair = method.edict_invert(eps_fn, schedule, images, grid)
    x, y = method.edict_sample(eps_fn, schedule, pair, grid)
    assert max(float((x - images).abs().max()), float((y - images).abs().max())) < 1e-10


def test_two_steps_by_hand(method):
    """eps(z, t) = z / 2, gamma = 1/2, alpha = 0.6, 0.8, 0.96 at t = 2, 1, 0, z_2 = 1:
    z_1 = D(z_2, 2->1) = 0.8 (1 - 0.4) / 0.6 + 0.3 = 1.1;
    D(z_1, 1->2) = 1.1 (0.6 * 0.7 / 0.8 + 0.4) = 1.0175;  D(z_1, 1->0) = 1.1 (0.96 * 0.7 / 0.8 + 0.14) = 1.078;
    z_0 = 0.5 * 1 - 0.5 * 1.0175 + 1.078 = 1.06925, and the inverse from (z_0, z_1) returns z_2 = 1."""
    schedule = TableSchedule()
    eps_fn = lambda z, t: 0.5 * z  # noqa: E731
    z_2 = torch.ones(1, 1, dtype=torch.float64)
    z_0 = method.bdia_sample(eps_fn, schedule, z_2, [2, 1, 0], 0.5)
    assert abs(float(z_0) - 1.06925) < 1e-14
    z_1 = torch.full((1, 1), 1.1, dtype=torch.float64)
    assert abs(float(method.bdia_inverse_step(eps_fn, schedule, z_0, z_1, 2, 1, 0, 0.5)) - 1.0) < 1e-14
    z_0_ddim = method.bdia_sample(eps_fn, schedule, z_2, [2, 1, 0], 0.0)
    assert abs(float(z_0_ddim) - 1.078) < 1e-14  # gamma = 0: two DDIM steps


@pytest.mark.parametrize("slope", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("times", [(1.0, 0.9), (0.6, 0.5), (0.2, 0.1)])
def test_edict_step_jacobian_determinant_is_a_squared_p_squared(method, slope, times):
    """The chapter explains EDICT's few-step error by the difference mode of its coupled pair: for any linear noise
    predictor eps(z) = c z, the coupling layers of one EDICT step have Jacobian determinant a^2 and the mixing
    layers p^2, so the whole step has determinant a^2 p^2: where the common mode x = y keeps an eigenvalue near 1
    (near-pure noise), the difference mode x - y carries the factor a^2 p^2. Checked by autograd."""
    schedule, mix = diffusion.VPLinear(), 0.93
    t_from, t_to = times
    a = float(schedule.alpha(t_to)) / float(schedule.alpha(t_from))

    def step(pair):
        x, y = pair[:1, None], pair[1:, None]
        x_new, y_new = method.edict_step(lambda z, t: slope * z, schedule, x, y, t_from, t_to, mix)
        return torch.cat([x_new[:, 0], y_new[:, 0]])

    jacobian = torch.autograd.functional.jacobian(step, torch.tensor([0.3, -0.7], dtype=torch.float64))
    assert float(torch.linalg.det(jacobian)) == pytest.approx(a ** 2 * mix ** 2, rel=1e-12)
