"""Run configuration: the three parameters every chapter takes, validated, and what follows from them.

Every chapter starts with a cell tagged ``parameters`` holding ``SCALE``, ``DEVICE`` and ``SEED`` and nothing
else, and turns them into a :class:`RunConfig` with :func:`setup`. The configuration seeds every random number
generator, pins the CPU to one thread (so a re-run is bit-identical and two chapters run side by side do not
fight over cores), and picks the chapter's sizes for the chosen scale from the one dict where the chapter keeps
them.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

SCALES = ("quick", "full")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A parameter outside what the book accepts; the message says what is accepted."""


def validate_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; accepted: {', '.join(SCALES)}")
    return scale


def validate_seed(seed: Any) -> int:
    # bool is an int in Python; a seed of True is almost surely a mistake.
    if isinstance(seed, bool):
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(seed, str):
        try:
            seed = int(seed.strip())
        except ValueError:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}") from None
    if isinstance(seed, (float, np.floating)) and float(seed).is_integer():
        seed = int(seed)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; ``cuda`` without a GPU is refused rather than silently ignored."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; accepted: {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but this machine has no CUDA GPU; use 'cpu' or 'auto'")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@dataclass
class RunConfig:
    """What a chapter needs to know about this run.

    ``sizes`` is the entry of the chapter's sizes dict for this scale; read it as ``cfg.sizes["epochs"]``.
    ``rng`` is a NumPy generator and :meth:`generator` makes torch generators, all derived from ``seed``, so
    that independent parts of a chapter can draw from separate streams without touching the global state.
    """

    slug: str
    scale: str
    device: torch.device
    seed: int
    sizes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A torch generator on the run's device, seeded from ``seed`` and ``offset`` (one offset per stream)."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed * 1_000_003 + offset)
        return gen

    def tensor(self, data, dtype=torch.float32) -> torch.Tensor:
        """Data as a tensor on the run's device (the one place chapters move data to the device)."""
        return torch.as_tensor(data, dtype=dtype, device=self.device)

    def __repr__(self) -> str:
        return f"RunConfig(slug={self.slug!r}, scale={self.scale!r}, device={self.device.type!r}, seed={self.seed})"


def setup(slug: str, scale: str = "quick", device: str = "auto", seed: Any = 0,
          sizes: Mapping[str, Mapping[str, Any]] | None = None) -> RunConfig:
    """Validate the parameters, seed everything and return the run configuration.

    ``sizes`` maps each scale to that scale's sizes, e.g. ``{"quick": {"epochs": 20}, "full": {"epochs": 200}}``;
    both scales must be present so that a full run can never silently fall back to quick sizes.
    """
    from .catalog import PAPERS_BY_SLUG

    if slug not in PAPERS_BY_SLUG:
        raise ConfigError(f"unknown chapter {slug!r}; see `python -m perturb list` for the chapters")
    scale = validate_scale(scale)
    seed = validate_seed(seed)
    torch_device = resolve_device(device)
    sizes = dict(sizes or {})
    if sizes and set(sizes) != set(SCALES):
        raise ConfigError(f"sizes must give exactly the scales {SCALES}, got {tuple(sizes)}")
    if torch_device.type == "cpu":
        # One thread: bit-identical re-runs, and no oversubscription when chapters run in parallel.
        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.use_deterministic_algorithms(torch_device.type == "cpu", warn_only=True)
    seed_everything(seed)
    return RunConfig(slug=slug, scale=scale, device=torch_device, seed=seed, sizes=dict(sizes.get(scale, {})))
