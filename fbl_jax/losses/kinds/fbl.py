"""The Feature-Balanced Loss (Li, Cheung & Jiang, ICME 2022), in the paper's form and the
authors' code form, and FBL-DRW (FBL with deferred re-weighting).

Training logits z_j − α(t) · λ_j / ‖f‖: λ_j = log n_max − log n_j (paper), or λ / max λ · A
(authors' code); α(t) is a curriculum over the run's epochs (losses/curriculum.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fbl_jax.losses import curriculum
from fbl_jax.losses.fields import DRW_FIELDS, drw_coefficients, drw_weights_at
from fbl_jax.losses.functional import check_scale, fbl_lambda, feature_balanced_loss
from fbl_jax.losses.registry import (
    Field,
    Formula,
    LossKind,
    Settings,
    differs,
    fmt_short,
    register,
)

FBL_FORMS: tuple[str, ...] = ("paper", "authors_code")

FBL_FORM = Field(
    "fbl_form",
    "paper",
    '"paper": λ = log n_max − log n_j; "authors_code": λ / max λ · A',
    choices=FBL_FORMS,
)
FBL_SCALE = Field(
    "fbl_scale", 1.0, "A of the authors' code (60 CIFAR, 150 large datasets)", check=check_scale
)
CURRICULUM = Field("curriculum", "parabolic", "the α(t) schedule", choices=curriculum.SCHEDULES)
CURRICULUM_OFFSET = Field(
    "curriculum_offset", 10.0, "authors_code curriculum: α = (t / (T − offset))²"
)
ALPHA_PER_EPOCH = Field(
    "alpha_per_epoch", False, "True: α from floor(epoch), as the authors' code updates it"
)
FBL_FIELDS = (FBL_FORM, FBL_SCALE, CURRICULUM, CURRICULUM_OFFSET, ALPHA_PER_EPOCH)

# How labels name the forms, and each form's usual A and curriculum (configs/cifar10_lt.py for
# the authors' form): a label names A or the curriculum only where they differ from these.
FORM_LABELS = {"paper": "paper form", "authors_code": "authors' form"}
FORM_USUAL = {
    "paper": {"fbl_scale": 1.0, "curriculum": "parabolic"},
    "authors_code": {"fbl_scale": 60.0, "curriculum": "authors_code"},
}
CURRICULUM_LABELS = {"authors_code": "authors'"}


def _no_weights(epoch: jax.Array) -> None:
    return None


def _build(settings: Settings, counts: np.ndarray, num_epochs: float, drw: bool) -> Formula:
    weights_at = drw_weights_at(settings, counts) if drw else _no_weights
    normalize = settings["fbl_form"] == "authors_code"
    lam = fbl_lambda(counts, normalize=normalize, scale=settings["fbl_scale"])
    schedule, offset = settings["curriculum"], settings["curriculum_offset"]
    curriculum.validate_schedule(schedule, num_epochs, offset)
    per_epoch = settings["alpha_per_epoch"]

    def formula(logits: jax.Array, features: jax.Array, labels: jax.Array, epoch: jax.Array):
        t = jnp.asarray(epoch, jnp.float32)
        if per_epoch:
            t = jnp.floor(t)
        a = curriculum.alpha(schedule, t, num_epochs, offset)
        loss = feature_balanced_loss(logits, features, labels, lam, a, weights_at(epoch))
        return loss, {"alpha": a}

    return formula


def _coefficients(settings: Settings, counts: np.ndarray, drw: bool) -> dict[str, Any]:
    normalize = settings["fbl_form"] == "authors_code"
    lam = fbl_lambda(counts, normalize=normalize, scale=settings["fbl_scale"])
    out = {
        "lam": np.asarray(lam, np.float32),
        "uses_alpha": np.float32(1.0),
        "curriculum": np.int32(curriculum.SCHEDULES.index(settings["curriculum"])),
        "curriculum_offset": np.float32(settings["curriculum_offset"]),
        "alpha_per_epoch": np.bool_(settings["alpha_per_epoch"]),
    }
    if drw:
        out.update(drw_coefficients(settings, counts))
    return out


def _label_parts(values: Mapping[str, Any]) -> list[str]:
    """'authors' form, A=150, α(t) parabolic …': the form, then what differs from its usual."""
    form = values["fbl_form"]
    usual = FORM_USUAL.get(form, {"fbl_scale": FBL_SCALE.default, "curriculum": CURRICULUM.default})
    parts = [FORM_LABELS.get(form, f"form {form}")]
    if differs(values["fbl_scale"], usual["fbl_scale"]):
        parts.append(f"A={fmt_short(values['fbl_scale'])}")
    schedule = values["curriculum"]
    if schedule != usual["curriculum"]:
        parts.append(f"α(t) {CURRICULUM_LABELS.get(schedule, schedule)}")
    if schedule == "authors_code" and differs(
        values["curriculum_offset"], CURRICULUM_OFFSET.default
    ):
        parts.append(f"α(t) offset {fmt_short(values['curriculum_offset'])}")
    if values["alpha_per_epoch"]:
        parts.append("α per epoch")
    return parts


FBL = register(
    LossKind(
        name="fbl",
        label="FBL",
        fields=FBL_FIELDS,
        build=functools.partial(_build, drw=False),
        coefficients=functools.partial(_coefficients, drw=False),
        label_parts=_label_parts,
        order=60,
    )
)
FBL_DRW = register(
    LossKind(
        name="fbl_drw",
        label="FBL-DRW",
        fields=FBL_FIELDS + DRW_FIELDS,
        build=functools.partial(_build, drw=True),
        coefficients=functools.partial(_coefficients, drw=True),
        label_parts=_label_parts,
        order=61,
    )
)
