"""One loss formula whose per-run arrays express every sharing loss kind, for a program's run axis.

    z' = s · (z − m_y · onehot(y)) − α(t) · λ / ‖f‖ + b
    ℓ  = −(1 − p_y)^γ · log p_y  on softmax(z'),   loss = Σ w_y ℓ / Σ w_y

With `CE_COEFFICIENTS` (s = 1, m = 0, λ = 0, b = 0, γ = 0, w = 1) it is cross-entropy; each kind's
`coefficients` (losses/kinds/) replace some of them: FBL λ and α(t) by schedule index, LA and
balanced softmax b, LDAM m and s, focal γ, CB and DRW the weights. Each kind then reduces to its
single-run formula exactly (1·x, x − 0, x + 0 and x⁰ = 1 are exact), which tests/test_loss_kinds.py
checks against `make_loss` for values and gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fbl_jax.losses import curriculum
from fbl_jax.losses.functional import feature_balanced_logits


def ce_coefficients(num_classes: int) -> dict[str, np.ndarray]:
    """The coefficients of plain cross-entropy; also the keys, dtypes and shapes of every run's."""
    zeros, ones = np.zeros(num_classes, np.float32), np.ones(num_classes, np.float32)
    return {
        "lam": zeros,
        "uses_alpha": np.float32(0.0),
        "curriculum": np.int32(0),
        "curriculum_offset": np.float32(0.0),
        "alpha_per_epoch": np.bool_(False),
        "logit_offset": zeros,
        "margins": zeros,
        "scale": np.float32(1.0),
        "gamma": np.float32(0.0),
        "weights_before": ones,
        "weights_after": ones,
        "weights_start": np.float32(0.0),
    }


def with_kind(name: str, own: Mapping[str, Any], num_classes: int) -> dict[str, np.ndarray]:
    """CE's coefficients with a kind's own ones in place, each cast to the shared dtype/shape."""
    out = ce_coefficients(num_classes)
    unknown = sorted(set(own) - set(out))
    if unknown:
        raise ValueError(
            f"loss kind {name!r} gives coefficients {unknown} the program formula does not have; "
            f"it has {sorted(out)}"
        )
    for key, value in own.items():
        value = np.asarray(value, out[key].dtype)
        if value.shape != np.shape(out[key]):
            raise ValueError(
                f"loss kind {name!r}: coefficient {key!r} has shape {value.shape}, "
                f"the program formula needs {np.shape(out[key])}"
            )
        out[key] = value
    return out


def stack_coefficients(per_run: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The runs' coefficients stacked on a leading run axis (every run must have the same keys)."""
    keys = set(per_run[0])
    for i, run in enumerate(per_run):
        if set(run) != keys:
            raise ValueError(
                f"run {i}'s coefficients have keys {sorted(run)}, run 0's {sorted(keys)}"
            )
    return {k: np.stack([np.asarray(run[k]) for run in per_run]) for k in per_run[0]}


def program_loss(
    logits: jax.Array,
    features: jax.Array,
    labels: jax.Array,
    epoch: jax.Array,
    coeffs: Mapping[str, jax.Array],
    num_epochs: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The loss of one run (vmapped over the run axis of `coeffs`); same contract as make_loss.

    Keys of `coeffs` that the formula does not use (a run's "seed") are ignored.
    """
    h = coeffs
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    t = jnp.asarray(epoch, jnp.float32)
    t = jnp.where(h["alpha_per_epoch"], jnp.floor(t), t)
    a = curriculum.alpha_by_index(h["curriculum"], t, num_epochs, h["curriculum_offset"])
    a = a * h["uses_alpha"]
    z = jnp.asarray(logits, dtype)
    onehot = jax.nn.one_hot(labels, z.shape[-1], dtype=dtype)
    z = h["scale"] * (z - onehot * h["margins"][labels][:, None])
    z = feature_balanced_logits(z, features, h["lam"], a) + h["logit_offset"]
    logp = jax.nn.log_softmax(z, axis=-1)
    logp_t = jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    # (1 − p)^γ as focal_loss computes it; γ = 0 gives 1 and a zero (finite) gradient
    base = jnp.maximum(-jnp.expm1(logp_t), jnp.finfo(dtype).tiny)
    per_example = -(base ** h["gamma"]) * logp_t
    drw_on = jnp.asarray(epoch, jnp.float32) >= h["weights_start"]  # as functional.drw_weights
    w_all = jnp.where(drw_on, h["weights_after"], h["weights_before"])
    w = w_all[labels]
    loss = jnp.sum(w * per_example) / jnp.sum(w)
    return loss, {"alpha": a}
