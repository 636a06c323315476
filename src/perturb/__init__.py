"""Perturb: the shared package of the book. Chapters import what they need from here."""
from . import attacks, data, plotting, training
from .catalog import PAPERS, PARTS
from .claims import ClaimFailed, Claims
from .config import ConfigError, RunConfig, setup
from .plotting import use_style

__all__ = ["PAPERS", "PARTS", "ClaimFailed", "Claims", "ConfigError", "RunConfig", "setup", "use_style"]
__version__ = "0.1.0"
