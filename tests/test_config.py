import pytest
import torch

import perturb
from perturb.harness.config import ConfigError, resolve_device, validate_scale, validate_seed

SIZES = {"quick": {"n": 3}, "full": {"n": 30}}


def test_setup_picks_sizes_for_the_scale_and_pins_cpu_threads():
    torch.set_num_threads(2)  # the test session runs single-threaded; setup must pin it itself
    cfg = perturb.setup("crown-bound-propagation", "full", "cpu", 4, sizes=SIZES)
    assert cfg.sizes == {"n": 30} and cfg.seed == 4 and cfg.device.type == "cpu"
    assert torch.get_num_threads() == 1


def test_same_seed_gives_identical_draws_and_other_seeds_differ():
    draws = []
    for seed in (0, 0, 1):
        cfg = perturb.setup("crown-bound-propagation", "quick", "cpu", seed, sizes=SIZES)
        draws.append((torch.randn(5), torch.rand(3, generator=cfg.generator(7)), cfg.rng.normal(size=2)))
    assert all(torch.equal(a, b) for a, b in zip(draws[0][:2], draws[1][:2]))
    assert (draws[0][2] == draws[1][2]).all()
    assert not torch.equal(draws[0][0], draws[2][0]) and not torch.equal(draws[0][1], draws[2][1])


def test_streams_with_different_offsets_are_independent():
    cfg = perturb.setup("crown-bound-propagation", "quick", "cpu", 0, sizes=SIZES)
    assert not torch.equal(torch.rand(4, generator=cfg.generator(1)), torch.rand(4, generator=cfg.generator(2)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(slug="no-such-chapter"), "unknown chapter"),
    (dict(scale="medium"), "accepted: quick, full"),
    (dict(device="tpu"), "accepted: auto, cpu, cuda"),
    (dict(seed=-1), "non-negative integer"),
    (dict(seed=1.5), "non-negative integer"),
    (dict(seed="two"), "non-negative integer"),
    (dict(seed=True), "non-negative integer"),
])
def test_bad_parameters_are_refused_with_what_is_accepted(kwargs, message):
    args = dict(slug="crown-bound-propagation", scale="quick", device="cpu", seed=0) | kwargs
    with pytest.raises(ConfigError, match=message):
        perturb.setup(args["slug"], args["scale"], args["device"], args["seed"], sizes=SIZES)


def test_sizes_must_name_both_scales():
    with pytest.raises(ConfigError, match="exactly the scales"):
        perturb.setup("crown-bound-propagation", "quick", "cpu", 0, sizes={"quick": {"n": 1}})


def test_validators_accept_what_they_should():
    assert validate_scale("quick") == "quick"
    assert validate_seed("3") == 3 and validate_seed(2.0) == 2
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_gpu_is_refused():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
