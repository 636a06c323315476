"""The local-function-approximation chapter's methods, loaded from its `method` cells, against closed forms and
an independent library: weighted least squares against scikit-learn's LinearRegression with sample weights;
occlusion against a plain loop over features; on a quadratic model, SmoothGrad, C-LIME, the gradient and
Integrated Gradients against their expectations (A x + c, and A x / 2 + c on the path); Stein's lemma for a
sine model against its closed form; and exact model recovery for a linear model."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression

from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("explanations-as-local-approximation")


def generator(seed):
    return torch.Generator().manual_seed(seed)


def quadratic(seed, d=6):
    rng = np.random.default_rng(seed)
    root = rng.normal(size=(d, d))
    A = torch.tensor(root @ root.T / d)
    c = torch.tensor(rng.normal(size=d))
    x = torch.tensor(rng.uniform(0.2, 1.0, size=d))
    return (lambda z: 0.5 * ((z @ A) * z).sum(-1) + z @ c), A, c, x


def test_weighted_least_squares_matches_sklearn(method):
    rng = np.random.default_rng(0)
    design, targets, weights = rng.normal(size=(200, 5)), rng.normal(size=200), rng.uniform(0.1, 2.0, size=200)
    ours, intercept = method.weighted_least_squares(torch.tensor(design), torch.tensor(targets), torch.tensor(weights))
    reference = LinearRegression().fit(design, targets, sample_weight=weights)
    np.testing.assert_allclose(ours.numpy(), reference.coef_, atol=1e-10)
    assert abs(float(intercept) - reference.intercept_) < 1e-10


def test_gradients_match_finite_differences(method):
    f, A, c, x = quadratic(1)
    grad = method.gradients(f, x[None])[0]
    np.testing.assert_allclose(grad.numpy(), (A @ x + c).numpy(), atol=1e-12)


def test_occlusion_is_the_drop_per_removed_feature(method):
    f, _, _, x = quadratic(2)
    hoods = method.neighbourhoods(f, x, 500, 0.3, generator(0))
    occlusion = method.explain(f, x, hoods)["occlusion"]
    for j in range(len(x)):
        removed = x.clone()
        removed[j] = 0
        assert abs(float(occlusion[j] * x[j]) - float(f(x) - f(removed))) < 1e-10


def test_quadratic_model_expectations(method):
    f, A, c, x = quadratic(3)
    hoods = method.neighbourhoods(f, x, 200_000, 0.3, generator(1))
    explanations = method.explain(f, x, hoods)
    gradient = A @ x + c
    np.testing.assert_allclose(explanations["gradient"].numpy(), gradient.numpy(), atol=1e-12)
    scale = float(gradient.abs().max())
    # SmoothGrad and C-LIME: E grad f(x + xi) = A x + c (Stein's lemma for C-LIME); sampling error ~ 1/sqrt(n)
    assert float((explanations["SmoothGrad"] - gradient).abs().max()) < 0.01 * scale
    assert float((explanations["C-LIME"] - gradient).abs().max()) < 0.02 * scale
    # Integrated Gradients per unit: E_alpha grad f(alpha x) = A x / 2 + c
    path = A @ x / 2 + c
    assert float((explanations["Integrated Gradients"] - path).abs().max()) < 0.01 * float(path.abs().max())


def test_stein_lemma_for_a_sine_model(method):
    direction = torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=torch.float64)
    x = torch.tensor([0.3, 0.1, 0.7, 0.2], dtype=torch.float64)
    sigma = 0.5
    f = lambda z: torch.sin(z @ direction)
    expected = direction * torch.cos(x @ direction) * torch.exp(-sigma ** 2 * direction.dot(direction) / 2)
    gauss = method.gaussian_neighbourhood(f, x, 400_000, sigma, generator(2))
    clime, _ = method.weighted_least_squares(gauss["xi"], gauss["outputs"], gauss["weights"])
    scale = float(expected.abs().max())
    assert float((gauss["gradients"].mean(0) - expected).abs().max()) < 0.01 * scale
    assert float((clime - expected).abs().max()) < 0.03 * scale


def test_linear_model_is_recovered_by_every_method(method):
    weights = torch.tensor([1.5, -2.0, 0.3, 0.8, -0.4], dtype=torch.float64)
    f = lambda z: z @ weights + 0.7
    x = torch.tensor([0.2, 0.9, 0.5, 0.4, 0.7], dtype=torch.float64)
    hoods = method.neighbourhoods(f, x, 300, 0.3, generator(3))
    for name, a in method.explain(f, x, hoods).items():
        np.testing.assert_allclose(a.numpy(), weights.numpy(), atol=1e-9, err_msg=name)
    matrix = method.fidelity_matrix(method.explain(f, x, hoods), x, hoods)
    assert float(matrix.abs().max()) < 1e-12
