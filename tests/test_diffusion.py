"""perturb.diffusion against independent references: the mixture's score against autograd of torch.distributions'
log-density, the schedule's closed-form inverse against its forward map (and the official DPM-Solver formula),
the solvers' convergence orders against a converged reference, and DPM-Solver++(2M/3M, with clipping) and DDIM
against the schedulers of the diffusers library driven by the same exact noise predictor."""
import math

import numpy as np
import pytest
import torch

import perturb
from perturb import diffusion as D

SCHEDULE = D.VPLinear()


@pytest.fixture(scope="module")
def digits_model():
    return D.digits_gmm(1)


@pytest.fixture(scope="module")
def small_mixture():
    """Two components per class, three classes, random full covariances, in 5-D."""
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    factors = torch.randn(6, 5, 5, generator=gen, dtype=torch.float64) * 0.5
    covariances = factors @ factors.transpose(1, 2) + 0.05 * torch.eye(5, dtype=torch.float64)
    weights = torch.rand(6, generator=gen, dtype=torch.float64) + 0.2
    return D.GaussianMixtureDenoiser(means, covariances, weights, torch.tensor([0, 0, 1, 1, 2, 2]))


def noised_mixture(model, alpha, sigma, components=None):
    """The VP-noised mixture as a torch.distributions object (optionally restricted to some components)."""
    index = torch.arange(model.num_components) if components is None else components
    mix = torch.distributions.Categorical(logits=model.log_weights[index])
    cov = alpha ** 2 * model.covariances[index] + sigma ** 2 * torch.eye(model.dim, dtype=torch.float64)
    comp = torch.distributions.MultivariateNormal(alpha * model.means[index], covariance_matrix=cov)
    return torch.distributions.MixtureSameFamily(mix, comp)


def autograd_score(dist, x):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(dist.log_prob(x).sum(), x)[0]


@pytest.mark.parametrize("t", [0.002, 0.05, 0.3, 1.0])
def test_mixture_score_matches_autograd_of_noised_log_density(small_mixture, t):
    alpha, sigma = float(SCHEDULE.alpha(t)), float(SCHEDULE.sigma(t))
    gen = torch.Generator().manual_seed(1)
    x = alpha * small_mixture.sample(40, gen) + sigma * torch.randn(40, 5, generator=gen, dtype=torch.float64)
    dist = noised_mixture(small_mixture, alpha, sigma)
    torch.testing.assert_close(small_mixture.log_prob(x, alpha, sigma), dist.log_prob(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(small_mixture.score(x, alpha, sigma), autograd_score(dist, x), rtol=1e-9, atol=1e-9)
    # Class-conditional: the mixture of that class's components only.
    cls = torch.full((40,), 1)
    class_dist = noised_mixture(small_mixture, alpha, sigma, torch.tensor([2, 3]))
    torch.testing.assert_close(small_mixture.score(x, alpha, sigma, cls), autograd_score(class_dist, x),
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(small_mixture.log_prob(x, alpha, sigma, cls), class_dist.log_prob(x),
                               rtol=1e-10, atol=1e-10)


def test_guided_eps_is_classifier_free_combination(digits_model):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(8, 64, generator=gen, dtype=torch.float64)
    cls = torch.arange(8)
    alpha, sigma = float(SCHEDULE.alpha(0.4)), float(SCHEDULE.sigma(0.4))
    eps_u = digits_model.eps(x, alpha, sigma)
    eps_c = digits_model.eps(x, alpha, sigma, cls)
    torch.testing.assert_close(digits_model.eps(x, alpha, sigma, cls, guidance=7.5),
                               D.classifier_free_guidance(eps_u, eps_c, 7.5), rtol=1e-12, atol=1e-12)
    # One component per class: the conditional eps is that Gaussian's, in closed form.
    cov = alpha ** 2 * digits_model.covariances[cls] + sigma ** 2 * torch.eye(64, dtype=torch.float64)
    centred = x - alpha * digits_model.means[cls]
    torch.testing.assert_close(eps_c, sigma * torch.linalg.solve(cov, centred.unsqueeze(-1)).squeeze(-1),
                               rtol=1e-9, atol=1e-9)


def test_digits_mixture_matches_class_statistics(digits_model):
    X, y = perturb.data.digits(dtype=torch.float64, pixels="signed")
    assert X.min() == -1 and X.max() == 1 and digits_model.num_components == 10 and digits_model.dim == 64
    torch.testing.assert_close(digits_model.means[3], X[y == 3].mean(0))
    torch.testing.assert_close(digits_model.log_weights.exp()[3], (y == 3).double().mean())
    samples = digits_model.sample(4000, torch.Generator().manual_seed(3), cls=torch.full((4000,), 3))
    assert (samples.mean(0) - digits_model.means[3]).abs().max() < 0.1


def test_schedule_inverse_lambda_inverts_forward():
    t = torch.linspace(1e-4, 1.0, 2001, dtype=torch.float64)
    torch.testing.assert_close(SCHEDULE.inverse_lambda(SCHEDULE.lam(t)), t, rtol=1e-10, atol=1e-12)
    lam = torch.linspace(-8.0, 12.0, 501, dtype=torch.float64)
    torch.testing.assert_close(SCHEDULE.lam(SCHEDULE.inverse_lambda(lam)), lam, rtol=1e-9, atol=1e-9)
    # The official DPM-Solver formula for the linear schedule (NoiseScheduleVP.inverse_lambda).
    b0, b1 = SCHEDULE.beta_0, SCHEDULE.beta_1
    tmp = 2.0 * (b1 - b0) * torch.logaddexp(-2.0 * lam, torch.zeros(1, dtype=torch.float64))
    official = tmp / (torch.sqrt(b0 ** 2 + tmp) + b0) / (b1 - b0)
    torch.testing.assert_close(SCHEDULE.inverse_lambda(lam), official, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(SCHEDULE.alpha(t) ** 2 + SCHEDULE.sigma(t) ** 2, torch.ones_like(t))


def test_timestep_grids():
    grid = D.timesteps(SCHEDULE, 10, "logSNR")
    lams = SCHEDULE.lam(grid)
    assert grid[0] == 1.0 and grid[-1] == 1e-3 and torch.all(grid[1:] < grid[:-1])
    torch.testing.assert_close(lams[1:] - lams[:-1], torch.full((10,), float(lams[1] - lams[0]),
                                                                dtype=torch.float64), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(D.timesteps(SCHEDULE, 4, "time_uniform"),
                               torch.tensor([1.0, 0.75025, 0.5005, 0.25075, 1e-3], dtype=torch.float64))
    assert D.singlestep_orders(10, 3) == [3, 3, 3, 1] and D.singlestep_orders(15, 3) == [3, 3, 3, 3, 2, 1]
    assert D.singlestep_orders(11, 2) == [2] * 5 + [1]


@pytest.fixture(scope="module")
def guided_problem(digits_model):
    gen = torch.Generator().manual_seed(4)
    x_T = torch.randn(8, 64, generator=gen, dtype=torch.float64)
    cls = torch.randint(0, 10, (8,), generator=gen)
    return x_T, cls, digits_model.noise_fn(SCHEDULE, cls, 1.0)


def test_first_order_solvers_coincide(guided_problem):
    x_T, _, eps_fn = guided_problem
    ddim = D.ddim(eps_fn, SCHEDULE, x_T, 12)
    assert torch.allclose(ddim, D.dpm_solver(eps_fn, SCHEDULE, x_T, 12, order=1), rtol=0, atol=1e-12)
    assert torch.allclose(ddim, D.dpm_solver_pp(eps_fn, SCHEDULE, x_T, 12, order=1), rtol=0, atol=1e-10)


def fitted_slope(sizes, errors):
    return float(np.polyfit(np.log(sizes), np.log(errors), 1)[0])


def test_global_convergence_orders(guided_problem):
    x_T, _, eps_fn = guided_problem
    reference = D.reference_solution(eps_fn, SCHEDULE, x_T, 1500)
    cases = {  # name: (sampler of a step count, step counts, expected order)
        "DDIM": (lambda n: D.ddim(eps_fn, SCHEDULE, x_T, n), [20, 40, 80], 1),
        "++2M": (lambda n: D.dpm_solver_pp(eps_fn, SCHEDULE, x_T, n, 2), [20, 40, 80], 2),
        "++2S": (lambda n: D.dpm_solver_pp(eps_fn, SCHEDULE, x_T, n, 2, method="singlestep"), [20, 40, 80], 2),
        "DPM-Solver-2": (lambda n: D.dpm_solver(eps_fn, SCHEDULE, x_T, n, 2), [20, 40, 80], 2),
        "DPM-Solver-3": (lambda n: D.sample_singlestep(eps_fn, SCHEDULE, x_T, n, 3, "noise", fixed_order=True),
                         [30, 60, 120], 3),
    }
    for name, (sampler, sizes, order) in cases.items():
        slope = -fitted_slope(sizes, [D.sampler_error(sampler(n), reference) for n in sizes])
        assert order - 0.25 < slope < order + 0.6, (name, slope)


def test_local_truncation_orders(guided_problem):
    """One step from exact states: the local error of an order-k method decays as h^(k+1)."""
    x_T, _, eps_fn = guided_problem
    # One fine 3M trajectory whose grid contains every state needed: lambda_0 +- k h for the three h below.
    fine = 0.0125
    lam_0 = float(SCHEDULE.lam(1.0)) + 400 * fine
    fine_grid = SCHEDULE.inverse_lambda(float(SCHEDULE.lam(1.0)) + fine * torch.arange(433, dtype=torch.float64))
    fine_grid[0] = 1.0
    _, trajectory = D.dpm_solver_pp(eps_fn, SCHEDULE, x_T, fine_grid, 3, lower_order_final=False,
                                    return_trajectory=True)

    def exact_state(lam):
        return trajectory[round((lam - lam_0) / fine) + 400]

    steps = [0.2, 0.1, 0.05]
    errors = {name: [] for name in ("++2M", "++3M", "++3M official", "DPM-Solver-2", "DPM-Solver-3", "++2S",
                                     "++3S", "DDIM")}
    for h in steps:
        times, states = zip(*(exact_state(lam_0 + k * h) for k in (-2, -1, 0, 1)))
        data = [D.model_output(eps_fn, SCHEDULE, states[k], times[k], "data") for k in range(3)]
        for order, name, variant in ((2, "++2M", "corrected"), (3, "++3M", "corrected"), (3, "++3M official", "official")):
            x = D.multistep_update(SCHEDULE, states[2], data[3 - order:], times[3 - order:3], times[3], order, "data",
                                   variant)
            errors[name].append(D.sampler_error(x, states[3]))
        for order, name, prediction in ((2, "++2S", "data"), (3, "++3S", "data"), (1, "DDIM", "noise"),
                                        (2, "DPM-Solver-2", "noise"), (3, "DPM-Solver-3", "noise")):
            x = D.singlestep_update(eps_fn, SCHEDULE, states[2], times[2], times[3], order, prediction)
            errors[name].append(D.sampler_error(x, states[3]))
    # The official/diffusers 3M coefficient halves the second-difference term: exact only for linear outputs.
    expected = {"DDIM": 2, "++2M": 3, "++2S": 3, "DPM-Solver-2": 3, "++3M official": 3, "++3M": 4, "++3S": 4,
                "DPM-Solver-3": 4}
    for name, order in expected.items():
        slope = fitted_slope(steps, errors[name])
        upper = 3.6 if name == "++3M official" else order + 1.0  # the official 3M is clearly not fourth order
        assert order - 0.45 < slope < upper, (name, slope)


def test_thresholding():
    gen = torch.Generator().manual_seed(5)
    x0 = 1.5 * torch.randn(6, 64, generator=gen, dtype=torch.float64)
    assert D.static_threshold(x0).abs().max() <= 1.0
    dynamic = D.dynamic_threshold(0.9)(x0)
    s = torch.quantile(x0.abs(), 0.9, dim=1, keepdim=True).clamp_min(1.0)
    torch.testing.assert_close(dynamic, x0.clamp(-s, s) / s)
    assert dynamic.abs().max() <= 1.0 + 1e-12
    small = 0.5 * x0 / x0.abs().max()  # already inside the range: dynamic thresholding leaves it alone
    torch.testing.assert_close(D.dynamic_threshold()(small), small)


class TabulatedSchedule:
    """A schedule given on a grid of indices 0..N (times are the indices), for driving the solvers on the grid
    of a diffusers scheduler."""

    def __init__(self, alphas, sigmas):
        self.alphas = torch.as_tensor(alphas, dtype=torch.float64)
        self.sigmas = torch.as_tensor(sigmas, dtype=torch.float64)

    def alpha(self, i):
        return self.alphas[round(float(i))]

    def sigma(self, i):
        return self.sigmas[round(float(i))]

    def lam(self, i):
        return torch.log(self.alpha(i)) - torch.log(self.sigma(i))


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("num_steps", [10, 20])
def test_dpm_solver_pp_matches_diffusers(digits_model, order, num_steps):
    diffusers = pytest.importorskip("diffusers")
    gen = torch.Generator().manual_seed(6)
    x_T = torch.randn(8, 64, generator=gen, dtype=torch.float64)
    cls = torch.randint(0, 10, (8,), generator=gen)
    for clip in (False, True):
        # thresholding with sample_max_value=1 is the static clip of x0 to [-1, 1] in diffusers.
        scheduler = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=1000, beta_schedule="linear", algorithm_type="dpmsolver++", solver_order=order,
            lower_order_final=True, final_sigmas_type="zero", thresholding=clip, sample_max_value=1.0)
        scheduler.set_timesteps(num_steps)
        alphas_cumprod = scheduler.alphas_cumprod.double()
        x = x_T.clone()
        for t in scheduler.timesteps:
            eps = digits_model.eps(x, alphas_cumprod[t].sqrt(), (1 - alphas_cumprod[t]).sqrt(), cls, 8.0)
            x = scheduler.step(eps.reshape(8, 1, 8, 8), t, x.reshape(8, 1, 8, 8)).prev_sample.reshape(8, 64)
        # The scheduler's own grid: sigma_ve = sigma/alpha, ending at sigma = 0 (a final step to x0).
        sigma_ve = scheduler.sigmas.double()
        alphas = 1.0 / torch.sqrt(sigma_ve ** 2 + 1.0)
        grid = TabulatedSchedule(alphas, sigma_ve * alphas)
        ours = D.dpm_solver_pp(digits_model.noise_fn(grid, cls, 8.0), grid, x_T, list(range(num_steps + 1)),
                               order, thresholding="static" if clip else None, lower_order_final=15,
                               third_order="official")
        assert (x - ours).abs().max() < 1e-5  # diffusers keeps its sigmas in float32


def test_ddim_matches_diffusers(digits_model):
    diffusers = pytest.importorskip("diffusers")
    gen = torch.Generator().manual_seed(7)
    x_T = torch.randn(8, 64, generator=gen, dtype=torch.float64)
    cls = torch.randint(0, 10, (8,), generator=gen)
    # clip_sample defaults to True in DDIMScheduler (x0 clipped to [-1, 1]); the plain DDIM update has no clip.
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                        set_alpha_to_one=False)
    scheduler.set_timesteps(25)
    alphas_cumprod = scheduler.alphas_cumprod.double()
    x = x_T.clone()
    for t in scheduler.timesteps:
        eps = digits_model.eps(x, alphas_cumprod[t].sqrt(), (1 - alphas_cumprod[t]).sqrt(), cls, 4.0)
        x = scheduler.step(eps, t, x).prev_sample
    # 'leading' spacing: each step goes to t - 1000 // N, the last one to alphas_cumprod[0].
    grid_alphas_cumprod = alphas_cumprod[torch.cat([scheduler.timesteps, torch.tensor([0])])]
    grid = TabulatedSchedule(grid_alphas_cumprod.sqrt(), (1 - grid_alphas_cumprod).sqrt())
    ours = D.ddim(digits_model.noise_fn(grid, cls, 4.0), grid, x_T, list(range(26)))
    assert (x - ours).abs().max() < 1e-6
    assert math.isfinite(float(ours.abs().max()))
