"""A shared diffusion testbed: an exact "pretrained" model, the VP noise schedule, and the exponential-integrator
samplers (DDIM, DPM-Solver, DPM-Solver++) that the solver chapters compare against.

The pieces, and who uses them
-----------------------------
- :class:`VPLinear`: the continuous linear variance-preserving schedule (``beta_0 = 0.1``, ``beta_1 = 20``) with
  ``alpha_t``, ``sigma_t``, the half log-SNR ``lambda_t = log(alpha_t / sigma_t)`` and its closed-form inverse.
- :class:`GaussianMixtureDenoiser`, :func:`digits_gmm`: Gaussian mixtures whose noise predictor under VP noising
  is *exact* in closed form (class-conditional, with classifier-free guidance), so a chapter can study a sampler's
  discretisation error without a trained network in the way.
- :func:`timesteps`: logSNR-uniform or time-uniform grids; :func:`reference_solution` and :func:`sampler_error`:
  the converged answer of the sampling ODE and the distance of a sampler to it from the same starting noise.
- Samplers: :func:`ddim`, :func:`dpm_solver` (noise prediction, orders 1-3; singlestep, the default, or
  multistep with ``method="multistep"``), :func:`dpm_solver_pp` (data prediction; singlestep 2S/3S or multistep
  2M/3M; optional thresholding), built on the one-step updates :func:`first_order_update`,
  :func:`singlestep_update` and :func:`multistep_update`.

Used by the chapters dpm-solver-pp (which derives these samplers), dpm-solver-v3, momentum-diffusion-sampling and
bdia-exact-inversion (as baselines and testbed). Each function's docstring names the chapters that call it
directly; the samplers call the one-step updates and grids internally.

Conventions
-----------
Forward process ``q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)``, ``t`` in ``[t_end, 1]`` (``t_end = 1e-3``), and
sampling runs from ``t = 1`` down to ``t_end``. ``lambda_t`` *decreases* with ``t``, so a sampling step from
``s`` to ``t < s`` has ``h = lambda_t - lambda_s > 0``.

A *noise-prediction function* is any callable ``eps_fn(x, t) -> eps`` with ``x`` of shape ``(batch, dim)`` and
``t`` a Python float; the mixture provides one with :meth:`GaussianMixtureDenoiser.noise_fn`, a trained network
is wrapped the same way by its chapter. A *schedule* is any object with methods ``alpha``, ``sigma``, ``lam`` of
a time (and ``inverse_lambda`` for singlestep solvers and logSNR grids); :class:`VPLinear` is the one used in
the book, and a test can pass a tabulated grid instead. Time grids are float64 CPU tensors; samples live on the
device and in the dtype of the starting noise (the chapters use float64 so identities hold to 1e-10).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from . import data

NoiseFn = Callable[[torch.Tensor, float], torch.Tensor]
Correction = Callable[[torch.Tensor, float], torch.Tensor]

T_START = 1.0
T_END = 1e-3


# ---------------------------------------------------------------------------------------------------------------
# Noise schedule
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VPLinear:
    """Continuous linear VP schedule: ``beta(t) = beta_0 + t (beta_1 - beta_0)`` on ``t`` in ``[0, 1]``.

    ``log alpha_t = -(beta_1 - beta_0) t^2 / 4 - beta_0 t / 2``, ``sigma_t = sqrt(1 - alpha_t^2)``,
    ``lambda_t = log alpha_t - log sigma_t``. Every method takes a float or a tensor and returns a float64 tensor.
    Used by: dpm-solver-pp, dpm-solver-v3, momentum-diffusion-sampling, bdia-exact-inversion.
    """

    beta_0: float = 0.1
    beta_1: float = 20.0

    @staticmethod
    def _t(t) -> torch.Tensor:
        return torch.as_tensor(t, dtype=torch.float64)

    def log_alpha(self, t) -> torch.Tensor:
        t = self._t(t)
        return -0.25 * t ** 2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def alpha(self, t) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t) -> torch.Tensor:
        # 1 - alpha^2 = -expm1(2 log alpha), accurate near t = 0 where alpha is close to 1.
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def lam(self, t) -> torch.Tensor:
        """Half log-SNR ``lambda_t = log(alpha_t / sigma_t)``, decreasing in ``t``."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))

    def inverse_lambda(self, lam) -> torch.Tensor:
        """The time ``t`` with ``lambda_t = lam``, in closed form.

        From ``alpha^2 = 1 / (1 + e^{-2 lambda})``: ``-2 log alpha_t = softplus(-2 lambda) =: S``, and
        ``-2 log alpha_t = (beta_1 - beta_0) t^2 / 2 + beta_0 t`` is a quadratic in ``t`` whose positive root,
        written without cancellation, is ``t = 2 S / (beta_0 + sqrt(beta_0^2 + 2 (beta_1 - beta_0) S))``.
        """
        s = torch.nn.functional.softplus(-2.0 * self._t(lam))
        return 2.0 * s / (self.beta_0 + torch.sqrt(self.beta_0 ** 2 + 2.0 * (self.beta_1 - self.beta_0) * s))


# ---------------------------------------------------------------------------------------------------------------
# The exact model: a Gaussian mixture noised by the VP process
# ---------------------------------------------------------------------------------------------------------------

class GaussianMixtureDenoiser:
    """Exact noise predictor of a Gaussian mixture ``sum_j pi_j N(mu_j, Sigma_j)`` under VP noising.

    The noised marginal is again a mixture, with components ``N(alpha mu_j, alpha^2 Sigma_j + sigma^2 I)``. With
    ``Sigma_j = U_j diag(d_j) U_j^T``, each component's score is
    ``-U_j diag(1 / (alpha^2 d_j + sigma^2)) U_j^T (x - alpha mu_j)``, the responsibilities ``w_j(x)`` are the
    softmax of ``log pi_j + log N(x; ...)``, and the optimal noise prediction is
    ``eps(x) = -sigma * sum_j w_j(x) score_j(x)``. Each component belongs to a class (``component_class``); the
    class-conditional model restricts the softmax to that class's components.

    Used by: dpm-solver-pp, dpm-solver-v3, momentum-diffusion-sampling, bdia-exact-inversion.
    """

    def __init__(self, means: torch.Tensor, covariances: torch.Tensor, weights: torch.Tensor,
                 component_class: torch.Tensor | None = None):
        means = torch.as_tensor(means)
        self.dtype, self.device = means.dtype, means.device
        as_t = lambda a: torch.as_tensor(a, dtype=self.dtype, device=self.device)  # noqa: E731
        self.means = means
        covariances = as_t(covariances)
        covariances = 0.5 * (covariances + covariances.transpose(-1, -2))
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(covariances)
        self.eigenvalues = self.eigenvalues.clamp_min(0.0)
        weights = as_t(weights)
        self.log_weights = torch.log(weights / weights.sum())
        if component_class is None:
            component_class = torch.arange(len(means))
        self.component_class = torch.as_tensor(component_class, dtype=torch.long, device=self.device)
        self.num_classes = int(self.component_class.max()) + 1

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def covariances(self) -> torch.Tensor:
        return self.eigenvectors @ torch.diag_embed(self.eigenvalues) @ self.eigenvectors.transpose(-1, -2)

    def _components(self, x: torch.Tensor, alpha: float, sigma: float):
        """Per-component log-density and ``U diag(1/var) U^T (x - alpha mu)``, both batched over ``x``."""
        variances = alpha ** 2 * self.eigenvalues + sigma ** 2                        # (K, d)
        centred = x[:, None, :] - alpha * self.means[None]                            # (B, K, d)
        rotated = torch.einsum("bkd,kde->bke", centred, self.eigenvectors)            # U^T (x - alpha mu)
        scaled = rotated / variances
        log_density = (-0.5 * (rotated * scaled).sum(-1) - 0.5 * torch.log(variances).sum(-1)
                       - 0.5 * self.dim * math.log(2 * math.pi))                      # (B, K)
        precision_times_centred = torch.einsum("bke,kde->bkd", scaled, self.eigenvectors)
        return log_density, precision_times_centred

    def _class_logits(self, log_joint: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        mask = self.component_class[None, :] == torch.as_tensor(cls, device=self.device)[:, None]
        return log_joint.masked_fill(~mask, -math.inf)

    def responsibilities(self, x, alpha: float, sigma: float, cls=None, guidance: float = 1.0) -> torch.Tensor:
        """Mixing weights ``w`` with ``eps = sigma * sum_j w_j U_j diag(1/var_j) U_j^T (x - alpha mu_j)``.

        ``cls=None``: unconditional posterior. With classes: ``w_u + guidance (w_c - w_u)``, i.e. classifier-free
        guidance (``guidance = 1`` is the conditional model); guided weights may be negative.
        """
        log_joint = self._components(x, alpha, sigma)[0] + self.log_weights
        unconditional = torch.softmax(log_joint, dim=1)
        if cls is None:
            return unconditional
        conditional = torch.softmax(self._class_logits(log_joint, cls), dim=1)
        return unconditional + guidance * (conditional - unconditional)

    def eps(self, x: torch.Tensor, alpha: float, sigma: float, cls=None, guidance: float = 1.0) -> torch.Tensor:
        """Exact noise prediction at noise level ``(alpha, sigma)``; with ``cls`` (one class per row of ``x``)
        it is classifier-free guided: ``eps_u + guidance (eps_c - eps_u)``."""
        alpha, sigma = float(alpha), float(sigma)
        log_density, precision_times_centred = self._components(x, alpha, sigma)
        log_joint = log_density + self.log_weights
        weights = torch.softmax(log_joint, dim=1)
        if cls is not None:
            conditional = torch.softmax(self._class_logits(log_joint, cls), dim=1)
            weights = weights + guidance * (conditional - weights)
        return sigma * torch.einsum("bk,bkd->bd", weights, precision_times_centred)

    def score(self, x: torch.Tensor, alpha: float, sigma: float, cls=None) -> torch.Tensor:
        """Score ``grad_x log p_t(x)`` (or ``log p_t(x | cls)``) of the noised mixture: ``-eps / sigma``."""
        return -self.eps(x, alpha, sigma, cls) / float(sigma)

    def log_prob(self, x: torch.Tensor, alpha: float, sigma: float, cls=None) -> torch.Tensor:
        """Log-density of the noised mixture (conditional on ``cls`` when given)."""
        log_joint = self._components(x, float(alpha), float(sigma))[0] + self.log_weights
        if cls is None:
            return torch.logsumexp(log_joint, dim=1)
        class_logits = self._class_logits(log_joint, cls)
        class_prior = self._class_logits(self.log_weights.expand_as(log_joint), cls)
        return torch.logsumexp(class_logits, dim=1) - torch.logsumexp(class_prior, dim=1)

    def noise_fn(self, schedule, cls=None, guidance: float = 1.0) -> NoiseFn:
        """``eps_fn(x, t)`` for the samplers: this model at ``(alpha_t, sigma_t)`` of ``schedule``."""
        return lambda x, t: self.eps(x, schedule.alpha(t), schedule.sigma(t), cls, guidance)

    def sample(self, num_samples: int, generator: torch.Generator | None = None, cls=None) -> torch.Tensor:
        """Exact samples of the clean mixture (of class ``cls[i]`` for row ``i`` when classes are given)."""
        if cls is None:
            probs = self.log_weights.exp().expand(num_samples, -1)
        else:
            probs = self._class_logits(self.log_weights.expand(num_samples, -1), cls).exp()
        component = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        noise = torch.randn(num_samples, self.dim, generator=generator, dtype=self.dtype, device=self.device)
        scales = self.eigenvalues[component].sqrt()
        return self.means[component] + torch.einsum("bde,be->bd", self.eigenvectors[component], scales * noise)

    def to(self, device=None, dtype=None) -> "GaussianMixtureDenoiser":
        dtype = dtype or self.dtype
        return GaussianMixtureDenoiser(self.means.to(device, dtype), self.covariances.to(device, dtype),
                                       self.log_weights.exp().to(device, dtype), self.component_class.to(device))


def digits_gmm(components_per_class: int = 1, reg_covar: float = 1e-2, device: torch.device | str = "cpu",
               dtype=torch.float64) -> GaussianMixtureDenoiser:
    """The book's analytic "pretrained" diffusion model: a class-conditional Gaussian mixture of the digits.

    One mixture per digit class with ``components_per_class`` full-covariance components, ``reg_covar`` added to
    every covariance's diagonal; mixing weights are the within-class weights times the class frequencies. With
    one component per class the fit is closed form (class mean, maximum-likelihood covariance); with more it is
    scikit-learn's ``GaussianMixture(random_state=0)``. Deterministic: no seed is involved.
    Used by: dpm-solver-pp, dpm-solver-v3, momentum-diffusion-sampling, bdia-exact-inversion.
    """
    X, y = data.digits("cpu", torch.float64, pixels="signed")
    X, y = X.numpy(), y.numpy()
    means, covariances, weights, classes = [], [], [], []
    for c in range(10):
        Xc = X[y == c]
        frequency = len(Xc) / len(X)
        if components_per_class == 1:
            means.append(Xc.mean(0)[None])
            covariances.append((np.cov(Xc, rowvar=False, bias=True) + reg_covar * np.eye(X.shape[1]))[None])
            weights.append(np.array([frequency]))
        else:
            from sklearn.mixture import GaussianMixture

            gm = GaussianMixture(n_components=components_per_class, covariance_type="full", reg_covar=reg_covar,
                                 random_state=0).fit(Xc)
            means.append(gm.means_)
            covariances.append(gm.covariances_)
            weights.append(gm.weights_ * frequency)
        classes.append(np.full(len(weights[-1]), c))
    as_t = lambda a: torch.as_tensor(np.concatenate(a), dtype=dtype, device=device)  # noqa: E731
    return GaussianMixtureDenoiser(as_t(means), as_t(covariances), as_t(weights),
                                   torch.as_tensor(np.concatenate(classes), device=device))


def classifier_free_guidance(eps_unconditional: torch.Tensor, eps_conditional: torch.Tensor,
                             scale: float) -> torch.Tensor:
    """``eps_u + scale (eps_c - eps_u)``: the guided noise prediction of a conditional model (``scale = 1``:
    conditional). For wrapping trained networks; the mixture does this inside :meth:`GaussianMixtureDenoiser.eps`.
    Used by: dpm-solver-pp (its trained network at full scale)."""
    return eps_unconditional + scale * (eps_conditional - eps_unconditional)


# ---------------------------------------------------------------------------------------------------------------
# Time grids, thresholding, reference solution and error
# ---------------------------------------------------------------------------------------------------------------

def timesteps(schedule, num_steps: int, spacing: str = "logSNR", t_start: float = T_START,
              t_end: float = T_END) -> torch.Tensor:
    """``num_steps + 1`` decreasing times from ``t_start`` to ``t_end``: uniform in ``lambda`` ("logSNR", the
    DPM-Solver authors' choice for low-resolution data) or uniform in ``t`` ("time_uniform"). float64, CPU.
    Used by: dpm-solver-pp, momentum-diffusion-sampling, bdia-exact-inversion (and every sampler given a step
    count)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if spacing == "logSNR":
        lams = torch.linspace(float(schedule.lam(t_start)), float(schedule.lam(t_end)), num_steps + 1,
                              dtype=torch.float64)
        grid = schedule.inverse_lambda(lams)
        grid[0], grid[-1] = t_start, t_end  # exact end points despite the round trip through lambda
        return grid
    if spacing == "time_uniform":
        return torch.linspace(t_start, t_end, num_steps + 1, dtype=torch.float64)
    raise ValueError(f"unknown spacing {spacing!r}; accepted: 'logSNR', 'time_uniform'")


def static_threshold(x0: torch.Tensor, t: float | None = None, max_value: float = 1.0) -> torch.Tensor:
    """Clip the data prediction to the data range ``[-max_value, max_value]``.
    Used by: dpm-solver-pp, through ``thresholding="static"`` of the samplers."""
    return x0.clamp(-max_value, max_value)


def dynamic_threshold(ratio: float = 0.995, max_value: float = 1.0) -> Correction:
    """Imagen's dynamic thresholding as a correction of the data prediction: per sample,
    ``s = max(max_value, quantile_ratio |x0|)`` and ``x0 <- clip(x0, -s, s) / s``.
    Used by: dpm-solver-pp."""
    def correct(x0: torch.Tensor, t: float | None = None) -> torch.Tensor:
        s = torch.quantile(x0.abs().reshape(len(x0), -1), ratio, dim=1).clamp_min(max_value)
        s = s.reshape(-1, *([1] * (x0.dim() - 1)))
        return torch.maximum(torch.minimum(x0, s), -s) / s
    return correct


def _correction(thresholding) -> Correction | None:
    if thresholding is None or callable(thresholding):
        return thresholding
    if thresholding == "static":
        return static_threshold
    if thresholding == "dynamic":
        return dynamic_threshold()
    raise ValueError(f"unknown thresholding {thresholding!r}; accepted: None, 'static', 'dynamic' or a callable")


def reference_solution(eps_fn: NoiseFn, schedule, x_T: torch.Tensor, num_steps: int = 200,
                       thresholding=None, t_start: float = T_START, t_end: float = T_END) -> torch.Tensor:
    """A converged solution of the sampling ODE from ``x_T``: DPM-Solver++(3M) (corrected third-order term) with
    ``num_steps`` logSNR-uniform steps (200 agrees with 400-step 2M below 1e-4 RMS on the digits mixture at
    guidance 8). Thresholded samplers must be compared with a reference computed with the same ``thresholding``.
    Used by: dpm-solver-pp, dpm-solver-v3, momentum-diffusion-sampling, bdia-exact-inversion."""
    grid = timesteps(schedule, num_steps, "logSNR", t_start, t_end)
    return dpm_solver_pp(eps_fn, schedule, x_T, grid, order=3, method="multistep", thresholding=thresholding,
                         lower_order_final=False)


def sampler_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over samples of the per-sample RMS distance to the reference (same starting noise).
    Used by: dpm-solver-pp, dpm-solver-v3, momentum-diffusion-sampling, bdia-exact-inversion."""
    per_sample = ((x - reference) ** 2).reshape(len(x), -1).mean(1).sqrt()
    return float(per_sample.mean())


# ---------------------------------------------------------------------------------------------------------------
# One-step updates of the exponential integrators
# ---------------------------------------------------------------------------------------------------------------

PREDICTIONS = ("noise", "data")


def model_output(eps_fn: NoiseFn, schedule, x: torch.Tensor, t: float, prediction: str,
                 correction: Correction | None = None) -> torch.Tensor:
    """What the solver integrates: ``eps(x, t)`` ("noise") or ``x0 = (x - sigma_t eps) / alpha_t`` ("data"),
    the latter optionally corrected (thresholded). Guidance acts on ``eps`` before the conversion, because
    ``eps_fn`` is already the guided prediction. Used by: dpm-solver-v3 (and every sampler, internally)."""
    eps = eps_fn(x, float(t))
    if prediction == "noise":
        if correction is not None:
            raise ValueError("thresholding acts on the data prediction; use prediction='data'")
        return eps
    x0 = (x - float(schedule.sigma(t)) * eps) / float(schedule.alpha(t))
    return x0 if correction is None else correction(x0, float(t))


def _coefficients(schedule, s: float, t: float):
    a_s, a_t = float(schedule.alpha(s)), float(schedule.alpha(t))
    sg_s, sg_t = float(schedule.sigma(s)), float(schedule.sigma(t))
    h = float(schedule.lam(t)) - float(schedule.lam(s))
    return a_s, a_t, sg_s, sg_t, h


def first_order_update(schedule, x: torch.Tensor, s: float, t: float, model_s: torch.Tensor,
                       prediction: str) -> torch.Tensor:
    """DDIM = DPM-Solver-1 = DPM-Solver++(1) from ``s`` to ``t`` given the model output at ``(x, s)``.

    noise: ``x_t = (alpha_t/alpha_s) x - sigma_t (e^h - 1) eps``;
    data:  ``x_t = (sigma_t/sigma_s) x - alpha_t (e^{-h} - 1) x0``  (``h = lambda_t - lambda_s``).
    A final time with ``sigma_t = 0`` (``h = inf``) returns ``alpha_t x0``. Used by: dpm-solver-v3,
    bdia-exact-inversion (and every sampler, internally).
    """
    a_s, a_t, sg_s, sg_t, h = _coefficients(schedule, s, t)
    if prediction == "noise":
        return (a_t / a_s) * x - sg_t * math.expm1(h) * model_s
    return (sg_t / sg_s) * x - a_t * math.expm1(-h) * model_s


def singlestep_update(eps_fn: NoiseFn, schedule, x: torch.Tensor, s: float, t: float, order: int,
                      prediction: str, correction: Correction | None = None, r1: float | None = None,
                      r2: float | None = None, model_s: torch.Tensor | None = None) -> torch.Tensor:
    """One singlestep DPM-Solver(-++) step of order 1, 2 or 3 from ``s`` to ``t`` (``order`` model evaluations,
    intermediate points at ``lambda_s + r h``; defaults ``r1 = 1/2`` for order 2, ``1/3, 2/3`` for order 3).

    Noise prediction (DPM-Solver-2, with ``phi_1 = e^h - 1``)::

        u   = (alpha_s1/alpha_s) x - sigma_s1 (e^{r1 h} - 1) eps_s
        x_t = (alpha_t/alpha_s) x - sigma_t phi_1 eps_s - sigma_t phi_1 / (2 r1) (eps(u, s1) - eps_s)

    Data prediction (DPM-Solver++(2S)) is the same with ``(sigma, alpha, e^{-h})`` in place of
    ``(alpha, sigma, e^{h})``. Order 3 follows the official 'dpmsolver' variant with ``phi_1 = e^{+-h} - 1``,
    ``phi_2 = phi_1/h -+ 1`` and ``phi_22 = (e^{+-r2 h} - 1)/(r2 h) -+ 1`` (upper sign: noise prediction, lower
    sign: data prediction). Used by: :func:`sample_singlestep`, i.e. the singlestep samplers of dpm-solver-pp.
    """
    if order == 1:
        if model_s is None:
            model_s = model_output(eps_fn, schedule, x, s, prediction, correction)
        return first_order_update(schedule, x, s, t, model_s, prediction)
    if order not in (2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    lam_s, lam_t = float(schedule.lam(s)), float(schedule.lam(t))
    h = lam_t - lam_s
    r1 = (0.5 if order == 2 else 1.0 / 3.0) if r1 is None else float(r1)
    r2 = 2.0 / 3.0 if r2 is None else float(r2)
    if model_s is None:
        model_s = model_output(eps_fn, schedule, x, s, prediction, correction)
    s1 = float(schedule.inverse_lambda(lam_s + r1 * h))
    evaluate = lambda y, time: model_output(eps_fn, schedule, y, time, prediction, correction)  # noqa: E731
    a_s, a_t, sg_s, sg_t = (float(schedule.alpha(s)), float(schedule.alpha(t)), float(schedule.sigma(s)),
                            float(schedule.sigma(t)))
    a_1, sg_1 = float(schedule.alpha(s1)), float(schedule.sigma(s1))
    if prediction == "noise":
        phi_1 = math.expm1(h)
        u1 = (a_1 / a_s) * x - sg_1 * math.expm1(r1 * h) * model_s
        model_1 = evaluate(u1, s1)
        if order == 2:
            return (a_t / a_s) * x - sg_t * phi_1 * model_s - (0.5 / r1) * sg_t * phi_1 * (model_1 - model_s)
        s2 = float(schedule.inverse_lambda(lam_s + r2 * h))
        a_2, sg_2 = float(schedule.alpha(s2)), float(schedule.sigma(s2))
        phi_22 = math.expm1(r2 * h) / (r2 * h) - 1.0
        phi_2 = phi_1 / h - 1.0
        u2 = (a_2 / a_s) * x - sg_2 * math.expm1(r2 * h) * model_s - (r2 / r1) * sg_2 * phi_22 * (model_1 - model_s)
        model_2 = evaluate(u2, s2)
        return (a_t / a_s) * x - sg_t * phi_1 * model_s - (1.0 / r2) * sg_t * phi_2 * (model_2 - model_s)
    phi_1 = math.expm1(-h)
    u1 = (sg_1 / sg_s) * x - a_1 * math.expm1(-r1 * h) * model_s
    model_1 = evaluate(u1, s1)
    if order == 2:
        return (sg_t / sg_s) * x - a_t * phi_1 * model_s - (0.5 / r1) * a_t * phi_1 * (model_1 - model_s)
    s2 = float(schedule.inverse_lambda(lam_s + r2 * h))
    a_2, sg_2 = float(schedule.alpha(s2)), float(schedule.sigma(s2))
    phi_22 = math.expm1(-r2 * h) / (r2 * h) + 1.0
    phi_2 = phi_1 / h + 1.0
    u2 = (sg_2 / sg_s) * x - a_2 * math.expm1(-r2 * h) * model_s + (r2 / r1) * a_2 * phi_22 * (model_1 - model_s)
    model_2 = evaluate(u2, s2)
    return (sg_t / sg_s) * x - a_t * phi_1 * model_s + (1.0 / r2) * a_t * phi_2 * (model_2 - model_s)


def multistep_update(schedule, x: torch.Tensor, previous_models: Sequence[torch.Tensor],
                     previous_times: Sequence[float], t: float, order: int, prediction: str,
                     third_order: str = "corrected") -> torch.Tensor:
    """One multistep step of order 1, 2 or 3 from ``previous_times[-1]`` to ``t``, using cached model outputs
    (oldest first; the last entry is the output at the current point). No model evaluation.

    Order 2, data prediction (DPM-Solver++(2M)) with ``h = lambda_t - lambda_{s0}``, ``r = h_prev / h``::

        D   = m_0 + (m_0 - m_1) / (2 r)
        x_t = (sigma_t/sigma_{s0}) x - alpha_t (e^{-h} - 1) D

    Order 3 adds the second derivative: with ``D1 ~ h m'`` and ``D2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 m'' / 2``
    the exact integral of the quadratic interpolant is ``... + alpha_t phi_2 D1 - 2 alpha_t phi_3 D2`` (data,
    ``phi_2 = phi_1/h + 1``, ``phi_3 = phi_2/h - 1/2``; noise: ``phi_1 = e^h - 1``, ``phi_2 = phi_1/h - 1``).
    ``third_order="official"`` uses ``phi_3 D2`` without the factor 2, as the official code and diffusers do;
    that update is exact only for linear model outputs, so its local error is O(h^3) (globally second order),
    while "corrected" is O(h^4) (see tests/test_diffusion.py). Used by: dpm-solver-v3 (and
    :func:`sample_multistep`, i.e. every multistep sampler).
    """
    s0 = previous_times[-1]
    m0 = previous_models[-1]
    if order == 1:
        return first_order_update(schedule, x, s0, t, m0, prediction)
    a_s0, a_t, sg_s0, sg_t, h = _coefficients(schedule, s0, t)
    lam = lambda time: float(schedule.lam(time))  # noqa: E731
    h_0 = lam(s0) - lam(previous_times[-2])
    r0 = h_0 / h
    d1_0 = (m0 - previous_models[-2]) / r0
    if order == 2:
        if prediction == "noise":
            phi_1 = math.expm1(h)
            return (a_t / a_s0) * x - sg_t * phi_1 * m0 - 0.5 * sg_t * phi_1 * d1_0
        phi_1 = math.expm1(-h)
        return (sg_t / sg_s0) * x - a_t * phi_1 * m0 - 0.5 * a_t * phi_1 * d1_0
    if order != 3:
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    h_1 = lam(previous_times[-2]) - lam(previous_times[-3])
    r1 = h_1 / h
    d1_1 = (previous_models[-2] - previous_models[-3]) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    if third_order == "corrected":
        d2 = 2.0 * d2
    elif third_order != "official":
        raise ValueError(f"unknown third_order {third_order!r}; accepted: 'corrected', 'official'")
    if prediction == "noise":
        phi_1 = math.expm1(h)
        phi_2 = phi_1 / h - 1.0
        phi_3 = phi_2 / h - 0.5
        return (a_t / a_s0) * x - sg_t * phi_1 * m0 - sg_t * phi_2 * d1 - sg_t * phi_3 * d2
    phi_1 = math.expm1(-h)
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    return (sg_t / sg_s0) * x - a_t * phi_1 * m0 + a_t * phi_2 * d1 - a_t * phi_3 * d2


# ---------------------------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------------------------

def _grid(schedule, steps, spacing, t_start, t_end) -> torch.Tensor:
    if isinstance(steps, int):
        return timesteps(schedule, steps, spacing, t_start, t_end)
    return torch.as_tensor(steps, dtype=torch.float64)


def sample_multistep(eps_fn: NoiseFn, schedule, x: torch.Tensor, steps, order: int = 2,
                     prediction: str = "data", thresholding=None, spacing: str = "logSNR",
                     t_start: float = T_START, t_end: float = T_END, lower_order_final: bool | int = True,
                     third_order: str = "corrected", return_trajectory: bool = False):
    """Multistep exponential integrator: one model evaluation per step (NFE = number of steps).

    ``steps`` is an int (a grid of that many steps with ``spacing``) or an explicit decreasing time grid. The
    first ``order - 1`` steps warm up with lower orders. ``lower_order_final``: True lowers the order of the last
    steps when there are fewer than 10 steps (the official rule), an int ``n`` does so below ``n`` steps (15 is
    diffusers' rule), False never. A final grid point with ``sigma = 0`` always gets a first-order step.
    ``third_order``: see :func:`multistep_update`.
    Returns the sample at the last grid time, and with ``return_trajectory`` also the list of ``(t, x_t)``.
    Used by: :func:`ddim`, :func:`dpm_solver` and :func:`dpm_solver_pp` (no chapter calls it directly).
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; accepted: {PREDICTIONS}")
    grid = [float(t) for t in _grid(schedule, steps, spacing, t_start, t_end)]
    num_steps = len(grid) - 1
    if order not in (1, 2, 3) or num_steps < order:
        raise ValueError(f"order must be 1, 2 or 3 and at most the number of steps ({num_steps}), got {order}")
    below = 10 if lower_order_final is True else (0 if lower_order_final is False else int(lower_order_final))
    correction = _correction(thresholding)
    models = [model_output(eps_fn, schedule, x, grid[0], prediction, correction)]
    trajectory = [(grid[0], x)]
    for i in range(1, num_steps + 1):
        step_order = min(order, i)
        if num_steps < below:
            step_order = min(step_order, num_steps + 1 - i)
        if i == num_steps and float(schedule.sigma(grid[i])) == 0.0:
            step_order = 1
        x = multistep_update(schedule, x, models[-step_order:], grid[i - step_order:i], grid[i], step_order,
                             prediction, third_order)
        trajectory.append((grid[i], x))
        if i < num_steps:
            models = (models + [model_output(eps_fn, schedule, x, grid[i], prediction, correction)])[-3:]
    return (x, trajectory) if return_trajectory else x


def singlestep_orders(nfe: int, order: int) -> list[int]:
    """Orders of the steps of singlestep DPM-Solver with ``nfe`` evaluations (the official "DPM-Solver-fast"
    split, e.g. ``nfe=10, order=3 -> [3, 3, 3, 1]``). Used by: :func:`sample_singlestep`."""
    if order == 3:
        k = nfe // 3 + 1
        return [3] * (k - 2) + [2, 1] if nfe % 3 == 0 else [3] * (k - 1) + ([1] if nfe % 3 == 1 else [2])
    if order == 2:
        return [2] * (nfe // 2) + ([1] if nfe % 2 else [])
    if order == 1:
        return [1] * nfe
    raise ValueError(f"order must be 1, 2 or 3, got {order}")


def sample_singlestep(eps_fn: NoiseFn, schedule, x: torch.Tensor, nfe: int, order: int = 3,
                      prediction: str = "noise", thresholding=None, spacing: str = "logSNR",
                      t_start: float = T_START, t_end: float = T_END, fixed_order: bool = False,
                      return_trajectory: bool = False):
    """Singlestep DPM-Solver(-++) with ``nfe`` model evaluations, split into steps of order <= ``order`` by
    :func:`singlestep_orders` (``fixed_order=True``: ``nfe // order`` steps all of order ``order``, the official
    "singlestep_fixed"). As in the official code, with logSNR spacing the outer steps are uniform in ``lambda``;
    with time-uniform spacing they are taken from the ``nfe``-step time grid, and the inner points of each step
    are at the matching sub-grid. Used by: :func:`dpm_solver` and :func:`dpm_solver_pp` with
    ``method="singlestep"`` (in dpm-solver-pp).
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; accepted: {PREDICTIONS}")
    orders = [order] * (nfe // order) if fixed_order else singlestep_orders(nfe, order)
    if spacing == "logSNR":
        outer = timesteps(schedule, len(orders), spacing, t_start, t_end)
    else:
        outer = timesteps(schedule, nfe, spacing, t_start, t_end)[np.cumsum([0] + orders)]
    correction = _correction(thresholding)
    trajectory = [(float(outer[0]), x)]
    for i, step_order in enumerate(orders):
        s, t = float(outer[i]), float(outer[i + 1])
        r1 = r2 = None
        if spacing != "logSNR" and step_order > 1:
            inner = schedule.lam(timesteps(schedule, step_order, spacing, s, t))
            h = float(inner[-1] - inner[0])
            r1 = float(inner[1] - inner[0]) / h
            r2 = float(inner[2] - inner[0]) / h if step_order == 3 else None
        x = singlestep_update(eps_fn, schedule, x, s, t, step_order, prediction, correction, r1, r2)
        trajectory.append((t, x))
    return (x, trajectory) if return_trajectory else x


def ddim(eps_fn: NoiseFn, schedule, x: torch.Tensor, steps, thresholding=None, spacing: str = "logSNR",
         t_start: float = T_START, t_end: float = T_END, return_trajectory: bool = False):
    """DDIM (deterministic, eta = 0) = DPM-Solver-1: ``steps`` evaluations on the grid. Without thresholding it
    is written in noise form; with thresholding in data form (the clipped x0 of DDIM's "predicted x0").
    Used by: dpm-solver-pp, momentum-diffusion-sampling, bdia-exact-inversion."""
    prediction = "noise" if thresholding is None else "data"
    return sample_multistep(eps_fn, schedule, x, steps, 1, prediction, thresholding, spacing, t_start, t_end,
                            False, return_trajectory=return_trajectory)


def dpm_solver(eps_fn: NoiseFn, schedule, x: torch.Tensor, nfe: int, order: int = 3, method: str = "singlestep",
               spacing: str = "logSNR", t_start: float = T_START, t_end: float = T_END,
               return_trajectory: bool = False):
    """DPM-Solver (Lu et al. 2022a): the exponential integrator of the *noise-prediction* ODE.

    ``method="singlestep"`` (default): DPM-Solver-2/3 with ``nfe`` evaluations in the "fast" order split, see
    :func:`sample_singlestep`. ``method="multistep"``: the noise-prediction multistep solver, ``nfe`` an int or an
    explicit decreasing time grid, see :func:`sample_multistep`. Cannot threshold (there is no x0 in its update).
    Used by: dpm-solver-pp (singlestep, as the unstable baseline), dpm-solver-v3 (multistep)."""
    if method == "singlestep":
        return sample_singlestep(eps_fn, schedule, x, nfe, order, "noise", None, spacing, t_start, t_end,
                                 return_trajectory=return_trajectory)
    if method == "multistep":
        return sample_multistep(eps_fn, schedule, x, nfe, order, "noise", None, spacing, t_start, t_end, True,
                                return_trajectory=return_trajectory)
    raise ValueError(f"unknown method {method!r}; accepted: 'singlestep', 'multistep'")


def dpm_solver_pp(eps_fn: NoiseFn, schedule, x: torch.Tensor, steps, order: int = 2, method: str = "multistep",
                  thresholding=None, spacing: str = "logSNR", t_start: float = T_START, t_end: float = T_END,
                  lower_order_final: bool | int = True, third_order: str = "corrected",
                  return_trajectory: bool = False):
    """DPM-Solver++ (Lu et al. 2022b): the exponential integrator of the *data-prediction* ODE.

    ``method="multistep"``: ++(2M) / ++(3M), ``steps`` evaluations (int or explicit grid), see
    :func:`sample_multistep` (``third_order="official"`` reproduces the 3M coefficients of the official code and
    diffusers). ``method="singlestep"``: ++(2S) / ++(3S) with ``steps`` evaluations (an int), see
    :func:`sample_singlestep`. ``thresholding``: None, "static" (clip x0 to [-1, 1]), "dynamic" (Imagen, p=0.995)
    or a callable ``(x0, t) -> x0``. Used by: dpm-solver-pp, dpm-solver-v3, momentum-diffusion-sampling,
    bdia-exact-inversion.
    """
    if method == "multistep":
        return sample_multistep(eps_fn, schedule, x, steps, order, "data", thresholding, spacing, t_start, t_end,
                                lower_order_final, third_order, return_trajectory)
    if method == "singlestep":
        return sample_singlestep(eps_fn, schedule, x, int(steps), order, "data", thresholding, spacing, t_start,
                                 t_end, return_trajectory=return_trajectory)
    raise ValueError(f"unknown method {method!r}; accepted: 'singlestep', 'multistep'")
