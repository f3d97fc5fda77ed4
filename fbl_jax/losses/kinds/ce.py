"""Cross-entropy: the baseline every long-tailed method is measured against."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from fbl_jax.losses.functional import cross_entropy_loss
from fbl_jax.losses.registry import Formula, LossKind, Settings, register


def _build(settings: Settings, counts: np.ndarray, num_epochs: float) -> Formula:
    def formula(logits: jax.Array, features: jax.Array, labels: jax.Array, epoch: jax.Array):
        return cross_entropy_loss(logits, labels, None), {}

    return formula


def _coefficients(settings: Settings, counts: np.ndarray) -> dict[str, Any]:
    return {}  # the program formula's defaults are cross-entropy


CE = register(
    LossKind(name="ce", label="CE", fields=(), build=_build, coefficients=_coefficients, order=0)
)
