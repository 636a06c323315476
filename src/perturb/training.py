"""Small models and the plain training loop that several chapters share."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .harness.config import RunConfig


def mlp(widths: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A fully connected network ``widths[0] -> ... -> widths[-1]`` with ``activation`` between layers.

    Used by: crown-bound-propagation. Flat ``Linear``/activation modules (no Flatten), so bound propagation and
    exact verifiers can read the layers in order.
    """
    if len(widths) < 2:
        raise ValueError(f"an MLP needs at least input and output widths, got {list(widths)}")
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def batches(num_items: int, batch_size: int, generator: torch.Generator, device) -> list[torch.Tensor]:
    """A fresh random partition of ``range(num_items)`` into index batches (the last may be smaller)."""
    order = torch.randperm(num_items, generator=generator, device=device)
    return list(order.split(batch_size))


def train_classifier(model: nn.Module, X: torch.Tensor, y: torch.Tensor, cfg: RunConfig, *, epochs: int,
                     lr: float = 3e-3, batch_size: int = 64,
                     loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None,
                     on_epoch_end: Callable[[int, nn.Module], None] | None = None, stream: int = 0) -> nn.Module:
    """Adam on mini-batches. ``loss_fn(model, xb, yb, progress)`` replaces cross-entropy when given, where
    ``progress`` runs from 0 to 1 over training (for schedules such as an epsilon ramp).

    Used by: crown-bound-propagation (natural, IBP and CROWN-IBP training).
    """
    model.to(cfg.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = cfg.generator(offset=1000 + stream)
    steps_per_epoch = -(-len(X) // batch_size)
    total_steps = epochs * steps_per_epoch
    step = 0
    for epoch in range(epochs):
        model.train()
        for idx in batches(len(X), batch_size, generator, cfg.device):
            progress = step / max(total_steps - 1, 1)
            if loss_fn is None:
                loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            else:
                loss = loss_fn(model, X[idx], y[idx], progress)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        model.eval()
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    return model


@torch.no_grad()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(X).argmax(dim=1) == y).float().mean().item()
