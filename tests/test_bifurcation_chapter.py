"""The bifurcation-attack chapter's own method, loaded from its `method` cells, against hand calculations and an
independent library: the battery's energy balance (eq-battery) worked out by hand, the bifurcation layer's grouping
of the logits against explicit loops, the threat model (eq-threat) of the shared PGD as the chapter calls it, and the
chapter's GDL attack against the projected gradient descent of the Adversarial Robustness Toolbox run on the
bifurcation logits."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import perturb
from perturb.attacks import margin_loss, pgd_linf
from perturb.harness.notebook_code import load_method
from perturb.training import train_classifier

SLUG = "bifurcation-observation-attack"


@pytest.fixture(scope="module")
def method():
    return load_method(SLUG)


def constant_day(method, load, solar, price=0.2):
    hours = 3
    return {"hour": np.arange(hours), "load": np.full(hours, load), "solar": np.full(hours, solar),
            "price": np.full(hours, price)}


def test_energy_balance_matches_a_hand_calculation(method):
    # Four copies, all at 2 kWh of 4 (except the third, nearly empty, and the fourth, nearly full).
    building = method.BuildingBattery(constant_day(method, load=1.5, solar=0.4), num_copies=4)
    building.energy = np.array([2.0, 2.0, 0.5, 3.9])
    net = building.step(np.array([1.0, -0.5, -1.0, 1.0]))
    eta = 0.95
    # charge 1 kWh: stored 2 + 0.95 = 2.95; discharge 0.5 kWh delivered: stored 2 - 0.5/0.95;
    # nearly empty: at most 0.5 * 0.95 = 0.475 kWh can be delivered, leaving 0;
    # nearly full: only (4 - 3.9)/0.95 kWh can be drawn, leaving a full battery.
    expected_energy = np.array([2.95, 2.0 - 0.5 / eta, 0.0, 4.0])
    expected_flow = np.array([1.0, -0.5, -0.475, 0.1 / eta])
    np.testing.assert_allclose(building.energy, expected_energy, atol=1e-12)
    np.testing.assert_allclose(net, 1.5 - 0.4 + expected_flow, atol=1e-12)
    # Energy is conserved up to the conversion losses: grid-side flow minus change in storage equals the losses.
    losses = expected_flow - (expected_energy - np.array([2.0, 2.0, 0.5, 3.9]))
    assert np.all(losses >= -1e-12)
    np.testing.assert_allclose(losses[0], 1.0 * (1 - eta), atol=1e-12)


def test_observation_is_normalised_and_kpis_match_their_definitions(method):
    rng = np.random.default_rng(0)
    days = method.make_exogenous(3, rng)
    building = method.BuildingBattery(days, num_copies=2)
    obs = building.observe()
    assert obs.shape == (2, len(method.FEATURES)) and obs.min() >= 0 and obs.max() <= 1
    np.testing.assert_allclose(obs[:, 5], 0.5)                      # initial state of charge
    np.testing.assert_allclose(obs[:, 6] * building.load_max, days["load"][1])  # next-hour load
    net = np.array([[1.0, -0.5], [2.0, 0.5], [-1.0, 0.0]])
    price = np.array([0.1, 0.4, 0.2])
    kpis = method.building_kpis(net, price)
    np.testing.assert_allclose(kpis["peak-shaving"], [1 + 4, 0.25])
    np.testing.assert_allclose(kpis["cost"], [0.1 + 0.8, 0.2])
    np.testing.assert_allclose(kpis["peak"], [2.0, 0.5])
    np.testing.assert_allclose(kpis["ramping"], [1 + 3, 1 + 0.5])


def test_bifurcation_layer_groups_the_logits(method):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 20, generator=generator)
    groups = method.bifurcation_layer(logits)
    for row, pair in zip(logits.tolist(), groups.tolist()):
        assert pair == [max(row[:10]), max(row[10:])]
    levels = method.action_levels(20)
    assert torch.all(levels[:10] < 0) and torch.all(levels[10:] > 0)
    clean_bins = logits.argmax(1)
    clean_group = (clean_bins >= 10).long()
    gdl = method.gdl_loss(groups, clean_group)
    # GDL is minus the two-class margin of the clean group, and it equals the generic grouped difference.
    assert torch.allclose(gdl, -margin_loss(groups, clean_group))
    other = method.other_bins("bifurcation", clean_bins, 20)
    assert torch.allclose(method.grouped_difference(logits, other), gdl)
    # The untargeted choice of groups is the Carlini-Wagner difference of logits.
    untargeted = method.grouped_difference(logits, method.other_bins("untargeted", clean_bins, 20))
    assert torch.allclose(untargeted, -margin_loss(logits, clean_bins))
    # The targeted choice aims at the opposite extreme.
    targets = method.other_bins("targeted", clean_bins, 20).float().argmax(1)
    assert torch.equal(targets, torch.where(clean_group.bool(), 0, 19))
    # Continuous policy: group 1 (charge) wins exactly when the action is positive.
    action = torch.randn(32, 1, generator=generator)
    assert torch.equal(method.continuous_bifurcation_layer(action).argmax(1), (action.squeeze(1) > 0).long())


def test_per_row_masked_pgd_stays_in_the_threat_model(method):
    # The chapter's use of the shared PGD: a score of the observation itself, one budget per row, the clock masked.
    generator = torch.Generator().manual_seed(1)
    obs = torch.rand(40, 9, generator=generator)
    obs[:5] = 0.0
    obs[5:10] = 1.0                                      # rows on the edge of the box
    eps = torch.linspace(0.0, 0.3, 40)
    mask = torch.tensor([0.0, 0.0] + [1.0] * 7)
    weight = torch.randn(9, generator=generator)
    for steps in (0, 7):
        adv = pgd_linf(lambda s: torch.sin(3 * s) @ weight, obs, None, eps, steps=steps, mask=mask,
                       loss=lambda score, _: score, generator=generator)
        delta = adv - obs
        assert torch.all(delta.abs() <= eps[:, None] + 1e-6)
        assert torch.all(delta[:, :2] == 0)
        assert adv.min() >= 0 and adv.max() <= 1
    # The attack does ascend: a linear score ends at the corner of the box it points to.
    adv = pgd_linf(lambda s: s @ weight, obs[10:], None, eps[10:], steps=10, mask=mask, loss=lambda score, _: score,
                   generator=generator)
    corner = (obs[10:] + eps[10:, None] * mask * weight.sign()).clamp(0, 1)
    assert torch.allclose(adv, corner, atol=1e-6)


def trained_victim(method):
    cfg = perturb.setup(SLUG, "quick", "cpu", 0, sizes={"quick": {}, "full": {}})
    days = method.make_exogenous(20, cfg.rng)
    building = method.BuildingBattery(days, 4)
    building.energy = cfg.rng.uniform(0, 4, 4)
    visited = []
    for _ in range(building.num_steps):
        obs = building.observe()
        visited.append(obs)
        building.step(np.where(cfg.rng.random(4) < 0.3, cfg.rng.uniform(-1, 1, 4), method.expert_action(obs)))
    visited = np.concatenate(visited)
    X = torch.as_tensor(visited, dtype=torch.float32)
    y = torch.as_tensor(method.to_bins(method.expert_action(visited), 20))
    policy = train_classifier(method.policy_network([9, 32, 32, 20]), X, y, cfg, epochs=15, lr=3e-3, batch_size=128)
    policy.eval()
    return policy, X


def test_gdl_attack_matches_the_adversarial_robustness_toolbox(method):
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    policy, X = trained_victim(method)
    obs = X[torch.randperm(len(X), generator=torch.Generator().manual_seed(2))[:400]]
    with torch.no_grad():
        clean_bins = policy(obs).argmax(1)
    clean_group = (clean_bins >= 10).long()
    eps, steps = 0.05, 30
    mask = torch.tensor([0.0, 0.0] + [1.0] * 7)

    ours = pgd_linf(policy, obs, method.other_bins("bifurcation", clean_bins, 20), torch.full((len(obs),), eps),
                    steps=steps, mask=mask, loss=method.grouped_difference, generator=torch.Generator().manual_seed(3))

    class Bifurcated(nn.Module):
        def forward(self, s):
            return method.bifurcation_layer(policy(s))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = PyTorchClassifier(model=Bifurcated(), loss=nn.CrossEntropyLoss(), input_shape=(9,),
                                      nb_classes=2, clip_values=(0.0, 1.0), device_type="cpu")
        attack = ProjectedGradientDescent(estimator, norm=np.inf, eps=eps, eps_step=2.5 * eps / steps,
                                          max_iter=steps, num_random_init=1, batch_size=len(obs), verbose=False)
        np.random.seed(4)
        theirs = attack.generate(obs.numpy(), y=np.eye(2)[clean_group.numpy()],
                                 mask=np.broadcast_to(mask.numpy(), obs.shape).astype(np.float32))
    theirs = torch.as_tensor(theirs, dtype=torch.float32)
    assert torch.all((theirs - obs).abs() <= eps + 1e-5) and torch.all(theirs[:, :2] == obs[:, :2])

    def flip_rate(adv):
        with torch.no_grad():
            return ((policy(adv).argmax(1) >= 10).long() != clean_group).float().mean().item()

    ours_rate, theirs_rate = flip_rate(ours), flip_rate(theirs)
    assert ours_rate > 0.1                               # the attack has something to do
    assert abs(ours_rate - theirs_rate) <= 0.03, (ours_rate, theirs_rate)
