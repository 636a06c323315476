"""Kernel two-sample statistics: the Gaussian kernel, the unbiased MMD^2 estimator and its permutation test.

The maximum mean discrepancy (Gretton et al., JMLR 2012) between distributions P and Q is the distance between
their mean embeddings in a kernel's feature space; with samples X ~ P (m rows) and Y ~ Q (n rows),

    MMD^2_u = 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(n(n-1)) sum_{i != j} k(y_i, y_j) - 2/(mn) sum_{i,j} k(x_i, y_j)

is an unbiased estimate of MMD^2 (it can be slightly negative when P = Q). The permutation test asks how often
a random relabelling of the pooled sample gives a statistic at least as large as the observed one.

Used by: expected-perturbation-score (MMD between expected perturbation scores of natural and adversarial
data), and the later robustness and explanation chapters that compare two sets of features.
"""
from __future__ import annotations

import torch

__all__ = ["pairwise_sq_dists", "median_bandwidth", "gaussian_kernel", "mmd2_unbiased", "mmd_permutation_test"]


def pairwise_sq_dists(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``X`` (m, d) and of ``Y`` (n, d), as an (m, n) matrix."""
    sq = (X * X).sum(1)[:, None] + (Y * Y).sum(1)[None, :] - 2.0 * X @ Y.T
    return sq.clamp(min=0.0)


def median_bandwidth(X: torch.Tensor, Y: torch.Tensor | None = None) -> float:
    """The median heuristic: the median Euclidean distance between distinct rows of ``X`` (pooled with ``Y``).

    Used by: expected-perturbation-score.
    """
    Z = X if Y is None else torch.cat([X, Y])
    rows, cols = torch.triu_indices(len(Z), len(Z), offset=1, device=Z.device)
    distances = pairwise_sq_dists(Z, Z)[rows, cols].sqrt().sort().values
    # The two middle values averaged for an even count, as numpy's median does.
    return float((distances[(len(distances) - 1) // 2] + distances[len(distances) // 2]) / 2)


def gaussian_kernel(X: torch.Tensor, Y: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2)) for every pair of rows, an (m, n) matrix.

    Used by: expected-perturbation-score.
    """
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    return torch.exp(-pairwise_sq_dists(X, Y) / (2.0 * bandwidth ** 2))


def _resolve_bandwidth(X: torch.Tensor, Y: torch.Tensor, bandwidth: float | str) -> float:
    if bandwidth == "median":
        return median_bandwidth(X, Y)
    if isinstance(bandwidth, str):
        raise ValueError(f"bandwidth must be a positive number or 'median', got {bandwidth!r}")
    return float(bandwidth)


def _mmd2_from_gram(gram: torch.Tensor, m: int) -> torch.Tensor:
    """Unbiased MMD^2 from the Gram matrix of the pooled sample, the first ``m`` rows being X.

    ``gram`` may carry leading batch dimensions (one Gram matrix per permutation)."""
    n = gram.shape[-1] - m
    k_xx = gram[..., :m, :m]
    k_yy = gram[..., m:, m:]
    k_xy = gram[..., :m, m:]
    diag_xx = torch.diagonal(k_xx, dim1=-2, dim2=-1).sum(-1)
    diag_yy = torch.diagonal(k_yy, dim1=-2, dim2=-1).sum(-1)
    return ((k_xx.sum((-2, -1)) - diag_xx) / (m * (m - 1)) + (k_yy.sum((-2, -1)) - diag_yy) / (n * (n - 1))
            - 2.0 * k_xy.sum((-2, -1)) / (m * n))


def mmd2_unbiased(X: torch.Tensor, Y: torch.Tensor, bandwidth: float | str = "median") -> float:
    """The unbiased estimate of MMD^2 between the samples ``X`` (m, d) and ``Y`` (n, d), Gaussian kernel.

    ``bandwidth`` is a number or ``"median"`` (the median heuristic on the pooled sample). Needs m, n >= 2.
    Used by: expected-perturbation-score.
    """
    if len(X) < 2 or len(Y) < 2:
        raise ValueError("the unbiased estimator needs at least two points in each sample")
    h = _resolve_bandwidth(X, Y, bandwidth)
    Z = torch.cat([X, Y])
    return float(_mmd2_from_gram(gaussian_kernel(Z, Z, h), len(X)))


def mmd_permutation_test(X: torch.Tensor, Y: torch.Tensor, bandwidth: float | str = "median", *,
                         num_permutations: int = 200, generator: torch.Generator | None = None,
                         chunk: int = 50, return_null: bool = False):
    """Permutation test of P = Q with the unbiased MMD^2 statistic; returns ``(mmd2, p_value)``.

    The pooled sample is relabelled ``num_permutations`` times (with ``generator``, so the p-value is
    reproducible) and p = (1 + #{permuted statistic >= observed}) / (1 + num_permutations), which is a valid
    p-value: under P = Q, P(p <= alpha) <= alpha. The bandwidth is fixed once on the pooled sample, which no
    relabelling changes. With ``return_null=True`` it returns ``(mmd2, p_value, null)``, ``null`` the
    float64 numpy array of the ``num_permutations`` permuted statistics (its quantiles give the test's critical
    values, a yardstick for the size of ``mmd2``). Used by: expected-perturbation-score.
    """
    if len(X) < 2 or len(Y) < 2:
        raise ValueError("the unbiased estimator needs at least two points in each sample")
    h = _resolve_bandwidth(X, Y, bandwidth)
    Z = torch.cat([X, Y])
    gram = gaussian_kernel(Z, Z, h)
    m = len(X)
    observed = _mmd2_from_gram(gram, m)
    null = []
    for start in range(0, num_permutations, chunk):
        count = min(chunk, num_permutations - start)
        perms = torch.stack([torch.randperm(len(Z), generator=generator, device=generator.device
                                            if generator is not None else Z.device).to(Z.device)
                             for _ in range(count)])
        permuted = gram[perms[:, :, None], perms[:, None, :]]          # (count, N, N)
        null.append(_mmd2_from_gram(permuted, m))
    null = torch.cat(null)
    p_value = (1 + int((null >= observed).sum())) / (1 + num_permutations)
    if return_null:
        return float(observed), p_value, null.double().cpu().numpy()
    return float(observed), p_value
