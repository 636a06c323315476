"""Gradient attacks inside an l-infinity ball intersected with the data's box (e.g. pixel range [0, 1])."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def input_box(x: torch.Tensor, eps: float | torch.Tensor, lower: float = 0.0,
              upper: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The perturbation set {x' : |x' - x|_inf <= eps} clipped to the data range, as elementwise bounds.

    ``eps`` is a number or a tensor that broadcasts against ``x`` (e.g. one budget per row, shape (n, 1)).
    """
    if (torch.as_tensor(eps) < 0).any():
        raise ValueError(f"eps must be non-negative, got {eps}")
    return (x - eps).clamp(lower, upper), (x + eps).clamp(lower, upper)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example: true-class logit minus the largest other logit (negative means misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, y[:, None], float("-inf"))
    return true - others.max(dim=1).values


def _negative_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -margin_loss(logits, y)


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, y, reduction="none")


OBJECTIVES = {"margin": _negative_margin, "cross_entropy": _cross_entropy}


def _per_row(value: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    """A budget of shape (n,) for n rows becomes (n, 1, ..., 1) so that it broadcasts against ``x``."""
    if isinstance(value, torch.Tensor) and value.dim() == 1 and x.dim() > 1 and len(value) == len(x):
        return value.reshape(-1, *([1] * (x.dim() - 1)))
    return value


def pgd_linf(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y, eps: float | torch.Tensor | None,
             *, steps: int = 20, step_size: float | torch.Tensor | None = None, lower: float = 0.0,
             upper: float = 1.0, generator: torch.Generator | None = None, mask: torch.Tensor | None = None,
             patch: torch.Tensor | None = None, random_start: bool = True,
             loss: str | Callable[[torch.Tensor, object], torch.Tensor] = "margin") -> torch.Tensor:
    """Projected gradient ascent with sign steps (Madry et al. 2018) from a random start in the perturbation set
    (or from ``x`` itself with ``random_start=False``); returns the last iterate.

    The objective, maximised per row, is ``loss(model(x'), y)``: ``"margin"`` (default) is the largest other logit
    minus the true one, ``"cross_entropy"`` the cross-entropy; a callable gets the model's output and ``y`` as given
    (``y`` may then be anything the callable needs, e.g. a set of target bins) and returns one value per row.

    The perturbation set is one of
    - the ball ``|x' - x|_inf <= eps`` clipped to ``[lower, upper]``; ``eps`` is a number or one budget per row
      (shape (n,)); ``mask`` (0/1, broadcasting against ``x``) restricts which entries may change: entries where it
      is 0 are returned exactly as in ``x``;
    - with ``patch`` (0/1 like ``x``, ``eps=None``): the unbounded patch, every entry where ``patch`` is 1 free in
      ``[lower, upper]`` and every other entry fixed; the random start draws the patch uniformly from the box.
    ``step_size`` defaults to ``2.5 * eps / steps`` (ball) and must be given for a patch; ``steps=0`` returns the
    random start (uniform noise in the set). ``steps=1, step_size=eps, random_start=False`` is FGSM (Goodfellow et
    al. 2015).
    Used by: crown-bound-propagation (empirical robustness, an upper bound on certified accuracy),
    expected-perturbation-score (FGSM and PGD adversarial sets), vit-patch-robustness (the adversarial patch, on the
    cross-entropy), bifurcation-observation-attack (grouped-difference losses, one budget per row, the calendar
    features masked).
    """
    objective = OBJECTIVES[loss] if isinstance(loss, str) else loss
    if patch is not None:
        if eps is not None or mask is not None:
            raise ValueError("a patch attack takes neither eps nor mask: the patch is the set of free entries")
        if step_size is None:
            raise ValueError("a patch attack needs an explicit step_size")
        mask = patch
        box_lo = torch.where(patch > 0, torch.full_like(x, lower), x)
        box_hi = torch.where(patch > 0, torch.full_like(x, upper), x)
    else:
        if eps is None:
            raise ValueError("eps is required unless a patch is given")
        eps = _per_row(eps, x)
        box_lo, box_hi = input_box(x, eps, lower, upper)
        step_size = 2.5 * eps / max(steps, 1) if step_size is None else _per_row(step_size, x)
        mask = torch.ones_like(x) if mask is None else mask
    if random_start:
        noise = (torch.rand(x.shape, generator=generator, device=x.device) if generator is not None
                 else torch.rand_like(x))
        if patch is not None:
            x_adv = ((1 - patch) * x + patch * (lower + (upper - lower) * noise)).detach()
        else:
            x_adv = torch.minimum(torch.maximum(x + mask * (2 * noise - 1) * eps, box_lo), box_hi).detach()
    else:
        x_adv = x.detach().clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(model(x_adv), y).sum(), x_adv)
        x_adv = x_adv.detach() + step_size * mask * grad.sign()
        x_adv = torch.minimum(torch.maximum(x_adv, box_lo), box_hi)
    return x_adv.detach()
