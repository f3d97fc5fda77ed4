"""Logit adjustment (Menon et al. 2021): CE on z + τ · log π; balanced softmax (Ren et al. 2020)
is its τ = 1 case, kept as a kind of its own because the papers compare them by these names."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from fbl_jax.losses.functional import balanced_softmax_loss, check_tau, logit_adjusted_loss
from fbl_jax.losses.registry import Field, Formula, LossKind, Settings, fmt_decimal, register

LA_TAU = Field(
    "la_tau",
    1.0,
    "τ of the log-prior offset τ · log π",
    check=check_tau,
    show=lambda v: f"τ={fmt_decimal(v)}",
)


def _build_la(settings: Settings, counts: np.ndarray, num_epochs: float) -> Formula:
    tau = settings["la_tau"]

    def formula(logits: jax.Array, features: jax.Array, labels: jax.Array, epoch: jax.Array):
        return logit_adjusted_loss(logits, labels, counts, tau, None), {}

    return formula


def _build_balanced_softmax(settings: Settings, counts: np.ndarray, num_epochs: float) -> Formula:
    def formula(logits: jax.Array, features: jax.Array, labels: jax.Array, epoch: jax.Array):
        return balanced_softmax_loss(logits, labels, counts, None), {}

    return formula


def _la_coefficients(settings: Settings, counts: np.ndarray) -> dict[str, Any]:
    return {"logit_offset": (settings["la_tau"] * np.log(counts / counts.sum())).astype(np.float32)}


def _balanced_softmax_coefficients(settings: Settings, counts: np.ndarray) -> dict[str, Any]:
    return {"logit_offset": np.log(counts / counts.sum()).astype(np.float32)}


LA = register(
    LossKind(
        name="la",
        label="LA",
        fields=(LA_TAU,),
        build=_build_la,
        coefficients=_la_coefficients,
        label_always=("la_tau",),
        order=40,
    )
)
BALANCED_SOFTMAX = register(
    LossKind(
        name="balanced_softmax",
        label="Balanced softmax",
        fields=(),
        build=_build_balanced_softmax,
        coefficients=_balanced_softmax_coefficients,
        order=50,
    )
)
