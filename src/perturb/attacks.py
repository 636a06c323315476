"""Gradient attacks inside an l-infinity ball intersected with the data's box (e.g. pixel range [0, 1])."""
from __future__ import annotations

import torch
from torch import nn


def input_box(x: torch.Tensor, eps: float, lower: float = 0.0, upper: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The perturbation set {x' : |x' - x|_inf <= eps} clipped to the data range, as elementwise bounds."""
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    return (x - eps).clamp(lower, upper), (x + eps).clamp(lower, upper)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example: true-class logit minus the largest other logit (negative means misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, y[:, None], float("-inf"))
    return true - others.max(dim=1).values


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 20,
             step_size: float | None = None, lower: float = 0.0, upper: float = 1.0,
             generator: torch.Generator | None = None, mask: torch.Tensor | None = None,
             random_start: bool = True) -> torch.Tensor:
    """Projected gradient descent on the margin (Madry et al. 2018), sign steps, from a random start in the box
    (or from ``x`` itself with ``random_start=False``).

    Returns adversarial inputs inside the box; ``mask`` (same shape as ``x``, 0/1) restricts which entries may
    change. ``steps=1, step_size=eps, random_start=False`` is FGSM (Goodfellow et al. 2015).
    Used by: crown-bound-propagation (empirical robustness, an upper bound on certified accuracy),
    expected-perturbation-score (FGSM and PGD adversarial sets), vit-patch-robustness (masked patch attacks).
    """
    box_lo, box_hi = input_box(x, eps, lower, upper)
    step_size = 2.5 * eps / steps if step_size is None else step_size
    mask = torch.ones_like(x) if mask is None else mask
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device) if generator is not None else torch.rand_like(x)
        x_adv = torch.minimum(torch.maximum(x + mask * (2 * noise - 1) * eps, box_lo), box_hi).detach()
    else:
        x_adv = x.detach().clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = margin_loss(model(x_adv), y).sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() - step_size * mask * grad.sign()
        x_adv = torch.minimum(torch.maximum(x_adv, box_lo), box_hi)
    return x_adv.detach()
