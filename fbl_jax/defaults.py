"""The shared default config: every field a run can set, with the CIFAR-LT protocol's values.

configs/*.py start from `get_default_config()` and override. `validate_config` rejects any key
that is not here, so a typo in a config file or a `--config.x.y=` override is an error.
"""

from __future__ import annotations

import difflib
import importlib.util
import pathlib
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

from fbl_jax.models.layers import BN_IMPLS


class ConfigError(ValueError):
    """A config field is unknown or impossible; the message names the field and the fix."""


def get_default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.run_name = ""  # free text for reports; the workdir names the run
    c.dataset_name = ""  # e.g. "CIFAR-10-LT" (reports)
    c.num_epochs = 200
    c.batch_size = 64  # global, over all devices and hosts
    c.eval_batch_size = 500  # global
    c.eval_every_epochs = 10
    c.checkpoint_every_epochs = 10
    c.keep_checkpoints = 3
    c.log_every_steps = 100
    # Train steps per compiled call, on-device pipeline only; logging, evaluation and checkpoints
    # still happen at their own steps. k > 1: a lax.scan of k steps; -1 (LOOP): a while loop over
    # every step up to the next event. 0 = automatic: CPU_STEPS_PER_CALL unrolled steps on the
    # CPU backend (~20 % faster there, BENCHMARKS.md), LOOP on accelerators, 1 with tf.data.
    c.steps_per_call = 0
    # fbl-sweep: how a program's runs share a step: "vmap" (batched, for accelerators), "unroll"
    # (each run's step in turn, for the CPU) or "auto" (that choice by backend; sweep.py)
    c.sweep_run_axis = "auto"
    # Evaluation as one compiled call per split (a scan over its batches, kept on the device):
    # "auto" on accelerators with the on-device pipeline, "always", or "never" (a call a batch)
    c.eval_in_one_call = "auto"
    c.half_precision = False  # bfloat16 compute, float32 params/BN statistics/loss

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet32"
    c.model.head = "linear"  # "cosine" for LDAM
    # BatchNorm: "flax" (nn.BatchNorm), "fused_grad" (same values, closed-form backward; faster on
    # CPU) or "auto" (fused_grad on the CPU backend, flax elsewhere)
    c.model.batch_norm = "auto"
    c.model.freeze = ()  # top-level modules kept fixed, e.g. ("conv1", "bn1", "layer1", ...)
    c.model.pretrained = ""  # torchvision state dict (.pth/.npz/.safetensors)
    c.model.pretrained_skip_head = True

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "fbl"
    c.loss.fbl_form = "paper"  # "paper": λ = log n_max − log n_j; "authors_code": λ/max λ · A
    c.loss.fbl_scale = 1.0  # A in the authors' code (60 CIFAR, 150 large datasets)
    c.loss.curriculum = "parabolic"
    c.loss.curriculum_offset = 10.0  # authors_code: α = (t / (T − offset))²
    c.loss.alpha_per_epoch = False  # True: α from floor(epoch), as the authors' code updates it
    c.loss.focal_gamma = 1.0
    c.loss.cb_beta = 0.9999
    c.loss.ldam_max_m = 0.5
    c.loss.ldam_s = 30.0
    c.loss.drw_start_epoch = 160
    c.loss.la_tau = 1.0

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 2e-4
    c.optimizer.schedule = "step"  # "step" | "cosine" | "constant"
    c.optimizer.warmup_epochs = 5.0
    c.optimizer.decay_epochs = (160, 180)
    c.optimizer.decay_multipliers = (0.01, 0.0001)  # of the base lr

    c.data = ml_collections.ConfigDict()
    c.data.source = "image_folder"  # image_folder | tfds | split_list | synthetic_digits
    c.data.root = placeholder(str)  # image folder root, or image root for split lists
    c.data.name = placeholder(str)  # tfds name
    c.data.data_dir = placeholder(str)  # tfds data_dir
    c.data.download = False
    c.data.train_split = "train"
    c.data.test_split = "test"
    c.data.train_list = placeholder(str)
    c.data.test_list = placeholder(str)
    c.data.val_list = placeholder(str)
    c.data.num_classes = 10
    c.data.imbalance_factor = placeholder(float)  # None: use the source as it is
    c.data.profile = "exp"
    c.data.subset_seed = 0
    c.data.n_max = placeholder(int)  # LT head class; None: the smallest source class
    c.data.train_pool = False  # train split is a pool, not the full set (bundle.long_tail_profile)
    # split_list whose train list IS the long-tailed subset (benchmarks/pack_lt_split.py):
    # imbalance_factor then labels the run and is checked against the list's class counts
    c.data.list_is_subset = False
    c.data.minival_per_class = 100
    c.data.pipeline = "device"  # "device" (in accelerator memory, no TF) | "tf"
    c.data.sampler = "instance"
    c.data.sampler_k = 4
    c.data.second_sampler = ""  # BBN's re-balancing stream ("reversed"); "" = one stream
    c.data.mean = (0.4914, 0.4822, 0.4465)
    c.data.std = (0.2023, 0.1994, 0.2010)
    c.data.pad = 4
    c.data.image_size = 32
    c.data.mixup_alpha = 0.0
    c.data.cache_dir = placeholder(str)

    c.distributed = distributed_config()
    return c


def distributed_config() -> ml_collections.ConfigDict:
    """Multi-host: "auto" joins hosts when the environment describes several processes (TPU pod,
    Slurm, or the explicit fields); "explicit" needs them; "never" runs single-process."""
    d = ml_collections.ConfigDict()
    d.initialize = "auto"
    d.coordinator_address = placeholder(str)
    d.num_processes = placeholder(int)
    d.process_id = placeholder(int)
    return d


def validate_config(config: Any) -> None:
    """Unknown keys (with close matches), unknown names and impossible values: ConfigError.

    Runs before a work directory is created or data is read, so a typo costs nothing;
    `check_data_paths` (the data must exist) is separate, so config files validate without data.
    """
    check_keys(config, get_default_config(), "config")
    positive = ("num_epochs", "batch_size", "eval_batch_size", "eval_every_epochs")
    positive += ("checkpoint_every_epochs", "keep_checkpoints", "log_every_steps")
    for key in positive:
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"config.{key} must be a positive integer, got {value!r}")
    k = config.steps_per_call
    if not isinstance(k, int) or k < LOOP:
        raise ConfigError(
            f"config.steps_per_call must be an integer >= -1 (0: automatic, -1: a while loop up "
            f"to the next event), got {k!r}"
        )
    if (k > 1 or k == LOOP) and config.data.pipeline != "device":
        raise ConfigError(
            f"config.steps_per_call={k} needs config.data.pipeline='device'; use 1 or 0 (automatic)"
        )
    for field, choices in choice_fields().items():
        node = config
        *parents, leaf = field.split(".")
        for p in parents:
            node = node[p]
        check_choice(f"config.{field}", node[leaf], choices)
    check_loss_numbers(config)


def check_loss_numbers(config: Any) -> None:
    """The loss's numbers (offset < epochs, β in [0, 1), τ, γ, margins) as make_loss checks
    them, on stand-in class counts, so a bad value fails before any data is read."""
    from fbl_jax import losses

    try:
        losses.make_loss(config.loss, [2, 1], config.num_epochs)
    except ValueError as err:
        raise ConfigError(f"config.loss: {err}") from None
    from fbl_jax.train import bbn

    problem = bbn.check_config(config)
    if problem:
        raise ConfigError(problem)


def choice_fields() -> dict[str, tuple[str, ...]]:
    """Config fields that name one of a fixed set of things, with that set."""
    from fbl_jax import losses
    from fbl_jax.data.bundle import PIPELINES, SOURCES
    from fbl_jax.data.long_tail import PROFILES
    from fbl_jax.data.samplers import SAMPLER_NAMES
    from fbl_jax.losses import curriculum
    from fbl_jax.models import MODEL_NAMES
    from fbl_jax.models.heads import HEAD_NAMES
    from fbl_jax.train import optimizer as optim

    return {
        "model.name": MODEL_NAMES,
        "model.head": HEAD_NAMES,
        "model.batch_norm": ("auto", *BN_IMPLS),
        "loss.name": losses.LOSS_NAMES,
        "loss.fbl_form": losses.FBL_FORMS,
        "loss.curriculum": curriculum.SCHEDULES,
        "optimizer.schedule": optim.SCHEDULES,
        "data.source": SOURCES,
        "data.pipeline": PIPELINES,
        "data.profile": PROFILES,
        "data.sampler": SAMPLER_NAMES,
        "data.second_sampler": ("", *SAMPLER_NAMES),
        "distributed.initialize": ("auto", "never", "explicit"),
        "sweep_run_axis": ("auto", "vmap", "unroll"),
        "eval_in_one_call": ("auto", "always", "never"),
    }


def resolve_eval_in_one_call(config: Any, backend: str) -> bool:
    """config.eval_in_one_call for this backend: the scan costs a device-resident copy of the
    eval split (fine for CIFAR-sized data, which is what the on-device pipeline holds)."""
    setting = config.get("eval_in_one_call", "auto")
    if setting == "auto":
        return backend != "cpu" and config.data.pipeline == "device"
    return setting == "always"


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}{hint}")


def check_data_paths(data: Any) -> None:
    """The data root a source reads must be given and exist (before any work directory)."""
    if data.source in ("image_folder", "split_list"):
        root = data.get("root", None)
        if not root:
            raise ConfigError(
                f"config.data.root is not set (data.source={data.source!r}): pass "
                "--config.data.root=DIR, a folder with train/ and test/ of <class>/ image "
                "folders (e.g. the lossless CIFAR copy), or see the config's docstring"
            )
        if not pathlib.Path(root).is_dir():
            raise ConfigError(
                f"config.data.root={root!r} is not a directory: pass --config.data.root=DIR "
                "with the dataset's train/ and test/ folders"
            )


CPU_STEPS_PER_CALL = 4
LOOP = -1  # steps_per_call: every step up to the next log/eval event in one call (while loop)


def resolve_steps_per_call(config: Any, backend: str) -> int:
    """config.steps_per_call, with 0 resolved for this backend and pipeline: LOOP on
    accelerators with the on-device pipeline (one dispatch per event, no per-step host work),
    CPU_STEPS_PER_CALL unrolled steps on the CPU (its while loops run this step ~30x slower),
    one step with the tf pipeline (the host feeds every step)."""
    if config.steps_per_call:
        return config.steps_per_call
    if config.data.pipeline != "device":
        return 1
    return CPU_STEPS_PER_CALL if backend == "cpu" else LOOP


def check_keys(config: Any, schema: Any, where: str) -> None:
    """Every key of `config` must be in `schema`; the error names the key and close matches."""
    for key in config.keys():
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema.keys()), n=3)
            hint = f"; did you mean {close}?" if close else f"; valid keys: {sorted(schema.keys())}"
            raise ConfigError(f"unknown config key {where}.{key}{hint}")
        if isinstance(schema[key], ml_collections.ConfigDict):
            check_keys(config[key], schema[key], f"{where}.{key}")


def config_from_file(path: str | pathlib.Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config()` of a config file by path, so configs/ variants can start from a sibling."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"fbl_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()
