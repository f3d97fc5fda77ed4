"""Config files load, name their protocol's numbers, and reject unknown keys / impossible values."""

import pathlib

import pytest

from fbl_jax.defaults import config_from_file, get_default_config, validate_config

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


TRAIN_CONFIGS = sorted(p.stem for p in CONFIGS.glob("*.py") if p.stem != "decouple")


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_every_config_validates(name):
    config = config_from_file(CONFIGS / f"{name}.py")
    validate_config(config)
    for key in ("seed", "num_epochs", "batch_size", "eval_every_epochs", "checkpoint_every_epochs"):
        assert key in config
    assert config.model.name and config.loss.name and "data" in config


def test_protocol_numbers():
    c10 = config_from_file(CONFIGS / "cifar10_lt.py")
    assert (c10.num_epochs, c10.batch_size, c10.model.name) == (200, 64, "resnet32")
    assert c10.optimizer.learning_rate == 0.1 and c10.optimizer.weight_decay == 2e-4
    assert tuple(c10.optimizer.decay_epochs) == (160, 180)
    assert (c10.loss.fbl_form, c10.loss.fbl_scale) == ("authors_code", 60.0)
    c100 = config_from_file(CONFIGS / "cifar100_lt.py")
    assert c100.data.num_classes == 100 and c100.num_epochs == 200
    inlt = config_from_file(CONFIGS / "imagenet_lt.py")
    assert (inlt.num_epochs, inlt.batch_size, inlt.optimizer.learning_rate) == (180, 512, 0.2)
    assert tuple(inlt.optimizer.decay_epochs) == (120, 160) and inlt.model.name == "resnet50"
    places = config_from_file(CONFIGS / "places_lt.py")
    assert places.model.name == "resnet152" and "layer4" not in places.model.freeze
    assert places.data.num_classes == 365 and places.loss.fbl_scale == 150.0


def test_unknown_key_is_named():
    config = get_default_config()
    config.unlock()
    config.loss.gama = 2.0
    with pytest.raises(ValueError, match=r"config\.loss\.gama"):
        validate_config(config)


def test_impossible_values():
    config = get_default_config()
    config.batch_size = 0
    with pytest.raises(ValueError, match="batch_size"):
        validate_config(config)
    config = get_default_config()
    config.distributed.initialize = "sometimes"
    with pytest.raises(ValueError, match="initialize"):
        validate_config(config)
