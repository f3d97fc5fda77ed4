"""Config files load, name their protocol's numbers, and reject unknown keys / impossible values."""

import pathlib

import ml_collections
import pytest

from fbl_jax.defaults import (
    ConfigError,
    check_data_paths,
    config_from_file,
    get_default_config,
    validate_config,
)

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


def test_authors_cifar_configs_warm_up_per_epoch():
    """LDAM-DRW/FBL (and BBN) step the warm-up once per epoch; the demo keeps its per-step ramp."""
    for name in (
        "cifar10_lt",
        "cifar100_lt",
        "cifar10_lt_short",
        "cifar10_lt_bbn",
        "cifar100_lt_bbn",
    ):
        config = config_from_file(CONFIGS / f"{name}.py")
        assert config.optimizer.warmup_per_epoch is True, name
        assert config.optimizer.warmup_epochs == 5.0, name
    for name in ("demo", "default", "imagenet_lt"):
        assert config_from_file(CONFIGS / f"{name}.py").optimizer.warmup_per_epoch is False, name


def _set(config, field, value):
    *parents, leaf = field.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value


# (field, bad value, what the one-line message must say besides the field and the value)
BAD_NUMBERS = [
    ("seed", -1, "an integer in [0, 4294967295]"),
    ("num_epochs", 0, "an integer >= 1"),
    ("num_epochs", True, "a boolean, not a number"),
    ("batch_size", 0, "an integer >= 1"),
    ("eval_batch_size", -8, "an integer >= 1"),
    ("eval_every_epochs", 0, "an integer >= 1"),
    ("checkpoint_every_epochs", 0, "an integer >= 1"),
    ("checkpoint_every_minutes", -5.0, ">= 0"),
    ("keep_checkpoints", 0, "an integer >= 1"),
    ("log_every_steps", 0, "an integer >= 1"),
    ("steps_per_call", -2, "integer >= -1"),
    ("steps_per_call", True, "integer >= -1"),
    ("optimizer.learning_rate", -0.1, "a finite number > 0"),
    ("optimizer.learning_rate", 0.0, "a finite number > 0"),
    ("optimizer.learning_rate", float("inf"), "is not finite"),
    ("optimizer.learning_rate", None, "is not set"),
    ("optimizer.momentum", 1.0, "in [0, 1)"),
    ("optimizer.momentum", -0.5, "in [0, 1)"),
    ("optimizer.weight_decay", -1e-4, ">= 0"),
    ("optimizer.warmup_epochs", -1.0, ">= 0"),
    ("optimizer.warmup_epochs", 200.0, "in [0, 200)"),
    ("optimizer.decay_epochs", (0, 180), "in (0, 200]"),
    ("optimizer.decay_epochs", (160, 250), "in (0, 200]"),
    ("optimizer.decay_epochs", (180, 160), "strictly increasing"),
    ("optimizer.decay_epochs", (160, 160), "strictly increasing"),
    ("optimizer.decay_epochs", (3, 180), "inside the 5-epoch warm-up"),
    ("optimizer.decay_epochs", ("160", 180), "a str, not a number"),
    ("optimizer.decay_multipliers", (0.01,), "same length"),
    ("optimizer.decay_multipliers", (0.01, -1.0), "> 0"),
    ("data.num_classes", 1, "an integer >= 2"),
    ("data.imbalance_factor", 0.5, ">= 1, or None (unset)"),
    ("data.imbalance_factor", float("nan"), "is not finite"),
    ("data.subset_seed", -3, "an integer in [0, 4294967295]"),
    ("data.n_max", 0, "an integer >= 1, or None (unset)"),
    ("data.minival_per_class", -1, "an integer >= 0"),
    ("data.sampler_k", 0, "an integer >= 1"),
    ("data.pad", -1, "an integer >= 0"),
    ("data.pad", True, "a boolean, not a number"),
    ("data.image_size", 0, "an integer >= 1"),
    ("data.mixup_alpha", -0.2, "a finite number >= 0"),
    ("data.mean", (0.5, 0.5), "3 per-channel (RGB) values"),
    ("data.mean", (0.5, 0.5, 125.0), "in [0, 1]"),
    ("data.std", (0.2, 0.0, 0.2), "in (0, 1]"),
    ("distributed.num_processes", 0, "an integer >= 1, or None (unset)"),
    ("distributed.process_id", -1, "an integer >= 0, or None (unset)"),
]


@pytest.mark.parametrize("field, value, needle", BAD_NUMBERS)
def test_bad_numbers_name_field_value_and_range(field, value, needle):
    config = get_default_config()
    _set(config, field, value)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert f"config.{field}=" in message, message
    assert repr(value) in message or repr(tuple(value)) in message, message
    assert needle in message, message
    assert "\n" not in message


def test_limits_between_fields():
    config = get_default_config()
    config.distributed.num_processes, config.distributed.process_id = 2, 2
    with pytest.raises(ConfigError, match=r"process_id=2 .*\[0, 2\)"):
        validate_config(config)
    config = get_default_config()
    config.num_epochs = 50  # the defaults' lr drops at 160/180 are past the end
    with pytest.raises(ConfigError, match=r"decay_epochs=\(160, 180\) holds 160.*\(0, 50\]"):
        validate_config(config)
    config.optimizer.schedule = "cosine"  # the step schedule's drops are not read
    validate_config(config)
    config.optimizer.warmup_epochs = 50.0
    with pytest.raises(ConfigError, match=r"warmup_epochs=50.0 .*\[0, 50\)"):
        validate_config(config)


def test_per_epoch_warmup_needs_whole_epochs():
    config = get_default_config()
    config.optimizer.warmup_per_epoch = True
    config.optimizer.warmup_epochs = 2.5
    with pytest.raises(ConfigError, match=r"warmup_epochs=2.5 is not a whole number.*use 2 or 3"):
        validate_config(config)
    config.optimizer.warmup_epochs = 3.0
    validate_config(config)


@pytest.mark.parametrize(
    "field",
    ["half_precision", "optimizer.nesterov", "optimizer.warmup_per_epoch", "data.train_pool"],
)
def test_numbers_where_booleans_belong(field):
    # ml_collections refuses an int for a bool field on assignment; a config rebuilt from plain
    # values (e.g. a run's config.json) is not typed, so validate_config checks it
    fields = get_default_config().to_dict()
    *parents, leaf = field.split(".")
    node = fields
    for part in parents:
        node = node[part]
    node[leaf] = 1
    with pytest.raises(ConfigError, match=rf"config\.{field}=1 is not a boolean"):
        validate_config(ml_collections.ConfigDict(fields))
    node[leaf] = False
    validate_config(ml_collections.ConfigDict(fields))


def test_a_data_root_for_a_source_that_reads_none_is_named():
    """The demo's digits come with the package: a data root there is a mistake, not ignored."""
    config = config_from_file(CONFIGS / "demo.py")
    check_data_paths(config.data)
    config.data.root = "/data/cifar10-lossless"
    with pytest.raises(ConfigError, match="data.root='/data/cifar10-lossless'.*synthetic_digits"):
        check_data_paths(config.data)
