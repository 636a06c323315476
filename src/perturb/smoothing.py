"""Randomized smoothing: certify and predict with the smoothed classifier of Cohen, Rosenfeld and Kolter (2019).

For a base classifier ``f`` (any function from inputs to logits) and a noise level ``sigma``, the smoothed
classifier is ``g(x) = argmax_c P(f(x + sigma * e) = c)`` with ``e ~ N(0, I)``. If the top class has probability
at least ``p_A > 1/2``, then ``g`` is constant on the l2 ball of radius ``sigma * Phi^{-1}(p_A)`` around ``x``.
Only Monte Carlo estimates of ``p_A`` are available, so :func:`certify` replaces it by a one-sided Clopper-Pearson
lower confidence bound and abstains when that bound is below 1/2; the guarantee then holds with probability at
least ``1 - alpha`` over the noise draws.

Everything is batched over inputs (many test points share one forward pass of the base classifier) and every
draw comes from the torch generator passed in, so a certification is reproducible for a seed.

Used by: consistency-randomized-smoothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.special import betaincinv
from scipy.stats import binomtest, norm

ABSTAIN = -1  # the class returned when the smoothed classifier declines to answer

Classifier = Callable[[torch.Tensor], torch.Tensor]


def clopper_pearson_lower(successes, trials, alpha: float) -> np.ndarray:
    """One-sided ``1 - alpha`` lower confidence bound on a binomial proportion (Clopper-Pearson).

    The bound is the ``alpha`` quantile of Beta(k, n - k + 1), i.e. the ``p`` at which seeing ``k`` or more
    successes in ``n`` trials has probability exactly ``alpha``; it is 0 when ``k = 0``. Accepts scalars or
    arrays. Used by: consistency-randomized-smoothing.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("successes must lie between 0 and trials")
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = betaincinv(np.maximum(k, 1.0), n - k + 1.0, alpha)
    return np.where(k > 0, bound, 0.0)


def clopper_pearson_upper(successes, trials, alpha: float) -> np.ndarray:
    """One-sided ``1 - alpha`` upper confidence bound (the mirror image of :func:`clopper_pearson_lower`)."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    return 1.0 - clopper_pearson_lower(n - k, n, alpha)


def certified_radius(p_lower, sigma: float) -> np.ndarray:
    """``sigma * Phi^{-1}(p_lower)`` where ``p_lower >= 1/2`` and 0 (abstain) elsewhere."""
    p_lower = np.asarray(p_lower, dtype=float)
    return np.where(p_lower >= 0.5, sigma * norm.ppf(np.clip(p_lower, 0.5, 1.0)), 0.0)


@torch.no_grad()
def sample_counts(classifier: Classifier, x: torch.Tensor, sigma: float, num_samples: int, num_classes: int,
                  generator: torch.Generator, batch_size: int = 8192) -> torch.Tensor:
    """How often ``classifier(x + sigma * e)`` picks each class: a (len(x), num_classes) integer tensor.

    The ``len(x) * num_samples`` noisy copies are streamed through ``classifier`` in chunks of ``batch_size``
    rows (copies of several inputs share a chunk), with noise drawn from ``generator``.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    total = len(x) * num_samples
    counts = torch.zeros(len(x) * num_classes, dtype=torch.long, device=x.device)
    for start in range(0, total, batch_size):
        rows = torch.arange(start, min(start + batch_size, total), device=x.device)
        owner = rows // num_samples
        clean = x[owner]
        noise = torch.randn(clean.shape, generator=generator, device=x.device, dtype=x.dtype)
        predicted = classifier(clean + sigma * noise).argmax(dim=1)
        counts.index_add_(0, owner * num_classes + predicted, torch.ones_like(predicted))
    return counts.view(len(x), num_classes)


@dataclass
class Certificate:
    """What CERTIFY returns for a batch of inputs (numpy arrays, one entry per input).

    ``prediction`` is the smoothed class or :data:`ABSTAIN`; ``radius`` the certified l2 radius (0 when
    abstaining); ``p_lower`` the Clopper-Pearson lower bound on the probability of the selected class;
    ``counts`` the estimation counts of every class.
    """

    prediction: np.ndarray
    radius: np.ndarray
    p_lower: np.ndarray
    counts: np.ndarray

    def certified_accuracy(self, labels, radii) -> np.ndarray:
        """Fraction of inputs predicted correctly with a certified radius of at least r, for each r in radii."""
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        correct = self.prediction == labels
        return np.array([float(np.mean(correct & (self.radius >= r))) for r in np.atleast_1d(radii)])


def certify(classifier: Classifier, x: torch.Tensor, sigma: float, *, n0: int, n: int, alpha: float,
            num_classes: int, generator: torch.Generator, batch_size: int = 8192) -> Certificate:
    """Cohen et al.'s CERTIFY for every row of ``x``.

    ``n0`` noisy samples select the candidate class, ``n`` *fresh* samples estimate its probability (reusing the
    selection samples would bias the estimate upwards), the estimate is replaced by its one-sided ``1 - alpha``
    Clopper-Pearson lower bound, and the radius is ``sigma * Phi^{-1}`` of that bound; below 1/2 it abstains.
    """
    selection = sample_counts(classifier, x, sigma, n0, num_classes, generator, batch_size)
    candidate = selection.argmax(dim=1)
    estimation = sample_counts(classifier, x, sigma, n, num_classes, generator, batch_size)
    hits = estimation.gather(1, candidate[:, None]).squeeze(1).cpu().numpy()
    p_lower = clopper_pearson_lower(hits, n, alpha)
    radius = certified_radius(p_lower, sigma)
    prediction = np.where(p_lower >= 0.5, candidate.cpu().numpy(), ABSTAIN)
    return Certificate(prediction, radius, p_lower, estimation.cpu().numpy())


def predict(classifier: Classifier, x: torch.Tensor, sigma: float, *, n: int, alpha: float, num_classes: int,
            generator: torch.Generator, batch_size: int = 8192) -> np.ndarray:
    """Cohen et al.'s PREDICT: the top class of ``n`` noisy samples, or :data:`ABSTAIN` unless a two-sided
    binomial test of the top two counts rejects a tie at level ``alpha`` (then it errs with probability at most
    ``alpha``)."""
    counts = sample_counts(classifier, x, sigma, n, num_classes, generator, batch_size).cpu().numpy()
    order = np.argsort(-counts, axis=1, kind="stable")
    predictions = np.full(len(counts), ABSTAIN)
    for i, (first, second) in enumerate(order[:, :2]):
        top, runner_up = int(counts[i, first]), int(counts[i, second])
        if binomtest(top, top + runner_up, p=0.5).pvalue <= alpha:
            predictions[i] = first
    return predictions
