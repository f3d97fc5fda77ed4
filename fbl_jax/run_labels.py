"""Human-readable names of a run's method and dataset, from its config.json.

The results table, summary.json and the figure legends all name runs through these functions,
so one setting is called the same everywhere.
"""

from __future__ import annotations

import pathlib
from typing import Any

# How the method column names fbl-decouple's methods.
DECOUPLE_LABELS = {"tau_norm": "τ-norm", "la_posthoc": "post-hoc LA", "crt": "cRT", "lws": "LWS"}


def method_name(config: dict[str, Any]) -> str:
    """Loss name; for FBL with its λ form and curriculum, e.g. 'fbl (paper, parabolic)'.

    A decoupled run (fbl-decouple) adds its method, e.g. 'fbl (paper, parabolic) + τ-norm (τ=0.8)'.
    """
    loss = config.get("loss", {}) or {}
    name = str(loss.get("name", "?"))
    if name == "fbl":
        extra = [str(loss[k]) for k in ("fbl_form", "curriculum") if loss.get(k) is not None]
        if extra:
            name += f" ({', '.join(extra)})"
    decouple = config.get("decouple") or {}
    if decouple.get("method"):
        label = DECOUPLE_LABELS.get(decouple["method"], str(decouple["method"]))
        if decouple.get("tau") is not None:
            label += f" (τ={float(decouple['tau']):g})"
        name += f" + {label}"
    return name


def dataset_name(config: dict[str, Any]) -> str:
    """`dataset_name`, else the tfds name, else the data root's base name, else the source."""
    data = config.get("data", {}) or {}
    for value in (config.get("dataset_name"), data.get("name")):
        if value:
            return str(value)
    if data.get("root"):
        return pathlib.PurePath(str(data["root"])).name or str(data["root"])
    return str(data.get("source", "?"))
