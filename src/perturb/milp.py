"""Exact verification of a small ReLU network by mixed-integer linear programming (big-M encoding).

For a network ``f(x) = W_L relu(... relu(W_1 x + b_1) ...) + b_L`` given as a list of ``(W, b)`` arrays, and an
input box ``x_lower <= x <= x_upper``, :func:`minimize_linear` returns the exact minimum of ``c @ f(x)`` over the
box, with the input that attains it. Every ReLU ``h = max(z, 0)`` whose pre-activation ``z`` is known to lie in
``[l, u]`` is encoded exactly with one binary ``d`` (Tjeng et al., 2019)::

    h >= z,   h >= 0,   h <= z - l (1 - d),   h <= u d,   d in {0, 1}

Neurons that are stable on the box (``l >= 0`` or ``u <= 0``) get their binary fixed, so the search only
branches on the unstable ones; tighter bounds ``[l, u]`` (e.g. from CROWN) make the program much smaller. The
bounds must be *sound* (every reachable ``z`` inside them); when none are given, interval arithmetic supplies them.

Used by: crown-bound-propagation (the exact rung of the bound ladder) and tests/test_bounds.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

Layer = tuple[np.ndarray, np.ndarray]


@dataclass
class MILPResult:
    """``value``: the minimum of ``c @ f(x)``; ``x``: an input attaining it; ``dual_bound``: the solver's proven
    lower bound (equal to ``value`` up to the gap tolerance); ``num_binary``: unstable neurons branched on."""

    value: float
    x: np.ndarray
    dual_bound: float
    num_binary: int


def as_layers(layers: Sequence[tuple]) -> list[Layer]:
    """``(W, b)`` pairs as float64 NumPy arrays (accepts torch tensors or ``nn.Linear``-like objects' data)."""
    out = []
    for weight, bias in layers:
        weight = np.asarray(weight.detach().cpu() if hasattr(weight, "detach") else weight, dtype=np.float64)
        bias = np.asarray(bias.detach().cpu() if hasattr(bias, "detach") else bias, dtype=np.float64)
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise ValueError(f"a layer needs W of shape (out, in) and b of shape (out,), got {weight.shape}, "
                             f"{bias.shape}")
        out.append((weight, bias))
    for (w_prev, _), (w_next, _) in zip(out[:-1], out[1:]):
        if w_next.shape[1] != w_prev.shape[0]:
            raise ValueError(f"layer widths do not chain: {w_prev.shape} then {w_next.shape}")
    return out


def forward(layers: Sequence[Layer], x: np.ndarray) -> np.ndarray:
    """The network's output at ``x`` (one input or a batch of rows)."""
    h = np.asarray(x, dtype=np.float64)
    for i, (weight, bias) in enumerate(layers):
        h = h @ weight.T + bias
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def interval_preactivation_bounds(layers: Sequence[Layer], x_lower: np.ndarray,
                                  x_upper: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sound bounds on every hidden pre-activation by interval arithmetic (loose, but always valid)."""
    lower, upper = np.asarray(x_lower, dtype=np.float64), np.asarray(x_upper, dtype=np.float64)
    bounds = []
    for weight, bias in layers[:-1]:
        centre, radius = (upper + lower) / 2, (upper - lower) / 2
        mid, spread = weight @ centre + bias, np.abs(weight) @ radius
        bounds.append((mid - spread, mid + spread))
        lower, upper = np.maximum(mid - spread, 0.0), np.maximum(mid + spread, 0.0)
    return bounds


def minimize_linear(layers: Sequence[tuple], c: np.ndarray, x_lower: np.ndarray, x_upper: np.ndarray,
                    preactivation_bounds: Sequence[tuple[np.ndarray, np.ndarray]] | None = None, *,
                    mip_rel_gap: float = 1e-9, time_limit: float | None = None) -> MILPResult:
    """The exact minimum of ``c @ f(x)`` over ``x_lower <= x <= x_upper`` for the ReLU network ``layers``.

    ``preactivation_bounds`` lists one ``(l, u)`` pair per hidden layer (the pre-activation of each ReLU layer);
    they must be sound. Raises ``RuntimeError`` when the solver does not prove optimality (e.g. on a time limit).
    """
    layers = as_layers(layers)
    c = np.asarray(c, dtype=np.float64)
    x_lower, x_upper = np.asarray(x_lower, dtype=np.float64), np.asarray(x_upper, dtype=np.float64)
    if c.shape != (layers[-1][0].shape[0],):
        raise ValueError(f"c must have one entry per output ({layers[-1][0].shape[0]}), got shape {c.shape}")
    if np.any(x_lower > x_upper):
        raise ValueError("empty input box: some x_lower > x_upper")
    if preactivation_bounds is None:
        preactivation_bounds = interval_preactivation_bounds(layers, x_lower, x_upper)
    if len(preactivation_bounds) != len(layers) - 1:
        raise ValueError(f"need one (l, u) pair per hidden layer ({len(layers) - 1}), got "
                         f"{len(preactivation_bounds)}")

    # Variable layout: x, then for each hidden layer its post-activations h_k followed by its binaries d_k.
    n_in = layers[0][0].shape[1]
    offsets, start = [], n_in
    for weight, _ in layers[:-1]:
        offsets.append(start)
        start += 2 * weight.shape[0]
    num_vars = start
    var_lower = np.zeros(num_vars)
    var_upper = np.zeros(num_vars)
    var_lower[:n_in], var_upper[:n_in] = x_lower, x_upper
    integrality = np.zeros(num_vars)

    rows, row_lower, row_upper = [], [], []
    prev_slice = slice(0, n_in)
    num_binary = 0
    for (weight, bias), (lower, upper), h_start in zip(layers[:-1], preactivation_bounds, offsets):
        lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        if np.any(lower > upper + 1e-9):
            raise ValueError("pre-activation bounds with l > u")
        width = weight.shape[0]
        h_idx = np.arange(h_start, h_start + width)
        d_idx = h_idx + width
        var_upper[h_idx] = np.maximum(upper, 0.0)
        integrality[d_idx] = 1
        # Stable neurons: the binary is decided by the bounds (active -> 1, dead -> 0).
        var_lower[d_idx] = (lower >= 0).astype(float)
        var_upper[d_idx] = (upper > 0).astype(float)
        num_binary += int(np.sum((lower < 0) & (upper > 0)))

        block = sparse.lil_matrix((3 * width, num_vars))
        eye = np.eye(width)
        # z = W h_prev + b. Rows: (1) h - z >= 0; (2) h - z - l d <= -l, i.e. h <= z - l (1 - d); (3) h - u d <= 0.
        block[0:width, prev_slice] = -weight
        block[0:width, h_idx] = eye
        block[width:2 * width, prev_slice] = -weight
        block[width:2 * width, h_idx] = eye
        block[width:2 * width, d_idx] = -np.diag(lower)
        block[2 * width:, h_idx] = eye
        block[2 * width:, d_idx] = -np.diag(upper)
        rows.append(block.tocsr())
        row_lower.append(np.concatenate([bias, np.full(width, -np.inf), np.full(width, -np.inf)]))
        row_upper.append(np.concatenate([np.full(width, np.inf), bias - lower, np.zeros(width)]))
        prev_slice = slice(h_start, h_start + width)

    last_weight, last_bias = layers[-1]
    objective = np.zeros(num_vars)
    objective[prev_slice] = last_weight.T @ c
    constant = float(c @ last_bias)

    constraints = [LinearConstraint(sparse.vstack(rows).tocsr(), np.concatenate(row_lower),
                                    np.concatenate(row_upper))] if rows else []
    options = {"mip_rel_gap": mip_rel_gap}
    if time_limit is not None:
        options["time_limit"] = time_limit
    result = milp(objective, constraints=constraints, integrality=integrality,
                  bounds=Bounds(var_lower, var_upper), options=options)
    if result.status != 0:
        raise RuntimeError(f"MILP not solved to optimality: {result.message}")
    dual = getattr(result, "mip_dual_bound", None)
    dual_bound = (float(dual) if dual is not None and np.isfinite(dual) else float(result.fun)) + constant
    return MILPResult(value=float(result.fun) + constant, x=result.x[:n_in].copy(), dual_bound=dual_bound,
                      num_binary=num_binary)
