"""One loss formula whose per-run arrays express every loss kind, for a sweep's run axis.

    z' = s · (z − m_y · onehot(y)) − α(t) · λ / ‖f‖ + b
    ℓ  = −(1 − p_y)^γ · log p_y  on softmax(z'),   loss = Σ w_y ℓ / Σ w_y

CE: s = 1, m = 0, λ = 0, b = 0, γ = 0, w = 1. FBL: λ (either form, any A) and α(t) from a
schedule index. LA: b = τ · log π; balanced softmax: b = log π. LDAM: margins m and scale s on
cosine logits. Focal: γ. CB: w = CB weights; DRW: w switches from 1 to CB at its epoch. Each
kind reduces to the single-run loss in losses.py exactly (1·x, x − 0, x + 0 and x⁰ = 1 are
exact), which tests/test_sweep.py checks against `losses.make_loss`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fbl_jax import losses
from fbl_jax.losses import curriculum

FBL_LOSSES = ("fbl", "fbl_drw")
DRW_LOSSES = ("ldam_drw", "fbl_drw")


def run_hypers(loss_config: Any, class_counts: np.ndarray, num_epochs: int) -> dict[str, Any]:
    """The per-run arrays of one run's loss config (validated by `losses.make_loss`)."""
    losses.make_loss(loss_config, class_counts, num_epochs)  # every check of the single run
    counts = np.asarray(class_counts, np.float64)
    c = counts.size
    name = loss_config.name
    zeros, ones = np.zeros(c, np.float32), np.ones(c, np.float32)
    h = {
        "lam": zeros,
        "uses_alpha": np.float32(0.0),
        "curriculum": np.int32(curriculum.SCHEDULES.index(loss_config.curriculum)),
        "curriculum_offset": np.float32(loss_config.curriculum_offset),
        "alpha_per_epoch": np.bool_(loss_config.alpha_per_epoch),
        "logit_offset": zeros,
        "margins": zeros,
        "scale": np.float32(1.0),
        "gamma": np.float32(0.0),
        "weights_before": ones,
        "weights_after": ones,
        "weights_start": np.float32(0.0),
    }
    if name in FBL_LOSSES:
        lam = losses.fbl_lambda(
            counts, normalize=loss_config.fbl_form == "authors_code", scale=loss_config.fbl_scale
        )
        h.update(lam=np.asarray(lam, np.float32), uses_alpha=np.float32(1.0))
    if name == "la":
        h["logit_offset"] = (loss_config.la_tau * np.log(counts / counts.sum())).astype(np.float32)
    if name == "balanced_softmax":
        h["logit_offset"] = np.log(counts / counts.sum()).astype(np.float32)
    if name in ("ldam", "ldam_drw"):
        margins = losses.ldam_margins(counts, loss_config.ldam_max_m)
        h.update(margins=np.asarray(margins, np.float32), scale=np.float32(loss_config.ldam_s))
    if name == "focal":
        h["gamma"] = np.float32(loss_config.focal_gamma)
    cb = np.asarray(losses.class_balanced_weights(counts, loss_config.cb_beta), np.float32)
    if name == "cb":
        h.update(weights_before=cb, weights_after=cb)
    if name in DRW_LOSSES:
        h.update(weights_after=cb, weights_start=np.float32(loss_config.drw_start_epoch))
    return h


def stack_hypers(per_run: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(h[k]) for h in per_run]) for k in per_run[0]}


def sweep_loss(
    logits: jax.Array,
    features: jax.Array,
    labels: jax.Array,
    epoch: jax.Array,
    h: dict[str, jax.Array],
    num_epochs: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The loss of one run (vmapped over the run axis of `h`); same contract as make_loss."""
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    t = jnp.asarray(epoch, jnp.float32)
    t = jnp.where(h["alpha_per_epoch"], jnp.floor(t), t)
    a = curriculum.alpha_by_index(h["curriculum"], t, num_epochs, h["curriculum_offset"])
    a = a * h["uses_alpha"]
    z = jnp.asarray(logits, dtype)
    onehot = jax.nn.one_hot(labels, z.shape[-1], dtype=dtype)
    z = h["scale"] * (z - onehot * h["margins"][labels][:, None])
    z = losses.feature_balanced_logits(z, features, h["lam"], a) + h["logit_offset"]
    logp = jax.nn.log_softmax(z, axis=-1)
    logp_t = jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    # (1 − p)^γ as focal_loss computes it; γ = 0 gives 1 and a zero (finite) gradient
    base = jnp.maximum(-jnp.expm1(logp_t), jnp.finfo(dtype).tiny)
    per_example = -(base ** h["gamma"]) * logp_t
    drw_on = jnp.asarray(epoch, jnp.float32) >= h["weights_start"]  # as losses.drw_weights
    w_all = jnp.where(drw_on, h["weights_after"], h["weights_before"])
    w = w_all[labels]
    loss = jnp.sum(w * per_example) / jnp.sum(w)
    return loss, {"alpha": a}
