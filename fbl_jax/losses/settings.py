"""Loss names, FBL forms and the defaults `losses.make_loss` uses for a missing field.

Plain Python (no JAX), so fbl-report's labels read the same defaults as training does.
"""

from __future__ import annotations

from typing import Any

LOSS_NAMES: tuple[str, ...] = (
    "ce",
    "focal",
    "cb",
    "ldam",
    "ldam_drw",
    "la",
    "balanced_softmax",
    "fbl",
    "fbl_drw",
)
FBL_FORMS: tuple[str, ...] = ("paper", "authors_code")

LOSS_DEFAULTS: dict[str, Any] = {
    "fbl_form": "paper",
    "fbl_scale": 1.0,
    "curriculum": "parabolic",
    "curriculum_offset": 10.0,
    "alpha_per_epoch": False,
    "focal_gamma": 1.0,
    "cb_beta": 0.9999,
    "ldam_max_m": 0.5,
    "ldam_s": 30.0,
    "drw_start_epoch": 160.0,
    "la_tau": 1.0,
}
