"""The rRCM chapter's own method, loaded from its `method` cells, against independent formulations: the Karras
schedule as a linspace in rho-root space, InfoNCE as cross-entropy over the batch, the consistency regulariser
through torch.distributions, the EDM preconditioning limits, and the structure of the pre-training loss (shared
noise along a trajectory, online target for consistency, EMA target for instance discrimination)."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, kl_divergence

from perturb import edm
from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("consistency-randomized-smoothing")


def test_levels_come_from_the_shared_edm_schedule(method):
    """The chapter's schedule is perturb.edm's (unit-tested in tests/test_edm.py against Karras et al.)."""
    assert method.edm is edm
    levels = edm.karras_sigmas(20, 0.002, 2.0, dtype=torch.float32)
    assert levels[0] == pytest.approx(2.0) and levels[-1] == pytest.approx(0.002)
    assert method.nearest_level(torch.tensor([2.0, 1.2, 0.9, 0.1]), 1.0).item() == pytest.approx(0.9)
    assert method.nearest_level(levels, 1.0).item() == pytest.approx(float(levels[(levels - 1.0).abs().argmin()]))


def test_info_nce_is_cross_entropy_over_the_batch(method):
    gen = torch.Generator().manual_seed(0)
    online, target = torch.randn(16, 8, generator=gen), torch.randn(16, 8, generator=gen)
    tau = 0.2
    logits = F.normalize(online, dim=1) @ F.normalize(target, dim=1).T / tau
    expected = F.cross_entropy(logits, torch.arange(16), reduction="none")
    assert torch.allclose(method.info_nce(online, target, tau), expected, atol=1e-6)
    # Invariant to the scale of either argument; near zero for aligned positives and orthogonal negatives.
    assert torch.allclose(method.info_nce(3 * online, 0.5 * target, tau), expected, atol=1e-5)
    eye = torch.eye(8)
    assert method.info_nce(eye, eye, 0.05).max() < 1e-6


def test_consistency_regularisation_matches_kl_and_entropy_of_distributions(method):
    gen = torch.Generator().manual_seed(1)
    logits = [torch.randn(12, 5, generator=gen) for _ in range(3)]
    lbd, eta = 2.0, 0.5
    mean = sum(F.softmax(l, dim=1) for l in logits) / 3
    mean_dist = Categorical(probs=mean)
    kl = sum(kl_divergence(mean_dist, Categorical(logits=l)) for l in logits) / 3
    expected = (lbd * kl + eta * mean_dist.entropy()).mean()
    assert method.consistency_regularisation(logits, lbd, eta).item() == pytest.approx(expected.item(), rel=1e-5)
    # Identical predictions: the KL term vanishes and only the entropy of the mean remains.
    same = [logits[0]] * 3
    assert method.consistency_regularisation(same, lbd, 0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_edm_denoiser_preconditioning_limits(method):
    zero_net = lambda z, t: torch.zeros_like(z)  # noqa: E731
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    # With F = 0 the denoiser shrinks by c_skip = s_d^2 / (t^2 + s_d^2): identity at t -> 0, shrinkage at large t.
    assert torch.allclose(method.edm_denoise(zero_net, z, 1e-6), z, atol=1e-6)
    t = 1.5
    assert torch.allclose(method.edm_denoise(zero_net, z, t), z * 0.25 / (t ** 2 + 0.25))
    # c_out scales the network output by t s_d / sqrt(t^2 + s_d^2).
    one_net = lambda z, t: torch.ones_like(z)  # noqa: E731
    c_out = t * 0.5 / np.sqrt(t ** 2 + 0.25)
    assert torch.allclose(method.edm_denoise(one_net, z, t) - method.edm_denoise(zero_net, z, t),
                          torch.full_like(z, c_out), atol=1e-6)


def test_ema_update_is_the_convex_combination(method):
    torch.manual_seed(3)
    online = method.NoiseConditionedEncoder(6, 8, 3)
    ema = copy.deepcopy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in ema.parameters()]
    method.ema_update(ema, online, 0.9)
    for p_ema, p_before, p_online in zip(ema.parameters(), before, online.parameters()):
        assert torch.allclose(p_ema, 0.9 * p_before + 0.1 * p_online)


def test_shift_and_jitter_is_a_scaled_shift_of_the_image(method):
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(30, 64, generator=gen)
    out = method.shift_and_jitter(x, gen, jitter=0.0)
    images = x.view(30, 8, 8)
    padded = F.pad(images, (1, 1, 1, 1))
    for i in range(30):
        shifts = [padded[i, dy:dy + 8, dx:dx + 8].reshape(-1) for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[i], s) for s in shifts)
    jittered = method.shift_and_jitter(x, gen, max_shift=0, jitter=0.2)
    ratio = jittered.sum(1) / x.sum(1)
    assert torch.all((ratio >= 0.8 - 1e-6) & (ratio <= 1.2 + 1e-6))


class Recorder(torch.nn.Module):
    """Wraps an encoder and records every projection call: which network, which head, input and level."""

    def __init__(self, encoder, name, log):
        super().__init__()
        self.encoder, self.name, self.log = encoder, name, log

    def project(self, z, t, head):
        self.log.append((self.name, head, z.detach().clone(), torch.as_tensor(t).expand(len(z)).clone()))
        return self.encoder.project(z, t, head)


def test_pretraining_pairs_share_noise_and_use_the_right_targets(method):
    torch.manual_seed(5)
    encoder = method.NoiseConditionedEncoder(64, 16, 10)
    ema_encoder = copy.deepcopy(encoder)
    log = []
    online, ema = Recorder(encoder, "online", log), Recorder(ema_encoder, "ema", log)
    levels = edm.karras_sigmas(20, 0.002, 2.0, dtype=torch.float32)
    x = torch.rand(8, 64, generator=torch.Generator().manual_seed(6))
    identity = lambda x, generator: x  # noqa: E731  (no augmentation, so the views differ only by design)
    loss, instance, consistency = method.rrcm_pretrain_loss(online, ema, x, levels, 0.2,
                                                            torch.Generator().manual_seed(7), augment=identity)
    calls = [(name, head) for name, head, _, _ in log]
    # instance discrimination: EMA target and online query on head 0; consistency: online target and query, head 1
    assert sorted(calls[:2]) == [("ema", 0), ("online", 0)]
    assert calls[2:] == [("online", 1), ("online", 1)]
    (_, _, z_target, t_target), (_, _, z_query, t_query) = log[2], log[3]
    z = 2 * x - 1
    assert torch.all(t_query > t_target)                                  # the target is the cleaner point
    noise_target = (z_target - z) / t_target[:, None]
    noise_query = (z_query - z) / t_query[:, None]
    assert torch.allclose(noise_target, noise_query, atol=1e-3)           # the same trajectory
    # both levels come from the schedule, and they are neighbours on it
    index = lambda t: (levels == t).nonzero().item()  # noqa: E731
    assert all(index(tq) + 1 == index(tt) for tq, tt in zip(t_query, t_target))
    # stop-gradients: only the online encoder receives gradients
    loss.backward()
    assert all(p.grad is None for p in ema_encoder.parameters())
    assert encoder.projections[0][0].weight.grad is not None and encoder.projections[1][0].weight.grad is not None
    assert loss.item() == pytest.approx(instance.item() + consistency.item(), rel=1e-6)


def test_noisy_training_loss_reduces_to_cross_entropy_and_adds_noise_of_twice_sigma(method):
    torch.manual_seed(8)
    model = method.NoiseConditionedEncoder(64, 16, 10)
    x = torch.rand(5, 64, generator=torch.Generator().manual_seed(9))
    y = torch.arange(5)
    sigma, t = 0.5, torch.tensor(0.96)
    gen_a, gen_b = torch.Generator().manual_seed(10), torch.Generator().manual_seed(10)
    loss = method.noisy_training_loss(model, x, y, sigma, t, gen_a, copies=1, lbd=0.0, eta=0.0)
    noise = torch.randn(x.shape, generator=gen_b)
    expected = F.cross_entropy(model(2 * x - 1 + 2 * sigma * noise, t), y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # The smoothing base classifier sees pixel-space inputs and applies the same map to model units.
    f = method.one_pass_classifier(model, t)
    assert torch.allclose(f(x), model(2 * x - 1, t))


def test_a_short_pretraining_run_lowers_both_losses(method):
    from perturb.data import load_digits

    torch.manual_seed(11)
    online = method.NoiseConditionedEncoder(64, 64, 10)
    ema = copy.deepcopy(online).requires_grad_(False)
    optimizer = torch.optim.Adam(online.parameters(), lr=1e-3)
    levels = edm.karras_sigmas(20, 0.002, 2.0, dtype=torch.float32)
    X = load_digits().X_train
    gen = torch.Generator().manual_seed(12)
    history = []
    for _ in range(150):
        batch = torch.randint(0, len(X), (64,), generator=gen)
        loss, instance, consistency = method.rrcm_pretrain_loss(online, ema, X[batch], levels, 0.2, gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.ema_update(ema, online, 0.99)
        history.append((instance.item(), consistency.item()))
    history = np.array(history)
    first, last = history[:20].mean(0), history[-20:].mean(0)
    assert np.all(last < 0.8 * first)
