"""The noise levels and preconditioning of EDM (Karras, Aittala, Aila, Laine, NeurIPS 2022).

EDM writes a diffusion model in the variance-exploding form ``x = y + sigma * eps`` and fixes two things that
several chapters reuse unchanged:

- :func:`karras_sigmas`, the discrete noise levels (Karras et al. 2022, Eq. 5)
  ``sigma_i = (sigma_max^(1/rho) + i / (M - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, ``i = 0..M-1``,
  from ``sigma_max`` down to ``sigma_min``, ``rho = 7`` packing most levels near the clean end (optionally
  followed by ``sigma_M = 0``, the end point of the sampler);
- :func:`preconditioning`, the scalings of the denoiser ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``
  (Table 1 of the paper): ``c_skip = sigma_d^2 / (sigma^2 + sigma_d^2)``,
  ``c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2)``, ``c_in = 1 / sqrt(sigma^2 + sigma_d^2)``,
  ``c_noise = ln(sigma) / 4``, and :func:`loss_weight`, the loss weight
  ``lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 = 1 / c_out^2`` that makes the effective training
  target of ``F`` have unit variance at every level.

Used by: pfgm-pp (its denoiser, loss and Heun sampler, with the PFGM++ kernel in place of the Gaussian) and
consistency-randomized-smoothing (the rRCM noise levels, the encoder's input scaling and the EDM denoiser of the
denoise-then-classify baseline).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["SIGMA_DATA", "Preconditioning", "karras_sigmas", "preconditioning", "loss_weight"]

SIGMA_DATA = 0.5
"""EDM's standard deviation of the data, for images scaled to [-1, 1]."""


class Preconditioning(NamedTuple):
    """The four EDM scalings at one or more noise levels (tensors shaped like ``sigma``)."""

    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def karras_sigmas(num_levels: int, sigma_min: float, sigma_max: float, rho: float = 7.0, *,
                  append_zero: bool = False, dtype: torch.dtype = torch.float64,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """EDM's noise levels from ``sigma_max`` (index 0) down to ``sigma_min`` (index ``num_levels - 1``).

    ``append_zero=True`` adds ``sigma = 0`` at the end (the last step of EDM's Heun sampler). Needs
    ``num_levels >= 2`` and ``0 < sigma_min < sigma_max``. Used by: pfgm-pp, consistency-randomized-smoothing.
    """
    if num_levels < 2:
        raise ValueError(f"num_levels must be at least 2, got {num_levels}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    i = torch.arange(num_levels, dtype=torch.float64)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (high + i / (num_levels - 1) * (low - high)) ** rho
    if append_zero:
        sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    return sigmas.to(dtype=dtype, device=device)


def preconditioning(sigma, sigma_data: float = SIGMA_DATA) -> Preconditioning:
    """``(c_skip, c_out, c_in, c_noise)`` of EDM at noise level(s) ``sigma`` (a number or a tensor).

    A number gives float64 tensors; a tensor keeps its dtype and device. Used by: pfgm-pp,
    consistency-randomized-smoothing.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64) if not torch.is_tensor(sigma) else sigma
    total = sigma ** 2 + sigma_data ** 2
    return Preconditioning(c_skip=sigma_data ** 2 / total, c_out=sigma * sigma_data / total.sqrt(),
                           c_in=1 / total.sqrt(), c_noise=torch.log(sigma) / 4)


def loss_weight(sigma, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """EDM's loss weight ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``.

    Used by: pfgm-pp, consistency-randomized-smoothing.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64) if not torch.is_tensor(sigma) else sigma
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2

