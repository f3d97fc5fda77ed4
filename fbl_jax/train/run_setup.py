"""What every run needs before its first step: checks, data, model, initial state, identity.

fbl-train (a program of one run) and fbl-sweep (programs of many) both set up through here, so a
run initialises the same way whichever entry point starts it.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fbl_jax import defaults, losses
from fbl_jax.data import build_datasets
from fbl_jax.models import get_model
from fbl_jax.models.layers import resolve_bn_impl, resolve_conv_impl
from fbl_jax.models.pretrained import load_state_dict_file, load_torch_weights
from fbl_jax.train import optimizer, steps

log = logging.getLogger("fbl_jax")
_CONV_SAID: set[tuple[str, str]] = set()  # the convolutions chosen (and why) logged so far


def check_devices(global_batch: int, what: str = "config.batch_size") -> None:
    n = jax.device_count()
    if global_batch % n:
        raise defaults.ConfigError(
            f"{what}={global_batch} does not divide over {n} devices "
            f"({jax.process_count()} process(es) × {jax.local_device_count()} local devices); "
            f"use a multiple of {n}, e.g. {max(n, global_batch // n * n)}"
        )


def check_run_config(config: Any) -> None:
    """Everything about one run's config that can be checked before any data is read."""
    defaults.validate_config(config)
    defaults.check_data_paths(config.data)
    check_devices(config.batch_size)
    check_devices(config.eval_batch_size, "config.eval_batch_size")
    try:
        resolve_conv_impl(config.model.get("conv", "auto"), _compute_dtype(config))
    except ValueError as e:
        raise defaults.ConfigError(str(e)) from None
    if losses.loss_needs_cosine_head(config.loss.name) and config.model.head != "cosine":
        raise defaults.ConfigError(
            f"loss {config.loss.name!r} is defined on cosine logits: set config.model.head='cosine'"
        )


def _compute_dtype(config: Any) -> Any:
    return jnp.bfloat16 if config.half_precision else jnp.float32


def build_model(config: Any, num_classes: int):
    dtype = _compute_dtype(config)
    # runs saved before the option existed have no model.conv
    conv_impl, why = resolve_conv_impl(config.model.get("conv", "auto"), dtype)
    if (conv_impl, why) not in _CONV_SAID:  # once a process, not once a run or program
        _CONV_SAID.add((conv_impl, why))
        log.info("convolutions: %s (%s)", {"xla": "XLA's", "onednn": "oneDNN's"}[conv_impl], why)
    return get_model(
        config.model.name,
        num_classes,
        head=config.model.head,
        dtype=dtype,
        bn_axis_name=steps.AXIS,
        # runs saved before the option existed have no model.batch_norm
        bn_impl=resolve_bn_impl(config.model.get("batch_norm", "auto")),
        conv_impl=conv_impl,
    )


def load_data(config: Any) -> Any:
    """The config's DataBundle (its seed orders the data; each run of a sweep has its own)."""
    return build_datasets(
        config.data,
        global_batch_size=config.batch_size,
        seed=config.seed,
        eval_batch_size=config.eval_batch_size,
        num_epochs=config.num_epochs,
    )


def init_train_state(
    config: Any, model: Any, image_shape: tuple, lr_schedule: Any
) -> tuple[steps.TrainState, Any]:
    """(TrainState at step 0, optimizer) for `config.seed`, pretrained weights loaded."""
    # rbg keys: the same initialisation for a seed on a given backend, and XLA compiles the
    # init in a fifth of threefry's time on CPU. The parameters live in checkpoints afterwards.
    rng = jax.random.key(config.seed, impl="rbg")
    variables = steps.init_variables(rng, model, image_shape)
    if config.model.pretrained:
        state_dict = load_state_dict_file(config.model.pretrained)
        variables = load_torch_weights(
            variables, state_dict, skip_head=config.model.pretrained_skip_head
        )
        log.info("loaded pretrained weights from %s", config.model.pretrained)
    tx = optimizer.make_optimizer(
        config.optimizer, lr_schedule, variables["params"], config.model.freeze
    )
    return steps.create_train_state(rng, model, image_shape, tx, variables), tx


def run_identity(config: Any, bundle: Any) -> dict[str, Any]:
    """What a checkpoint must share with the run that restores it (checkpoints.IDENTITY_KEYS)."""
    return {
        "model": config.model.name,
        "head": config.model.head,
        "num_classes": bundle.num_classes,
        "class_counts": np.asarray(bundle.class_counts).tolist(),
        "image_shape": list(bundle.image_shape),
    }


def read_records(run_dir: pathlib.Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records (of type `kind`, or all) of a run's metrics.jsonl, in order; a line cut
    short by a kill is skipped."""
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and (kind is None or record.get("type") == kind):
            records.append(record)
    return records


def read_record(run_dir: pathlib.Path, kind: str) -> dict[str, Any] | None:
    """The last record of type `kind` ("final", "failed") in a run's metrics.jsonl, or None."""
    found = read_records(run_dir, kind)
    return found[-1] if found else None


def read_final_record(run_dir: pathlib.Path) -> dict[str, Any] | None:
    """The `final` record of a finished run, or None."""
    return read_record(run_dir, "final")


def write_run_files(run_dir: pathlib.Path, config: Any, bundle: Any) -> None:
    """config.json, class_counts.json and data.json (which data, fingerprinted): what
    fbl-report and fbl-decouple read of a run."""
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=list))
    counts = np.asarray(bundle.class_counts).tolist()
    names = list(bundle.class_names)
    (run_dir / "class_counts.json").write_text(json.dumps({"counts": counts, "class_names": names}))
    if bundle.provenance:
        (run_dir / "data.json").write_text(json.dumps(bundle.provenance, indent=1) + "\n")


def log_data(bundle: Any, total_steps: int) -> None:
    counts = np.asarray(bundle.class_counts)
    log.info(
        "data: %d training images in %d classes (largest %d, smallest %d), %d steps/epoch, "
        "%d steps; eval splits %s",
        bundle.num_train,
        bundle.num_classes,
        counts.max(),
        counts.min(),
        bundle.steps_per_epoch,
        total_steps,
        dict(bundle.eval_sizes),
    )
