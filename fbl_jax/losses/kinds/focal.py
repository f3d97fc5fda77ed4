"""Focal loss (Lin et al. 2017): −(1 − p_t)^γ log p_t, down-weighting easy examples."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from fbl_jax.losses.functional import check_gamma, focal_loss
from fbl_jax.losses.registry import Field, Formula, LossKind, Settings, fmt_decimal, register

FOCAL_GAMMA = Field(
    "focal_gamma",
    1.0,
    "γ of (1 − p_t)^γ; 0 is cross-entropy",
    check=check_gamma,
    show=lambda v: f"γ={fmt_decimal(v)}",
)


def _build(settings: Settings, counts: np.ndarray, num_epochs: float) -> Formula:
    gamma = settings["focal_gamma"]

    def formula(logits: jax.Array, features: jax.Array, labels: jax.Array, epoch: jax.Array):
        return focal_loss(logits, labels, gamma, None), {}

    return formula


def _coefficients(settings: Settings, counts: np.ndarray) -> dict[str, Any]:
    return {"gamma": np.float32(settings["focal_gamma"])}


FOCAL = register(
    LossKind(
        name="focal",
        label="Focal",
        fields=(FOCAL_GAMMA,),
        build=_build,
        coefficients=_coefficients,
        label_always=("focal_gamma",),
        order=10,
    )
)
