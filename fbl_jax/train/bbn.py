"""BBN's cumulative learning (Zhou et al., CVPR 2020): the mixing weight α and the mixed loss.

The model is :mod:`fbl_jax.models.bbn`; the re-balancing stream is the on-device pipeline's second
sampler (``data.second_sampler="reversed"``, batch keys ``image_rb``/``label_rb``); the train step
(:func:`fbl_jax.train.steps.make_train_step`, argument ``bbn_alpha``) feeds both streams and α to
the model and combines the losses with :func:`mixed_loss`.

α follows the authors' code (megvii-research/BBN, ``lib/core/combiner.py``, ``bbn_mix``):
``l = 1 - ((epoch - 1) / div_epoch) ** 2`` with BBN's 1-based epoch, fixed for the whole epoch
(``Combiner.reset_epoch`` once per epoch), and ``div_epoch`` = the number of epochs T, except
T in {90, 180}, where it is ``100 * (T // 100 + 1)``. With this project's 0-based epoch
e = floor(step / steps_per_epoch) that is α = 1 - (e / div_epoch)²: 1 in the first epoch,
1 - (199/200)² ≈ 0.00998 in the last of 200. The loss is
α·L(z, y_c) + (1 − α)·L(z, y_r) (BBN: ``l * criterion(output, label_a) + (1 - l) *
criterion(output, label_b)``), with L the configured loss (cross-entropy in BBN's configs), and
the train accuracy is weighted the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

MODEL_PREFIX = "bbn_"
SECOND_SAMPLER = "reversed"  # BBN's DUAL_SAMPLER.TYPE in its CIFAR configs


def is_bbn_model(name: str) -> bool:
    return str(name).startswith(MODEL_PREFIX)


def alpha_divisor(num_epochs: int) -> float:
    """BBN's ``div_epoch``: T, except 100·(T // 100 + 1) for T in {90, 180}."""
    t = int(num_epochs)
    if t < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs!r}")
    return float(100 * (t // 100 + 1)) if t in (90, 180) else float(t)


def cumulative_alpha(epoch: jax.Array | float, num_epochs: int) -> jax.Array:
    """α = 1 − (floor(epoch) / div_epoch)², epoch 0-based (``step / steps_per_epoch``, traceable)."""
    e = jnp.floor(jnp.asarray(epoch, jnp.float32))
    return 1.0 - (e / alpha_divisor(num_epochs)) ** 2


def make_alpha_fn(num_epochs: int) -> Callable[[jax.Array], jax.Array]:
    """``epoch -> α`` for the train step (T checked now, not at trace time)."""
    alpha_divisor(num_epochs)
    return functools.partial(cumulative_alpha, num_epochs=int(num_epochs))


def alpha_fn_for(config: Any) -> Callable[[jax.Array], jax.Array] | None:
    """The train step's ``bbn_alpha`` for a run config: None unless the model is a BBN model."""
    if not is_bbn_model(config.model.name):
        return None
    return make_alpha_fn(config.num_epochs)


def mixed_loss(
    loss_fn: Callable,
    logits: jax.Array,
    features: jax.Array,
    labels_c: jax.Array,
    labels_r: jax.Array,
    epoch: jax.Array,
    alpha: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """α·L(z, y_c) + (1 − α)·L(z, y_r); ``aux`` of L on y_c with ``alpha`` set to α."""
    loss_c, aux = loss_fn(logits, features, labels_c, epoch)
    loss_r, _ = loss_fn(logits, features, labels_r, epoch)
    a = jnp.asarray(alpha, loss_c.dtype)
    return a * loss_c + (1.0 - a) * loss_r, {**aux, "alpha": jnp.asarray(alpha, jnp.float32)}


def mixed_accuracy(
    logits: jax.Array, labels_c: jax.Array, labels_r: jax.Array, alpha: jax.Array
) -> jax.Array:
    """BBN's train accuracy: α·acc(y_c) + (1 − α)·acc(y_r)."""
    pred = jnp.argmax(logits, -1)
    acc_c = jnp.mean((pred == labels_c).astype(jnp.float32))
    acc_r = jnp.mean((pred == labels_r).astype(jnp.float32))
    return alpha * acc_c + (1.0 - alpha) * acc_r


def check_config(config: Any) -> str | None:
    """The problem with a run config's BBN settings, or None.

    A BBN model needs the re-balancing stream (``data.second_sampler``) and the on-device
    pipeline; a second stream without a BBN model would be drawn and never used.
    """
    second = config.data.get("second_sampler", "") or ""
    if is_bbn_model(config.model.name):
        if not second:
            return (
                f"config.model.name={config.model.name!r} (BBN) needs the re-balancing stream: "
                f"set config.data.second_sampler={SECOND_SAMPLER!r}"
            )
        if config.data.pipeline != "device":
            return (
                f"config.model.name={config.model.name!r} (BBN) needs "
                "config.data.pipeline='device' (two input streams)"
            )
        if config.data.get("mixup_alpha", 0.0):
            return "BBN (config.model.name='bbn_*') does not combine with config.data.mixup_alpha"
    elif second:
        return (
            f"config.data.second_sampler={second!r} feeds BBN's re-balancing branch: use a BBN "
            "model (config.model.name='bbn_resnet32') or leave it empty"
        )
    return None
