"""Config fields that several loss kinds use, declared once, and the DRW weights they configure.

A field used by one kind only is declared in that kind's module; one used by kinds in different
modules lives here, so it has a single default (the registry refuses two declarations of one
field that differ).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from fbl_jax.losses.functional import (
    check_beta,
    check_start_epoch,
    class_balanced_weights,
    drw_weights,
)
from fbl_jax.losses.registry import Field, Settings, fmt_short

CB_BETA = Field(
    "cb_beta",
    0.9999,
    "β of the class-balanced weights (1 − β) / (1 − β^n_j) (Cui et al. 2019), in [0, 1)",
    check=check_beta,
    show=lambda v: f"β={fmt_short(v)}",
)
DRW_START_EPOCH = Field(
    "drw_start_epoch",
    160,
    "deferred re-weighting: the epoch from which the class-balanced weights apply",
    check=check_start_epoch,
    show=lambda v: f"DRW from epoch {fmt_short(v)}",
)
DRW_FIELDS = (DRW_START_EPOCH, CB_BETA)


def drw_weights_at(settings: Settings, counts: np.ndarray) -> Callable[[jax.Array], jax.Array]:
    """epoch -> class weights: ones before the start epoch, CB weights from it (traced)."""
    start, beta = settings["drw_start_epoch"], settings["cb_beta"]

    def weights_at(epoch: jax.Array) -> jax.Array:
        return drw_weights(counts, epoch, start, beta)

    return weights_at


def drw_coefficients(settings: Settings, counts: np.ndarray) -> dict[str, Any]:
    """The program formula's DRW: weights switch from ones to CB at the start epoch."""
    cb = np.asarray(class_balanced_weights(counts, settings["cb_beta"]), np.float32)
    return {"weights_after": cb, "weights_start": np.float32(settings["drw_start_epoch"])}
