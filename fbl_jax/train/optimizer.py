"""Learning-rate schedules and the optimiser, from epochs in the config to steps, once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

SCHEDULES = ("step", "cosine", "constant")


def make_lr_schedule(opt_config: Any, steps_per_epoch: int, num_epochs: int) -> optax.Schedule:
    """Linear warm-up, then step decay (multipliers of the base lr) or cosine decay.

    `decay_epochs=(160, 180)` with `decay_multipliers=(0.01, 0.0001)` reproduces the LDAM/FBL CIFAR
    schedule (lr·0.01 from epoch 160, lr·0.0001 from epoch 180); `(0.1, 0.01)` at `(120, 160)` the
    large-dataset one. Multipliers are relative to the base lr, not to the previous stage.

    Warm-up over W = `warmup_epochs`: per step, lr·(1 + step)/(W·steps_per_epoch); with
    `warmup_per_epoch`, the staircase of LDAM-DRW's `adjust_learning_rate` (which the FBL authors'
    code copies): lr·(e + 1)/W for every step of epoch e < W. A staircase has one stair per epoch,
    so W must then be a whole number (a fractional W would end the warm-up inside an epoch whose
    stair (e + 1)/W is already above 1).
    """
    base = float(opt_config.learning_rate)
    if base <= 0:
        raise ValueError(f"optimizer.learning_rate must be > 0, got {base}")
    warmup_epochs = float(opt_config.warmup_epochs)
    per_epoch = bool(opt_config.get("warmup_per_epoch", False))
    if per_epoch and warmup_epochs != int(warmup_epochs):
        raise ValueError(
            f"optimizer.warmup_per_epoch needs a whole number of optimizer.warmup_epochs, got "
            f"{opt_config.warmup_epochs}"
        )
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    total_steps = num_epochs * steps_per_epoch
    name = opt_config.schedule
    if name not in SCHEDULES:
        raise ValueError(f"unknown optimizer.schedule {name!r}; choose one of {SCHEDULES}")
    if name == "step":
        epochs = list(opt_config.decay_epochs)
        mults = list(opt_config.decay_multipliers)
        if len(epochs) != len(mults):
            raise ValueError(
                "optimizer.decay_epochs and optimizer.decay_multipliers must have the same length, "
                f"got {epochs} and {mults}"
            )
        if epochs and epochs[0] * steps_per_epoch < warmup_steps:
            raise ValueError(
                f"optimizer.decay_epochs {epochs} start inside the warm-up "
                f"({opt_config.warmup_epochs} epochs); decay after the warm-up ends"
            )
        if epochs != sorted(epochs):
            raise ValueError(f"optimizer.decay_epochs must be increasing, got {epochs}")
        boundaries: dict[int, float] = {}
        previous = 1.0
        for epoch, mult in zip(epochs, mults):
            if mult <= 0:
                raise ValueError(f"optimizer.decay_multipliers must be > 0, got {mults}")
            # join_schedules hands `after` the steps counted from the end of the warm-up.
            offset = warmup_steps if warmup_steps > 1 else 0
            boundaries[int(round(epoch * steps_per_epoch)) - offset] = mult / previous
            previous = mult
        after = optax.piecewise_constant_schedule(base, boundaries)
    elif name == "cosine":
        after = optax.cosine_decay_schedule(base, max(total_steps - max(warmup_steps, 0), 1))
    else:
        after = optax.constant_schedule(base)
    if warmup_steps <= 1:
        return after
    if per_epoch:

        def warmup(step: Any) -> Any:
            # traceable: the epoch of a (traced) step count, then its stair
            epoch = jnp.asarray(step) // steps_per_epoch
            return base * (epoch + 1) / warmup_epochs

    else:
        # per step: lr·(1 + step)/warmup_steps for the first steps
        warmup = optax.linear_schedule(base / warmup_steps, base, warmup_steps - 1)
    return optax.join_schedules([warmup, after], [warmup_steps])


def trainable_mask(params: Any, frozen_prefixes: Sequence[str]) -> Any:
    """True for parameters that train; False for those under a frozen top-level module."""
    frozen = tuple(frozen_prefixes)
    flat = traverse_util.flatten_dict(params)
    mask = {
        path: not any(path[0] == p or path[0].startswith(p + "_") for p in frozen) for path in flat
    }
    return traverse_util.unflatten_dict(mask)


def make_optimizer(
    opt_config: Any, lr_schedule: optax.Schedule, params: Any, frozen_prefixes: Sequence[str] = ()
) -> optax.GradientTransformation:
    """SGD with momentum and coupled weight decay (added to the gradient, as torch.optim.SGD does).

    Frozen parameters get a zero update (no weight decay either), as `requires_grad=False` does.
    """
    if opt_config.name != "sgd":
        raise ValueError(f"unknown optimizer.name {opt_config.name!r}; choose one of ('sgd',)")
    if not 0 <= opt_config.momentum < 1:
        raise ValueError(f"optimizer.momentum must be in [0, 1), got {opt_config.momentum}")
    if opt_config.weight_decay < 0:
        raise ValueError(f"optimizer.weight_decay must be >= 0, got {opt_config.weight_decay}")
    sgd = optax.chain(
        optax.add_decayed_weights(opt_config.weight_decay),
        optax.sgd(lr_schedule, momentum=opt_config.momentum or None, nesterov=opt_config.nesterov),
    )
    if not frozen_prefixes:
        return sgd
    mask = trainable_mask(params, frozen_prefixes)
    if not any(jax.tree_util.tree_leaves(mask)):
        raise ValueError(f"model.freeze={list(frozen_prefixes)} freezes every parameter")
    labels = jax.tree_util.tree_map(lambda m: "train" if m else "frozen", mask)
    return optax.multi_transform({"train": sgd, "frozen": optax.set_to_zero()}, labels)
