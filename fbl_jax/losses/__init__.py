"""Feature-Balanced Loss (FBL) and the long-tailed baselines it is compared with.

The formulas are pure functions (losses/functional.py, re-exported here). Each loss kind
(`config.loss.name`) is declared once in losses/kinds/: its config fields and defaults, its
single-run formula, its coefficients for the shared program formula and its report label.
`make_loss` builds one run's loss from a config; `program_coefficients`, `stack_coefficients`
and `program_loss` let runs of different kinds share one compiled program on a run axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fbl_jax.errors import ConfigError
from fbl_jax.losses import curriculum, kinds, registry
from fbl_jax.losses.functional import (
    balanced_softmax_loss,
    check_beta,
    check_classes,
    check_gamma,
    check_positive,
    check_scale,
    check_start_epoch,
    check_tau,
    check_weights,
    checked_counts,
    class_balanced_weights,
    cross_entropy_loss,
    drw_weights,
    fbl_lambda,
    feature_balanced_logits,
    feature_balanced_loss,
    focal_loss,
    ldam_loss,
    ldam_margins,
    logit_adjusted_loss,
    posthoc_logit_adjust,
)
from fbl_jax.losses.kinds.fbl import FBL_FORMS
from fbl_jax.losses.program import program_loss, stack_coefficients, with_kind

Array = jax.Array
LossFn = Callable[[Array, Array, Array, Array], tuple[Array, dict[str, Array]]]
"""`loss_fn(logits, features, labels, epoch) -> (loss, aux)`; `aux` always holds "alpha"."""

__all__ = [
    "FBL_FORMS",
    "LOSS_DEFAULTS",
    "LOSS_NAMES",
    "LossFn",
    "balanced_softmax_loss",
    "check_beta",
    "check_classes",
    "check_fields",
    "check_gamma",
    "check_positive",
    "check_scale",
    "check_start_epoch",
    "check_tau",
    "check_weights",
    "checked_counts",
    "class_balanced_weights",
    "cross_entropy_loss",
    "curriculum",
    "drw_weights",
    "fbl_lambda",
    "feature_balanced_logits",
    "feature_balanced_loss",
    "field_choices",
    "focal_loss",
    "kinds",
    "ldam_loss",
    "ldam_margins",
    "logit_adjusted_loss",
    "loss_needs_cosine_head",
    "make_loss",
    "posthoc_logit_adjust",
    "program_coefficients",
    "program_fields",
    "program_loss",
    "registry",
    "stack_coefficients",
]


def __getattr__(name: str) -> Any:
    """LOSS_NAMES and LOSS_DEFAULTS are read from the registry on use, so they always list the
    registered kinds (a kind registered later, e.g. by a test, is included)."""
    if name == "LOSS_NAMES":
        return registry.names()
    if name == "LOSS_DEFAULTS":
        return registry.defaults()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_fields(loss_config: Any) -> None:
    """Every loss field the config sets must be possible, even one its kind does not read."""
    registry.check_fields(loss_config)


def field_choices() -> dict[str, tuple[str, ...]]:
    """{loss config field: its choices} for the fields that name one of a fixed set."""
    return registry.field_choices()


def program_fields() -> tuple[str, ...]:
    """The loss config fields that may differ between the runs of one shared program."""
    return registry.program_fields()


def loss_needs_cosine_head(name: str) -> bool:
    """True for losses defined on cosine logits (LDAM), so the trainer can check the head."""
    return registry.get_kind(name).cosine_head


def _kind_of(loss_config: Any) -> registry.LossKind:
    name = registry.read_field(loss_config, "name")
    if name is None:
        raise ValueError(f"loss config needs a 'name'; valid choices: {registry.names()}")
    return registry.get_kind(name)


def _epochs(num_epochs: float) -> float:
    if not (math.isfinite(float(num_epochs)) and float(num_epochs) > 0):
        raise ValueError(f"num_epochs must be a positive finite number, got {num_epochs!r}")
    return float(num_epochs)


def make_loss(
    loss_config: Any, class_counts: Sequence[float] | np.ndarray, num_epochs: float
) -> LossFn:
    """Build `loss_fn(logits, features, labels, epoch) -> (loss, aux)` from a loss config.

    All configuration is validated here, in Python, so mistakes surface before training. The
    returned function is pure; `epoch` (step / steps_per_epoch, float32) may be traced and only
    drives α(t) and the DRW switch through jnp ops, so changing it never recompiles.
    `aux["alpha"]` is α(t) for FBL losses and 0.0 otherwise. Missing or None fields take the
    kind's defaults.
    """
    kind = _kind_of(loss_config)
    counts = checked_counts(class_counts)
    num_epochs = _epochs(num_epochs)
    formula = kind.build(kind.settings(loss_config), counts, num_epochs)
    zero = jnp.zeros((), jnp.float32)

    def loss_fn(logits, features, labels, epoch):
        check_classes(logits, counts.size)
        loss, aux = formula(logits, features, labels, epoch)
        return loss, {"alpha": zero, **aux}

    return loss_fn


def program_coefficients(
    loss_config: Any, class_counts: Sequence[float] | np.ndarray, num_epochs: float
) -> dict[str, np.ndarray]:
    """One run's arrays for `program_loss`, with which it equals `make_loss`'s loss exactly.

    Validates the config as `make_loss` does; a kind that cannot share a program is a
    ConfigError saying why.
    """
    kind = _kind_of(loss_config)
    if kind.coefficients is None:
        raise ConfigError(
            f"loss {kind.name!r} cannot share a compiled program with other runs: "
            f"{kind.no_program}; train it on its own (fbl-train)"
        )
    make_loss(loss_config, class_counts, num_epochs)  # every check of the single run
    counts = checked_counts(class_counts)
    own = kind.coefficients(kind.settings(loss_config), counts)
    return with_kind(kind.name, own, counts.size)
