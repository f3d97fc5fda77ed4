"""LDAM (Cao et al. 2019): a margin ∝ n_j^(−1/4) on the target cosine logit, scaled by s; and
LDAM-DRW, the same with deferred re-weighting (class-balanced weights from a late epoch)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from fbl_jax.losses.fields import DRW_FIELDS, drw_coefficients, drw_weights_at
from fbl_jax.losses.functional import check_positive, ldam_loss, ldam_margins
from fbl_jax.losses.registry import Field, Formula, LossKind, Settings, fmt_short, register

LDAM_MAX_M = Field(
    "ldam_max_m",
    0.5,
    "the rarest class's margin (cosine units)",
    check=functools.partial(check_positive, "ldam max_m"),
    show=lambda v: f"m={fmt_short(v)}",
)
LDAM_S = Field(
    "ldam_s",
    30.0,
    "scale from cosines to logits",
    check=functools.partial(check_positive, "ldam s"),
    show=lambda v: f"s={fmt_short(v)}",
)


def _no_weights(epoch: jax.Array) -> None:
    return None


def _build(settings: Settings, counts: np.ndarray, num_epochs: float, drw: bool) -> Formula:
    weights_at = drw_weights_at(settings, counts) if drw else _no_weights
    max_m, s = settings["ldam_max_m"], settings["ldam_s"]

    def formula(logits: jax.Array, features: jax.Array, labels: jax.Array, epoch: jax.Array):
        w = weights_at(epoch)
        return ldam_loss(logits, labels, counts, max_m, s, w), {}

    return formula


def _coefficients(settings: Settings, counts: np.ndarray, drw: bool) -> dict[str, Any]:
    margins = ldam_margins(counts, settings["ldam_max_m"])
    out = {"margins": np.asarray(margins, np.float32), "scale": np.float32(settings["ldam_s"])}
    if drw:
        out.update(drw_coefficients(settings, counts))
    return out


LDAM = register(
    LossKind(
        name="ldam",
        label="LDAM",
        fields=(LDAM_MAX_M, LDAM_S),
        build=functools.partial(_build, drw=False),
        coefficients=functools.partial(_coefficients, drw=False),
        cosine_head=True,
        order=30,
    )
)
LDAM_DRW = register(
    LossKind(
        name="ldam_drw",
        label="LDAM-DRW",
        fields=(LDAM_MAX_M, LDAM_S, *DRW_FIELDS),
        build=functools.partial(_build, drw=True),
        coefficients=functools.partial(_coefficients, drw=True),
        cosine_head=True,
        order=31,
    )
)
