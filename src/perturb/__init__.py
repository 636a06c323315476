"""Perturb: the shared package of the book. Chapters import what they need from here.

The numerical building blocks (attacks, bounds, diffusion, data, models, training, ...) are modules of this
package; the machinery that runs, records and checks chapters lives in :mod:`perturb.harness`.
"""
from . import attacks, data, plotting, training
from .harness.catalog import PAPERS, PARTS
from .harness.claims import ClaimFailed, Claims
from .harness.config import ConfigError, RunConfig, setup
from .plotting import use_style

__all__ = ["PAPERS", "PARTS", "ClaimFailed", "Claims", "ConfigError", "RunConfig", "setup", "use_style"]
__version__ = "0.1.0"
