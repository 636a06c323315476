"""Data, models, training and attacks of src/perturb, against closed forms where there is one."""
import numpy as np
import pytest
import torch
from torch import nn

import perturb
from perturb import attacks, data, training
from perturb.harness import catalog


@pytest.fixture(scope="module")
def cfg():
    return perturb.setup("crown-bound-propagation", "quick", "cpu", 0, sizes={"quick": {}, "full": {}})


def test_catalogue_has_sixty_papers_in_seven_parts_with_unique_slugs():
    assert len(catalog.PAPERS) == 60 and len(catalog.PAPERS_BY_SLUG) == 60
    assert sorted(p.seed_number for p in catalog.PAPERS) == list(range(1, 61))
    assert {p.part for p in catalog.PAPERS} == set(catalog.PARTS)
    assert all("-" in p.slug and p.slug == p.slug.lower() for p in catalog.PAPERS)
    with pytest.raises(ValueError, match="the parts are"):
        catalog.papers_in_part("poetry")


def test_digits_split_is_fixed_stratified_and_scaled():
    first, second = data.load_digits(), data.load_digits()
    assert torch.equal(first.X_test, second.X_test)
    assert first.X_train.shape == (1257, 64) and first.X_test.shape == (540, 64)
    assert 0.0 <= first.X_train.min() and first.X_train.max() <= 1.0
    train_share = np.bincount(first.y_train.numpy()) / len(first.y_train)
    test_share = np.bincount(first.y_test.numpy()) / len(first.y_test)
    assert np.abs(train_share - test_share).max() < 0.01
    with pytest.raises(ValueError):
        data.load_digits(test_fraction=1.5)


def test_mlp_layout_and_training_learns_digits(cfg):
    model = training.mlp([64, 32, 10])
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]
    with pytest.raises(ValueError):
        training.mlp([64])
    split = data.load_digits()
    training.train_classifier(model, split.X_train, split.y_train, cfg, epochs=5)
    assert training.accuracy(model, split.X_test, split.y_test) > 0.9


def test_training_is_reproducible_for_a_seed():
    weights = []
    for _ in range(2):
        cfg = perturb.setup("crown-bound-propagation", "quick", "cpu", 3, sizes={"quick": {}, "full": {}})
        model = training.mlp([64, 8, 10])
        split = data.load_digits()
        training.train_classifier(model, split.X_train[:200], split.y_train[:200], cfg, epochs=1)
        weights.append(model[0].weight.detach().clone())
    assert torch.equal(*weights)


def test_margin_loss_matches_definition():
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 4.0, 1.0]])
    assert torch.allclose(attacks.margin_loss(logits, torch.tensor([0, 2])), torch.tensor([0.5, -3.0]))


def test_pgd_reaches_the_closed_form_worst_case_of_a_linear_model(cfg):
    # For logits W x + b the worst margin over an l_inf box is linear in x: its minimiser is a box corner chosen
    # by the sign of (w_y - w_j), so PGD (sign steps) must attain the exact minimum.
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    x = torch.full((1, 5), 0.5)
    y = torch.tensor([0])
    eps = 0.1
    x_adv = attacks.pgd_linf(model, x, y, eps, steps=10, generator=cfg.generator(1))
    w = model.weight[0] - model.weight[1]
    exact = (w @ x[0] + model.bias[0] - model.bias[1] - eps * w.abs().sum()).item()
    assert attacks.margin_loss(model(x_adv), y).item() == pytest.approx(exact, abs=1e-5)


def test_pgd_stays_in_the_clipped_box_and_respects_the_mask(cfg):
    model = training.mlp([4, 8, 3])
    x = torch.tensor([[0.0, 0.02, 0.5, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    x_adv = attacks.pgd_linf(model, x, torch.tensor([1]), 0.05, mask=mask, generator=cfg.generator(2))
    lo, hi = attacks.input_box(x, 0.05)
    assert torch.all(x_adv >= lo) and torch.all(x_adv <= hi)
    assert x_adv[0, 2] == x[0, 2]
    assert lo[0, 0] == 0.0 and hi[0, 3] == 1.0
    with pytest.raises(ValueError):
        attacks.input_box(x, -0.1)


def test_fgsm_is_one_full_step_from_the_clean_input():
    torch.manual_seed(1)
    model = nn.Linear(6, 3)
    x, y = torch.rand(4, 6), torch.tensor([0, 1, 2, 0])
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(attacks.margin_loss(model(x_req), y).sum(), x_req)
    expected = (x - 0.05 * grad.sign()).clamp(0, 1)
    got = attacks.pgd_linf(model, x, y, 0.05, steps=1, step_size=0.05, random_start=False)
    assert torch.allclose(got, expected)
