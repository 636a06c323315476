"""`perturb.attacks.pgd_linf` with its options (a mask, one budget per row, an unbounded patch, a custom loss),
against closed forms: for a linear model every margin is linear in the input, so its worst case over a box is the
corner chosen by the sign of the weights, and sign-gradient steps must reach it."""
import pytest
import torch
from torch import nn

from perturb.attacks import input_box, margin_loss, pgd_linf


def linear_model(num_features=12, num_classes=2, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(num_features, num_classes)


def closed_form_margin(model, x, y, radius_lo, radius_hi):
    """The smallest margin of a two-class linear model over the box [x - radius_lo, x + radius_hi]."""
    w = model.weight[y] - model.weight[1 - y]                     # (n, features): d margin / d x
    b = model.bias[y] - model.bias[1 - y]
    corner = torch.where(w > 0, x - radius_lo, x + radius_hi)
    return (w * corner).sum(1) + b


def test_mask_leaves_masked_out_entries_exactly_unchanged_and_steps_stay_in_the_box():
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 4))
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(50, 10, generator=generator)
    x[:5] = 0.0                                                  # rows on the box's edge
    y = torch.randint(0, 4, (50,), generator=generator)
    mask = (torch.arange(10) % 3 != 0).float()                   # one feature in three frozen
    eps = torch.linspace(0.0, 0.3, 50)                           # one budget per row, including zero
    for steps in (0, 1, 7):
        adv = pgd_linf(model, x, y, eps, steps=steps, mask=mask, generator=generator)
        assert torch.equal(adv[:, mask == 0], x[:, mask == 0])
        lo, hi = input_box(x, eps[:, None])
        assert torch.all(adv >= lo) and torch.all(adv <= hi)
        assert torch.all(adv >= 0) and torch.all(adv <= 1)
        assert torch.equal(adv[0], x[0])                        # eps = 0 changes nothing
    assert (adv - x).abs().amax(1)[-1] > 0.2                     # and the largest budget is used


def test_sign_steps_reach_the_linear_models_closed_form_worst_case_per_row_budget():
    model = linear_model()
    x = torch.full((6, 12), 0.5)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    eps = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.4, 0.45])
    adv = pgd_linf(model, x, y, eps, steps=10, generator=torch.Generator().manual_seed(1))
    exact = closed_form_margin(model, x, y, eps[:, None], eps[:, None])
    torch.testing.assert_close(margin_loss(model(adv), y), exact, atol=1e-5, rtol=0)


def test_masked_attack_reaches_the_closed_form_over_the_unmasked_features_only():
    model = linear_model()
    x = torch.full((4, 12), 0.5)
    y = torch.tensor([0, 1, 0, 1])
    mask = (torch.arange(12) < 5).float()
    adv = pgd_linf(model, x, y, 0.2, steps=10, mask=mask, generator=torch.Generator().manual_seed(2))
    exact = closed_form_margin(model, x, y, 0.2 * mask, 0.2 * mask)
    torch.testing.assert_close(margin_loss(model(adv), y), exact, atol=1e-5, rtol=0)


def test_patch_attack_is_unbounded_inside_the_patch_and_exact_outside():
    model = linear_model(num_features=16)
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(8, 16, generator=generator)
    y = torch.tensor([0, 1] * 4)
    patch = torch.zeros(8, 16)
    for i in range(8):
        patch[i, 2 * i:2 * i + 4] = 1.0                          # a different 4-pixel patch per row
    adv = pgd_linf(model, x, y, None, patch=patch, steps=10, step_size=0.25, loss="cross_entropy",
                   generator=generator)
    assert torch.equal(adv[patch == 0], x[patch == 0])
    assert torch.all(adv >= 0) and torch.all(adv <= 1)
    # The patch may take any value in [0, 1]: the worst case puts each patch pixel at 0 or 1 by the weight's sign.
    exact = closed_form_margin(model, x, y, patch * x, patch * (1 - x))
    torch.testing.assert_close(margin_loss(model(adv), y), exact, atol=1e-5, rtol=0)
    start = pgd_linf(model, x, y, None, patch=patch, steps=0, step_size=0.25, generator=generator)
    assert torch.equal(start[patch == 0], x[patch == 0])
    assert (start - x)[patch == 1].abs().max() > 0.3             # a uniform draw, not a small jitter of x


def test_random_start_is_uniform_in_the_ball():
    x = torch.full((20000, 3), 0.5)
    start = pgd_linf(lambda s: s, x, None, 0.2, steps=0, loss=lambda out, y: out.sum(1),
                     generator=torch.Generator().manual_seed(4))
    offset = start - x
    assert offset.abs().max() <= 0.2 + 1e-7
    assert offset.mean().abs() < 0.005 and abs(offset.std().item() - 0.2 / 3 ** 0.5) < 0.005


def test_custom_loss_receives_y_as_given_and_is_maximised():
    # Objective: the sum of the entries picked by a boolean target mask, i.e. move them up, leave the rest.
    target = torch.tensor([[True, False, True], [False, True, False]])
    x = torch.full((2, 3), 0.5)
    adv = pgd_linf(lambda s: s, x, target, 0.1, steps=5, random_start=False,
                   loss=lambda out, chosen: (out * chosen).sum(1))
    torch.testing.assert_close(adv, torch.where(target, 0.6, 0.5))


def test_default_margin_objective_descends_the_margin_as_the_plain_loop_does():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.rand(10, 6, generator=torch.Generator().manual_seed(5)), torch.arange(10) % 3
    got = pgd_linf(model, x, y, 0.1, steps=4, generator=torch.Generator().manual_seed(6))
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(6))
    lo, hi = (x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1)
    expected = torch.minimum(torch.maximum(x + (2 * noise - 1) * 0.1, lo), hi)
    for _ in range(4):
        expected.requires_grad_(True)
        (grad,) = torch.autograd.grad(margin_loss(model(expected), y).sum(), expected)
        expected = torch.minimum(torch.maximum(expected.detach() - 2.5 * 0.1 / 4 * grad.sign(), lo), hi)
    assert torch.equal(got, expected)


def test_invalid_combinations_are_refused():
    model, x, y = linear_model(4), torch.rand(2, 4), torch.tensor([0, 1])
    with pytest.raises(ValueError):
        pgd_linf(model, x, y, 0.1, patch=torch.ones_like(x), step_size=0.1)
    with pytest.raises(ValueError):
        pgd_linf(model, x, y, None, patch=torch.ones_like(x))
    with pytest.raises(ValueError):
        pgd_linf(model, x, y, None)
    with pytest.raises(ValueError):
        pgd_linf(model, x, y, -0.1)
