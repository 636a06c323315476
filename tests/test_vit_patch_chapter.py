"""The ViT patch-robustness chapter's own method, loaded from its `method` cells, against independent references:
the ViT's own patch grid (alignment of the masks), an exhaustive search over the corners of the patch for a linear
classifier (where that search is exact), and the masked projected gradient descent of the Adversarial Robustness
Toolbox (the chapter's fooling rate between ART's single-start and best-of-three rates)."""
import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perturb.data import load_digits
from perturb.models import TinyViT, small_cnn
from perturb.harness.notebook_code import load_method



@pytest.fixture(scope="module")
def method():
    return load_method("vit-patch-robustness")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def fit(make_model, data, epochs, lr, seed):
    torch.manual_seed(seed)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(data.X_train)).split(64):
            loss = F.cross_entropy(model(data.X_train[idx]), data.y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def test_patch_masks_are_exactly_the_vit_tokens(method):
    vit = TinyViT(image_size=8, patch_size=2, dim=16, depth=1, heads=2)
    masks = method.patch_mask(torch.arange(16), 8, 2)
    assert masks.shape == (16, 64) and torch.all(masks.sum(1) == 4)
    tokens = vit.patchify(masks)                               # (cell, token, pixels of the token)
    torch.testing.assert_close(tokens.sum(-1), 4 * torch.eye(16))
    # A 4x4 grid on 8x8 images with 4x4 patches: four cells of 16 pixels.
    big = method.patch_mask(torch.arange(4), 8, 4)
    torch.testing.assert_close(TinyViT(8, 4, dim=16, depth=1, heads=2).patchify(big).sum(-1), 16 * torch.eye(4))


def test_patches_touch_only_their_cell_and_stay_in_range(method, digits):
    x, y = digits.X_test[:40], digits.y_test[:40]
    cells = torch.arange(40) % 16
    mask = method.patch_mask(cells)
    model = small_cnn().eval()
    noisy = method.natural_patch(x, mask, 0.5, torch.Generator().manual_seed(0))
    attacked = method.adversarial_patch(model, x, y, mask, 5, 0.1, torch.Generator().manual_seed(1))
    for perturbed in (noisy, attacked):
        assert torch.all((perturbed - x)[mask == 0] == 0)
        assert perturbed.min() >= 0 and perturbed.max() <= 1
    assert (noisy - x)[mask == 1].abs().max() > 0.1
    logits = model(attacked)
    torch.testing.assert_close(method.fooled(model, attacked, y), logits.argmax(1) != y)


def test_pgd_patch_matches_exhaustive_corner_search_on_a_linear_model(method, digits):
    # For a linear classifier every margin is linear in the patch, so its minimum over [0, 1]^4 is at one of the
    # 16 corners: trying all corners decides exactly whether some patch fools the model.
    model = fit(lambda: nn.Linear(64, 10), digits, epochs=15, lr=1e-2, seed=0)
    keep = method.correct(model, digits.X_test, digits.y_test)
    x, y = digits.X_test[keep][:150], digits.y_test[keep][:150]
    cells = torch.arange(len(x)) % 16
    mask = method.patch_mask(cells)
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))       # (16, 4)
    exact = torch.zeros(len(x), dtype=torch.bool)
    for corner in corners:
        patch = torch.zeros_like(x)
        patch[mask == 1] = corner.repeat(len(x))
        exact |= method.fooled(model, method.replace_patch(x, mask, patch), y)
    attacked = method.adversarial_patch(model, x, y, mask, 20, 0.1, torch.Generator().manual_seed(2))
    found = method.fooled(model, attacked, y)
    assert exact.float().mean() > 0.1                                # the test is not vacuous
    assert not torch.any(found & ~exact)                             # nothing beyond the exact answer
    assert (found == exact).float().mean() >= 0.95                   # and PGD finds almost all of it


def test_fooling_rate_matches_adversarial_robustness_toolbox(method, digits):
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    model = fit(lambda: small_cnn(width=8, blocks=1), digits, epochs=6, lr=1e-2, seed=1)
    keep = method.correct(model, digits.X_test, digits.y_test)
    x, y = digits.X_test[keep][:120], digits.y_test[keep][:120]
    x, y = x.repeat_interleave(4, 0), y.repeat_interleave(4, 0)
    cells = torch.tensor([5, 6, 9, 10]).repeat(len(x) // 4)
    mask = method.patch_mask(cells)
    ours = method.fooled(model, method.adversarial_patch(model, x, y, mask, 20, 0.1,
                                                        torch.Generator().manual_seed(3)), y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(64,), nb_classes=10,
                                       clip_values=(0.0, 1.0), device_type="cpu")
        art_rates = {}
        for restarts in (1, 3):
            attack = ProjectedGradientDescentPyTorch(classifier, norm=np.inf, eps=1.0, eps_step=0.1, max_iter=20,
                                                     num_random_init=restarts, batch_size=512, verbose=False)
            art_adv = attack.generate(x.numpy(), y=y.numpy(), mask=mask.numpy())
            assert np.all((art_adv - x.numpy())[mask.numpy() == 0] == 0)
            art_rates[restarts] = method.fooled(model, torch.as_tensor(art_adv), y).float().mean().item()
    rate = ours.float().mean().item()
    assert 0.1 < rate < 0.9                                          # an informative regime
    # ART starts from x + U[-1, 1] clipped (most patch pixels at 0 or 1), the chapter from a uniform patch; the
    # chapter's single-start attack must be about as strong as ART's single start and not beat its best of three.
    assert art_rates[1] - 0.02 <= rate <= art_rates[3] + 0.02
    assert abs(rate - art_rates[1]) <= 0.1
