"""Optimal-transport building blocks shared by chapters.

- `sinkhorn`: log-domain Sinkhorn iterations for entropic optimal transport between two discrete measures, with a
  cost matrix and regulariser of the caller's choice. Used by `light-schrodinger-bridge` (the discrete baseline,
  cost |x - y|^2 / 2) and `multi-marginal-schrodinger-bridge` (the static bridge, cost = negative log transition
  density of the reference, regulariser 1).
- `sinkhorn_plan`: the coupling matrix from the potentials `sinkhorn` returns.
- `empirical_wasserstein`: the exact p-Wasserstein distance between the uniform measures on two point sets, by
  linear assignment (SciPy's `linear_sum_assignment`). Used by `light-schrodinger-bridge` (W2 between SDE and
  bridge samples), `multi-marginal-schrodinger-bridge` (W2 to held-out snapshots) and
  `singular-distribution-instance-noise` (W1 of an estimate to the singular truth).
"""
from __future__ import annotations

import math

import numpy as np
import scipy.optimize
import scipy.spatial.distance
import torch

__all__ = ["sinkhorn", "sinkhorn_plan", "empirical_wasserstein"]


def _as_tensor(array):
    """(tensor, was_numpy): NumPy inputs are wrapped (float64) and the results handed back as NumPy."""
    if isinstance(array, torch.Tensor):
        return array, False
    return torch.as_tensor(np.asarray(array, dtype=float)), True


def _log_weights(weights, size, like):
    if weights is None:
        return torch.full((size,), -math.log(size), dtype=like.dtype, device=like.device)
    weights = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    return weights.log()


def sinkhorn(cost, eps=1.0, a=None, b=None, max_iter=10_000, tol=1e-9, check_every=10):
    """Entropic optimal transport min_P <P, C> + eps KL(P || a b^T) over couplings of a and b, by Sinkhorn's
    iterations in the log domain (safe when C / eps reaches hundreds).

    The solution is P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps); the iterations alternately make the rows and the
    columns of P sum to a and b:
        f_i <- -eps log sum_j b_j exp((g_j - C_ij) / eps),   g_j <- -eps log sum_i a_i exp((f_i - C_ij) / eps).
    After each g update the columns are exact; the loop stops when the rows are within `tol` in L1 norm (checked
    every `check_every` iterations) or after `max_iter` iterations.

    cost: (n, m) tensor or array; a, b: weights summing to one (uniform when None). Returns (f, g), the dual
    potentials, as tensors on cost's device (NumPy arrays for a NumPy cost).
    Users: light-schrodinger-bridge (cost |x - y|^2 / 2), multi-marginal-schrodinger-bridge (eps = 1)."""
    cost, numpy_in = _as_tensor(cost)
    n, m = cost.shape
    log_a, log_b = _log_weights(a, n, cost), _log_weights(b, m, cost)
    f = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    g = torch.zeros(m, dtype=cost.dtype, device=cost.device)
    for it in range(max_iter):
        f = -eps * torch.logsumexp(log_b[None, :] + (g[None, :] - cost) / eps, dim=1)
        g = -eps * torch.logsumexp(log_a[:, None] + (f[:, None] - cost) / eps, dim=0)
        if (it + 1) % check_every == 0:
            log_rows = log_a + (f + eps * torch.logsumexp(log_b[None, :] + (g[None, :] - cost) / eps, dim=1)) / eps
            if float((log_rows.exp() - log_a.exp()).abs().sum()) < tol:
                break
    if numpy_in:
        return f.numpy(), g.numpy()
    return f, g


def sinkhorn_plan(cost, f, g, eps=1.0, a=None, b=None):
    """The coupling P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps) of the potentials returned by `sinkhorn`."""
    cost, numpy_in = _as_tensor(cost)
    f, g = torch.as_tensor(f, dtype=cost.dtype, device=cost.device), torch.as_tensor(g, dtype=cost.dtype,
                                                                                       device=cost.device)
    n, m = cost.shape
    log_a, log_b = _log_weights(a, n, cost), _log_weights(b, m, cost)
    plan = (log_a[:, None] + log_b[None, :] + (f[:, None] + g[None, :] - cost) / eps).exp()
    return plan.numpy() if numpy_in else plan


def empirical_wasserstein(x, y, p=2):
    """Exact p-Wasserstein distance (p >= 1) between the uniform measures on the rows of x and of y.

    With L = lcm(len(x), len(y)), repeating each row of x L / len(x) times and each row of y L / len(y) times gives
    two L-point sets of equal weights, between which some optimal plan is a permutation (Birkhoff-von Neumann):
    a linear assignment problem, solved exactly by scipy.optimize.linear_sum_assignment. Distances are computed
    directly (not by the |x|^2 + |y|^2 - 2<x, y> shortcut), so tiny distances keep their digits.
    x, y: (n, d) and (m, d) arrays or tensors (1-D inputs are one point per entry). Returns a float.
    Users: light-schrodinger-bridge, multi-marginal-schrodinger-bridge (p = 2),
    singular-distribution-instance-noise (p = 1)."""
    points = [np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=float) for v in (x, y)]
    x, y = [v[:, None] if v.ndim == 1 else v for v in points]
    size = math.lcm(len(x), len(y))
    x, y = np.repeat(x, size // len(x), axis=0), np.repeat(y, size // len(y), axis=0)
    if p == 2:
        cost = scipy.spatial.distance.cdist(x, y, "sqeuclidean")
    else:
        cost = scipy.spatial.distance.cdist(x, y) ** p
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return float(cost[rows, cols].mean() ** (1.0 / p))
