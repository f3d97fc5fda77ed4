"""The shared default config: every field a run can set, with the CIFAR-LT protocol's values.

configs/*.py start from `get_default_config()` and override. `validate_config` rejects any key
that is not here, so a typo in a config file or a `--config.x.y=` override is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import numbers
import pathlib
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

# Defined in fbl_jax/errors.py (which imports nothing of the package, so the losses raise it
# without importing this module back); `from fbl_jax.defaults import ConfigError` stays valid.
from fbl_jax.errors import ConfigError

# Fields that decide how a run is carried out (logging, checkpoints, how steps are dispatched,
# evaluation batches, the decoded-data cache), never what it computes: runs that differ only in
# them are one setting. fbl-report groups seeds by the rest, so a run resumed by a version that
# added such a field still sits with its seeds.
BOOKKEEPING_KEYS = (
    "log_every_steps",
    "checkpoint_every_epochs",
    "checkpoint_every_minutes",
    "keep_checkpoints",
    "steps_per_call",
    "sweep_run_axis",
    "sweep_processes",
    "eval_in_one_call",
    "eval_batch_size",
    "data.cache_dir",
)


def get_default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.run_name = ""  # free text for reports; the workdir names the run
    c.dataset_name = ""  # e.g. "CIFAR-10-LT" (reports)
    c.num_epochs = 200
    c.batch_size = 64  # global, over all devices and hosts
    c.eval_batch_size = 500  # global
    c.eval_every_epochs = 10
    # From this epoch on, evaluate after EVERY epoch (0: never densely): the authors' code (like
    # LDAM-DRW's and BBN's) evaluates every epoch and reports the best test epoch, so the runs
    # that compare with the paper need those evaluations; the minival selection gets them too
    c.eval_every_epoch_from = 0
    c.checkpoint_every_epochs = 10
    # Also a checkpoint at the first log step this many minutes after the last one (0: never):
    # a kill without warning (a lost node, the OOM killer; SIGTERM saves on its own) then loses
    # at most this much, however long an epoch takes on the hardware at hand
    c.checkpoint_every_minutes = 30.0
    c.keep_checkpoints = 3
    c.log_every_steps = 100
    # Train steps per compiled call, on-device pipeline only; logging, evaluation and checkpoints
    # still happen at their own steps. k > 1: a lax.scan of k steps; -1 (LOOP): a while loop over
    # every step up to the next event. 0 = automatic: CPU_STEPS_PER_CALL unrolled steps on the
    # CPU backend (~20 % faster there, BENCHMARKS.md), LOOP on accelerators, 1 with tf.data.
    c.steps_per_call = 0
    # fbl-sweep: how a program's runs take their steps: "vmap" (stacked on a run axis, one call;
    # for accelerators), "sequential" (each run its own call of the single-run step: equal to
    # fbl-train bit for bit; for the CPU) or "auto" (that choice by backend; train/runners.py)
    c.sweep_run_axis = "auto"
    # fbl-sweep/fbl-reproduce with the sequential run axis: processes a wave's runs are shared
    # over, each pinned to its own cores (train/processes.py); 0 = one per core on the CPU
    c.sweep_processes = 1
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
    # Convolutions: "xla" (lax.conv), "onednn" (oneDNN's kernels through an XLA custom call; CPU,
    # float32; `pip install 'fbl-jax[cpu]'`) or "auto" (onednn on the CPU backend when installed,
    # xla elsewhere). Same parameters and checkpoints either way.
    c.model.conv = "auto"
    c.model.freeze = ()  # top-level modules kept fixed, e.g. ("conv1", "bn1", "layer1", ...)
    # a PyTorch state dict (.pth/.pth.tar/.npz/.safetensors): torchvision's or LDAM's CIFAR names
    c.model.pretrained = ""
    c.model.pretrained_skip_head = True

    c.loss = loss_config()

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 2e-4
    c.optimizer.schedule = "step"  # "step" | "cosine" | "constant"
    c.optimizer.warmup_epochs = 5.0
    # False: the lr rises every step; True: a stair per epoch, lr·(e + 1)/warmup_epochs in epoch e
    # (LDAM-DRW's adjust_learning_rate, which the FBL authors' CIFAR code uses; whole epochs only)
    c.optimizer.warmup_per_epoch = False
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
    # split_list whose train list IS the long-tailed subset (fbl-reproduce pack):
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


def loss_config() -> ml_collections.ConfigDict:
    """`name` and every field of every registered loss kind, each declared (with its meaning)
    once in fbl_jax/losses/kinds/ or losses/fields.py."""
    from fbl_jax import losses

    loss = ml_collections.ConfigDict()
    loss.name = "fbl"  # one of losses.LOSS_NAMES
    for key, value in losses.LOSS_DEFAULTS.items():
        loss[key] = value
    return loss


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
    check_numbers(config)
    k = config.steps_per_call
    check_number(
        "config.steps_per_call",
        k,
        Range(LOOP, integer=True),
        " (0: automatic, -1: a while loop up to the next event, k >= 1: k steps a call)",
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
    """Every loss field's own limits (β in [0, 1), γ ≥ 0, margins > 0 …), then the selected
    kind's as make_loss checks them (offset < epochs …) on stand-in class counts, so a bad
    value fails before any data is read."""
    from fbl_jax import losses

    try:
        losses.check_fields(config.loss)
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
    from fbl_jax.models import MODEL_NAMES
    from fbl_jax.models.heads import HEAD_NAMES
    from fbl_jax.models.layers import BN_IMPLS, CONV_IMPLS
    from fbl_jax.train import optimizer as optim

    return {
        "model.name": MODEL_NAMES,
        "model.head": HEAD_NAMES,
        "model.batch_norm": ("auto", *BN_IMPLS),
        "model.conv": ("auto", *CONV_IMPLS),
        "loss.name": losses.LOSS_NAMES,
        **{f"loss.{key}": choices for key, choices in losses.field_choices().items()},
        "optimizer.schedule": optim.SCHEDULES,
        "data.source": SOURCES,
        "data.pipeline": PIPELINES,
        "data.profile": PROFILES,
        "data.sampler": SAMPLER_NAMES,
        "data.second_sampler": ("", *SAMPLER_NAMES),
        "distributed.initialize": ("auto", "never", "explicit"),
        "sweep_run_axis": ("auto", "vmap", "sequential"),
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


UINT32_MAX = 2**32 - 1  # seeds reach np.random.RandomState, which takes [0, 2**32)


@dataclasses.dataclass(frozen=True)
class Range:
    """Where a numeric config field may lie: `low`/`high` (None: unbounded), each end closed
    unless `*_open`; `integer`: whole numbers only; `optional`: None (a placeholder left unset)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{kind} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        elif self.low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            text = f"{kind} {'<' if self.high_open else '<='} {_num(self.high)}"
        else:
            text = kind
        return f"{text}, or None (unset)" if self.optional else text

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` (a phrase), or None when it is in the range."""
        if value is None:
            return None if self.optional else "is not set"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            kind = "a boolean" if isinstance(value, bool) else f"a {type(value).__name__}"
            return f"is {kind}, not a number"
        if self.integer and not isinstance(value, numbers.Integral):
            return "is not an integer"
        if not math.isfinite(value):
            return "is not finite"
        low, high = self.low, self.high
        if low is not None and (value < low or (self.low_open and value == low)):
            return "is out of range"
        if high is not None and (value > high or (self.high_open and value == high)):
            return "is out of range"
        return None


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def check_number(name: str, value: Any, valid: Range, why: str = "") -> None:
    """ConfigError naming the field, its value and `valid` unless the value is in `valid`."""
    problem = valid.problem(value)
    if problem:
        raise ConfigError(f"{name}={value!r} {problem}: it must be {valid}{why}")


def numeric_ranges() -> dict[str, Range]:
    """The training config's numeric fields and their ranges, config.loss aside (its numbers are
    check_loss_numbers'); limits between fields are check_numbers'."""
    count = Range(1, integer=True)
    seed = Range(0, UINT32_MAX, integer=True)
    return {
        "seed": seed,
        "num_epochs": count,
        "batch_size": count,
        "eval_batch_size": count,
        "eval_every_epochs": count,
        "eval_every_epoch_from": Range(0, integer=True),
        "sweep_processes": Range(0, integer=True),
        "checkpoint_every_epochs": count,
        "checkpoint_every_minutes": Range(0),  # 0: by epochs only
        "keep_checkpoints": count,
        "log_every_steps": count,
        "data.num_classes": Range(2, integer=True),
        "data.imbalance_factor": Range(1, optional=True),  # n_max / n_min; 1 = balanced
        "data.subset_seed": seed,
        "data.n_max": Range(1, integer=True, optional=True),
        "data.minival_per_class": Range(0, integer=True),  # 0: no minival
        "data.sampler_k": count,
        "data.pad": Range(0, integer=True),
        "data.image_size": count,
        "data.mixup_alpha": Range(0),  # 0: no mixup
        "distributed.num_processes": Range(1, integer=True, optional=True),
        "distributed.process_id": Range(0, integer=True, optional=True),
    }


OPTIMIZER_RANGES = {
    "learning_rate": Range(0, low_open=True),
    "momentum": Range(0, 1, high_open=True),
    "weight_decay": Range(0),
    "warmup_epochs": Range(0),  # and < num_epochs: check_optimizer_numbers
}
BOOL_FIELDS = (
    "half_precision",
    "model.pretrained_skip_head",
    "optimizer.nesterov",
    "optimizer.warmup_per_epoch",
    "data.download",
    "data.train_pool",
    "data.list_is_subset",
)
# On the 0-1 scale the pipelines normalise with: (x/255 − mean)/std per RGB channel.
MEAN_STD_RANGES = {"mean": Range(0, 1), "std": Range(0, 1, low_open=True)}


def _field(config: Any, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def check_numbers(config: Any) -> None:
    """Every number and flag of the training config outside config.loss, alone and against the
    others (the warm-up and lr drops against num_epochs, mean/std per channel, process_id)."""
    for field, valid in numeric_ranges().items():
        check_number(f"config.{field}", _field(config, field), valid)
    for field in BOOL_FIELDS:
        value = _field(config, field)
        if not isinstance(value, bool):
            raise ConfigError(f"config.{field}={value!r} is not a boolean: set True or False")
    check_optimizer_numbers(config.optimizer, config.num_epochs)
    for key, valid in MEAN_STD_RANGES.items():
        values = config.data[key]
        example = tuple(get_default_config().data[key])
        if not isinstance(values, tuple | list) or len(values) != 3:
            raise ConfigError(
                f"config.data.{key}={values!r} must be 3 per-channel (RGB) values, e.g. {example}"
            )
        for value in values:
            why = " (per channel, on the 0-1 scale: divide 0-255 values by 255)"
            problem = valid.problem(value)
            if problem:
                raise ConfigError(
                    f"config.data.{key}={tuple(values)!r} holds {value!r}, which {problem}: each "
                    f"must be {valid}{why}"
                )
    d = config.distributed
    if d.num_processes is not None and d.process_id is not None:
        check_number(
            "config.distributed.process_id",
            d.process_id,
            Range(0, d.num_processes, high_open=True, integer=True),
            " (below config.distributed.num_processes)",
        )


def check_optimizer_numbers(opt: Any, num_epochs: int, where: str = "config.optimizer") -> None:
    """The optimizer's numbers, alone and against the run's `num_epochs`: the warm-up ends before
    training does (in whole epochs if per epoch); the step schedule's lr drops are increasing
    epochs after the warm-up and up to num_epochs, with one multiplier > 0 each."""
    for key, valid in OPTIMIZER_RANGES.items():
        check_number(f"{where}.{key}", opt[key], valid)
    warmup = opt.warmup_epochs
    if warmup > 0:
        check_number(
            f"{where}.warmup_epochs",
            warmup,
            Range(0, num_epochs, high_open=True),
            f" (below num_epochs={num_epochs}: the warm-up must end before training does)",
        )
    if opt.get("warmup_per_epoch", False) and warmup != int(warmup):
        raise ConfigError(
            f"{where}.warmup_epochs={warmup!r} is not a whole number, which "
            f"{where}.warmup_per_epoch=True needs (lr·(e + 1)/warmup_epochs in epoch e, one stair "
            f"an epoch): use {math.floor(warmup)} or {math.ceil(warmup)}, or set "
            f"{where}.warmup_per_epoch=False for the per-step ramp"
        )
    if opt.schedule != "step":
        return  # the lr drops are the step schedule's
    epochs, mults = opt.decay_epochs, opt.decay_multipliers
    for key, values in (("decay_epochs", epochs), ("decay_multipliers", mults)):
        if not isinstance(values, tuple | list):
            raise ConfigError(
                f"{where}.{key}={values!r} must be a tuple, e.g. "
                f"--{where}.{key}='(160,180)' or '()' for none"
            )
    if len(epochs) != len(mults):
        raise ConfigError(
            f"{where}.decay_epochs={tuple(epochs)!r} and {where}.decay_multipliers="
            f"{tuple(mults)!r} must have the same length (one multiplier of the base lr per drop)"
        )
    drop = Range(0, num_epochs, low_open=True)
    for key, values, valid, why in (
        ("decay_epochs", epochs, drop, f" (up to num_epochs={num_epochs})"),
        ("decay_multipliers", mults, Range(0, low_open=True), " (of the base lr)"),
    ):
        for value in values:
            problem = valid.problem(value)
            if problem:
                raise ConfigError(
                    f"{where}.{key}={tuple(values)!r} holds {value!r}, which {problem}: each must "
                    f"be {valid}{why}"
                )
    if any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise ConfigError(f"{where}.decay_epochs={tuple(epochs)!r} must be strictly increasing")
    if epochs and epochs[0] < warmup:
        raise ConfigError(
            f"{where}.decay_epochs={tuple(epochs)!r} starts inside the {warmup:g}-epoch warm-up "
            f"({where}.warmup_epochs): drop the lr after the warm-up ends, or shorten it"
        )


def check_data_paths(data: Any) -> None:
    """The data root a source reads must be given and exist (before any work directory); a root
    given to a source that reads none is a mistake to name, not a setting to ignore."""
    root = data.get("root", None)
    reads_root = data.source in ("image_folder", "split_list")
    if root and not reads_root:
        raise ConfigError(
            f"config.data.root={root!r} is set but data.source={data.source!r} reads no "
            "data root: drop --config.data.root, or start from a config of a dataset on disk "
            "(e.g. --config=configs/cifar10_lt.py)"
        )
    if not reads_root:
        return
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
