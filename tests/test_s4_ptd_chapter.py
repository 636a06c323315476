"""The perturb-then-diagonalize chapter's own method, loaded from its `method` cells, against closed forms and
independent computations: the HiPPO-LegS entries and normal-plus-low-rank identities, transfer functions from
dense LU resolvent solves and scipy.signal.freqresp, eigenvalues from scipy.linalg.eig, zero-order-hold kernels from
scipy.signal.cont2discrete, the autograd gradient of the conditioning objective against finite differences, and
the FFT convolution against numpy.convolve."""
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.signal
import torch

from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("s4-perturb-then-diagonalize")


@pytest.fixture(scope="module")
def ptd_16(method):
    """A PTD perturbation of the N = 16 HiPPO matrix, optimised briefly (shared by several tests)."""
    A, _ = method.hippo_legs(16)
    E, history = method.optimise_perturbation(A, 1.0, 150, 1e-2, torch.Generator().manual_seed(0))
    return A, E, history


def dense_frequency_response(A, B, c, freqs):
    """c (i w I - A)^{-1} B by one LU-based dense solve per frequency."""
    identity = np.eye(len(B))
    return np.array([c @ scipy.linalg.solve(1j * w * identity - A, B) for w in freqs])


def scipy_frequency_response(A, B, c, freqs):
    """scipy.signal's frequency response (through a transfer-function conversion: small systems only)."""
    system = scipy.signal.StateSpace(A, B[:, None], c[None, :], np.zeros((1, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.signal.BadCoefficients)
        return scipy.signal.freqresp(system, w=freqs)[1]


def test_hippo_legs_entries_match_the_closed_form(method):
    N = 9
    A, B = method.hippo_legs(N)
    for n in range(N):
        assert B[n] == pytest.approx(np.sqrt(2 * n + 1))
        for k in range(N):
            expected = -np.sqrt(2 * n + 1) * np.sqrt(2 * k + 1) if n > k else (-(n + 1) if n == k else 0.0)
            assert A[n, k] == pytest.approx(expected, abs=1e-14)
    # Triangular, so its eigenvalues are its diagonal.
    assert np.allclose(np.sort(scipy.linalg.eigvals(A).real), -np.arange(N, 0, -1))


@pytest.mark.parametrize("N", [8, 33, 64])
def test_normal_plus_low_rank_decomposition(method, N):
    A, B = method.hippo_legs(N)
    A_normal, P = method.normal_part(N)
    assert np.allclose(P, B / np.sqrt(2))                                      # P P^T = B B^T / 2
    assert np.allclose(A_normal - np.outer(P, P), A, atol=1e-12)
    scale = np.abs(A).max()
    assert np.abs(A_normal + A_normal.T + np.eye(N)).max() <= 1e-13 * scale     # -I/2 plus skew-symmetric
    assert np.abs(A_normal @ A_normal.T - A_normal.T @ A_normal).max() <= 1e-12 * scale**2
    assert np.linalg.norm(np.outer(P, P), 2) == pytest.approx(N**2 / 2, rel=1e-12)


def test_hippo_transfer_function_matches_dense_resolvent_solves(method):
    N, freqs = 32, np.logspace(-2, 4, 60)
    A, B = method.hippo_legs(N)
    C = np.random.default_rng(0).normal(0, 1 / np.sqrt(N), size=(3, N))
    G = method.transfer_function(A, B, C, freqs)
    assert G.shape == (3, len(freqs))
    for channel in range(3):
        reference = dense_frequency_response(A, B, C[channel], freqs)
        np.testing.assert_allclose(G[channel], reference, rtol=1e-8, atol=1e-12 * np.abs(reference).max())
    small_A, small_B = method.hippo_legs(6)
    np.testing.assert_allclose(method.transfer_function(small_A, small_B, C[:1, :6], freqs)[0],
                               scipy_frequency_response(small_A, small_B, C[0, :6], freqs), rtol=1e-8)
    with pytest.raises(ValueError):
        method.transfer_function(A.T, B, C, freqs)


def test_diagonal_models_match_their_dense_systems(method, ptd_16):
    A, E, _ = ptd_16
    N, freqs = A.shape[0], np.logspace(-2, 3.5, 80)
    _, B = method.hippo_legs(N)
    c = np.random.default_rng(1).normal(0, 1 / np.sqrt(N), size=N)
    A_normal, _ = method.normal_part(N)
    s4d = method.s4d_legs(c[None, :])
    assert s4d.eigvec_cond == pytest.approx(1.0, abs=1e-8)
    reference = dense_frequency_response(A_normal, B / 2, c, freqs)
    np.testing.assert_allclose(method.diagonal_transfer_function(s4d, freqs)[0], reference, rtol=1e-8,
                               atol=1e-12 * np.abs(reference).max())
    ptd = method.perturb_then_diagonalize(A, B, c[None, :], E)
    reference = dense_frequency_response(A + E, B, c, freqs)
    np.testing.assert_allclose(method.diagonal_transfer_function(ptd, freqs)[0], reference, rtol=1e-8,
                               atol=1e-10 * np.abs(reference).max())


def test_ptd_eigenvalues_agree_between_scipy_and_torch(ptd_16):
    A, E, _ = ptd_16
    by_scipy = scipy.linalg.eigvals(A + E)
    by_torch = torch.linalg.eigvals(torch.as_tensor(A + E, dtype=torch.complex128)).numpy()
    distance = np.abs(by_scipy[:, None] - by_torch[None, :])
    # A one-to-one match: every eigenvalue's nearest partner is within 1e-8 relative, in both directions.
    assert distance.min(axis=1).max() <= 1e-8 * np.abs(by_scipy).max()
    assert distance.min(axis=0).max() <= 1e-8 * np.abs(by_scipy).max()
    assert len(set(distance.argmin(axis=1))) == len(by_scipy)


def test_optimisation_improves_conditioning_and_shrinks_e(method, ptd_16):
    A, E, history = ptd_16
    ptd = method.perturb_then_diagonalize(A, *method.hippo_legs(A.shape[0])[1:], np.ones((1, A.shape[0])), E)
    direct = method.diagonalize(A, method.hippo_legs(A.shape[0])[1], np.ones((1, A.shape[0])))
    assert ptd.eigvec_cond < history[0][0] and np.linalg.norm(E) < history[0][1]
    assert ptd.eigvec_cond < 1e-6 * direct.eigvec_cond
    assert ptd.poles.real.max() < 0


def test_conditioning_gradient_matches_finite_differences():
    """The objective's gradient through torch.linalg.eig agrees with central differences of numpy's eig."""
    rng = np.random.default_rng(2)
    M = np.diag(-np.arange(1.0, 7.0)) + np.tril(rng.normal(size=(6, 6)), -1) + 0.05 * rng.normal(size=(6, 6))
    direction = rng.normal(size=(6, 6))

    def log_cond(matrix):
        return np.log(np.linalg.cond(np.linalg.eig(matrix)[1]))

    E = torch.zeros(6, 6, dtype=torch.float64, requires_grad=True)
    _, V = torch.linalg.eig(torch.as_tensor(M, dtype=torch.complex128) + E)
    singular_values = torch.linalg.svdvals(V)
    torch.log(singular_values[0] / singular_values[-1]).backward()
    analytic = float((E.grad.numpy() * direction).sum())
    h = 1e-6
    numeric = (log_cond(M + h * direction) - log_cond(M - h * direction)) / (2 * h)
    assert analytic == pytest.approx(numeric, rel=1e-5)


@pytest.mark.parametrize("N, dt, length", [(12, 0.01, 300), (64, 2e-4, 1000)])
def test_zoh_kernels_match_scipy_discretization(method, N, dt, length):
    A, B = method.hippo_legs(N)
    c = np.random.default_rng(3).normal(0, 1 / np.sqrt(N), size=N)
    A_d, B_d, C_d, _, _ = scipy.signal.cont2discrete((A, B[:, None], c[None, :], np.zeros((1, 1))), dt, "zoh")
    expected, state = [], B_d[:, 0]
    for _ in range(length):
        expected.append(C_d[0] @ state)
        state = A_d @ state
    # Blocks shorter than the kernel exercise the exp(block dt A) jumps.
    np.testing.assert_allclose(method.zoh_kernel_dense(A, B, c[None, :], dt, length, block=128)[0], expected,
                               rtol=1e-8, atol=1e-10 * np.abs(expected).max())
    # The diagonal kernel of S4D equals the dense kernel of its normal matrix.
    A_normal, _ = method.normal_part(N)
    s4d_kernel = method.zoh_kernel_dense(A_normal, B / 2, c[None, :], dt, length)
    np.testing.assert_allclose(method.zoh_kernel(method.s4d_legs(c[None, :]), dt, length, block=100), s4d_kernel,
                               rtol=1e-8, atol=1e-10 * np.abs(s4d_kernel).max())


def test_causal_convolution_matches_numpy(method):
    rng = np.random.default_rng(4)
    kernel, signal = rng.normal(size=(2, 50)), rng.normal(size=50)
    result = method.causal_convolution(kernel, signal)
    for channel in range(2):
        np.testing.assert_allclose(result[channel], np.convolve(kernel[channel], signal)[:50], atol=1e-12)


def test_hippo_transfer_function_through_the_normal_part(method):
    """Sherman-Morrison: G(s) = C R_N B / (1 + B^T R_N B / 2) with R_N = (sI - A_N)^{-1}; S4D drops 1 + q -> 2,
    which is exact at s = 0."""
    N, freqs = 24, np.array([0.0, 0.3, 7.0, 120.0])
    A, B = method.hippo_legs(N)
    A_normal, _ = method.normal_part(N)
    c = np.random.default_rng(5).normal(size=N)
    G = method.transfer_function(A, B, c[None, :], freqs)[0]
    for w, value in zip(freqs, G):
        resolvent_B = scipy.linalg.solve(1j * w * np.eye(N) - A_normal, B)
        q = B @ resolvent_B / 2
        assert value == pytest.approx((c @ resolvent_B) / (1 + q), rel=1e-9)
    assert (B @ np.linalg.solve(-A_normal, B) / 2) == pytest.approx(1.0, rel=1e-12)
    s4d = method.diagonal_transfer_function(method.s4d_legs(c[None, :]), freqs[:1])[0, 0]
    assert s4d == pytest.approx(G[0], rel=1e-9)
