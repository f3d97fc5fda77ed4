"""Class-balanced cross-entropy (Cui et al. 2019): every class weighted by 1 / effective number."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from fbl_jax.losses.fields import CB_BETA
from fbl_jax.losses.functional import class_balanced_weights, cross_entropy_loss
from fbl_jax.losses.registry import Formula, LossKind, Settings, register


def _build(settings: Settings, counts: np.ndarray, num_epochs: float) -> Formula:
    weights = class_balanced_weights(counts, settings["cb_beta"])  # also validates β

    def formula(logits: jax.Array, features: jax.Array, labels: jax.Array, epoch: jax.Array):
        return cross_entropy_loss(logits, labels, weights), {}

    return formula


def _coefficients(settings: Settings, counts: np.ndarray) -> dict[str, Any]:
    cb = np.asarray(class_balanced_weights(counts, settings["cb_beta"]), np.float32)
    return {"weights_before": cb, "weights_after": cb}


CB = register(
    LossKind(
        name="cb",
        label="CB",
        fields=(CB_BETA,),
        build=_build,
        coefficients=_coefficients,
        label_always=("cb_beta",),
        order=20,
    )
)
