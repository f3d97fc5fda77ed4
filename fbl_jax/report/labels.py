"""Human-readable names of a run's method and dataset, from its config.json.

The results table, summary.json and the figure legends all name runs through these functions,
so one setting is called the same everywhere: 'FBL (authors' form)', 'LA (τ=1.0)',
'CE + τ-norm (τ=0.8)'. A label shows the loss settings that differ from their defaults, so two
different loss settings never share one; settings outside the loss (learning rate …) are named
by the results table's "Differs in" column instead. Standard library only.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from fbl_jax.losses.settings import LOSS_DEFAULTS
from fbl_jax.report.run_dir import Run

LOSS_LABELS = {
    "ce": "CE",
    "focal": "Focal",
    "cb": "CB",
    "ldam": "LDAM",
    "ldam_drw": "LDAM-DRW",
    "la": "LA",
    "balanced_softmax": "Balanced softmax",
    "fbl": "FBL",
    "fbl_drw": "FBL-DRW",
}
FBL_FORM_LABELS = {"paper": "paper form", "authors_code": "authors' form"}
# Each FBL form's usual A and curriculum (configs/cifar10_lt.py for the authors' form).
FBL_FORM_DEFAULTS = {
    "paper": {"fbl_scale": 1.0, "curriculum": "parabolic"},
    "authors_code": {"fbl_scale": 60.0, "curriculum": "authors_code"},
}
CURRICULUM_LABELS = {"authors_code": "authors'"}
# How the method column names fbl-decouple's methods.
DECOUPLE_LABELS = {"tau_norm": "τ-norm", "la_posthoc": "post-hoc LA", "crt": "cRT", "lws": "LWS"}
DECOUPLE_DEFAULTS = {"checkpoint": "best", "epochs": 10, "sampler": "class_balanced"}


def _num(x: Any) -> str:
    """τ, γ: at least one decimal ('1.0', '0.8', '0.25'); other text unchanged."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{v:.1f}" if round(v, 1) == v else f"{v:g}"


def _short(x: Any) -> str:
    """A, epochs: the shortest form ('60', '2.5')."""
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return str(x)


def _differs(value: Any, default: Any) -> bool:
    try:
        return float(value) != float(default)
    except (TypeError, ValueError):
        return str(value) != str(default)


def _fbl_parts(get: Any) -> list[str]:
    form = get("fbl_form")
    usual = FBL_FORM_DEFAULTS.get(form, LOSS_DEFAULTS)
    parts = [FBL_FORM_LABELS.get(form, f"form {form}")]
    if _differs(get("fbl_scale"), usual["fbl_scale"]):
        parts.append(f"A={_short(get('fbl_scale'))}")
    curriculum = get("curriculum")
    if curriculum != usual["curriculum"]:
        parts.append(f"α(t) {CURRICULUM_LABELS.get(curriculum, curriculum)}")
    if curriculum == "authors_code" and _differs(
        get("curriculum_offset"), LOSS_DEFAULTS["curriculum_offset"]
    ):
        parts.append(f"α(t) offset {_short(get('curriculum_offset'))}")
    if get("alpha_per_epoch"):
        parts.append("α per epoch")
    return parts


def loss_label(loss: dict[str, Any]) -> str:
    """'CE', 'LA (τ=1.0)', 'FBL (authors' form, A=150)' … from a config's `loss` section."""

    def get(key: str) -> Any:
        value = loss.get(key)
        return LOSS_DEFAULTS[key] if value is None else value

    name = str(loss.get("name", "?"))
    parts: list[str] = []
    if name in ("fbl", "fbl_drw"):
        parts += _fbl_parts(get)
    elif name == "focal":
        parts.append(f"γ={_num(get('focal_gamma'))}")
    elif name == "cb":
        parts.append(f"β={_short(get('cb_beta'))}")
    elif name == "la":
        parts.append(f"τ={_num(get('la_tau'))}")
    if name in ("ldam", "ldam_drw"):
        for key, sym in (("ldam_max_m", "m"), ("ldam_s", "s")):
            if _differs(get(key), LOSS_DEFAULTS[key]):
                parts.append(f"{sym}={_short(get(key))}")
    if name in ("ldam_drw", "fbl_drw"):
        if _differs(get("drw_start_epoch"), LOSS_DEFAULTS["drw_start_epoch"]):
            parts.append(f"DRW from epoch {_short(get('drw_start_epoch'))}")
        if _differs(get("cb_beta"), LOSS_DEFAULTS["cb_beta"]):
            parts.append(f"β={_short(get('cb_beta'))}")
    label = LOSS_LABELS.get(name, name)
    return f"{label} ({', '.join(parts)})" if parts else label


def decouple_label(decouple: dict[str, Any]) -> str:
    """'τ-norm (τ=0.8)', 'cRT (5 epochs, last checkpoint)' … from a `decouple` section."""
    method = str(decouple.get("method"))
    parts = []
    if decouple.get("tau") is not None:
        parts.append(f"τ={_num(decouple['tau'])}")
    if method in ("crt", "lws"):
        epochs = decouple.get("epochs")
        if epochs is not None and _differs(epochs, DECOUPLE_DEFAULTS["epochs"]):
            parts.append(f"{_short(epochs)} epochs")
        sampler = decouple.get("sampler")
        if sampler is not None and sampler != DECOUPLE_DEFAULTS["sampler"]:
            parts.append(f"{sampler} sampling")
    checkpoint = decouple.get("checkpoint")
    if checkpoint is not None and checkpoint != DECOUPLE_DEFAULTS["checkpoint"]:
        parts.append(f"{checkpoint} checkpoint")
    label = DECOUPLE_LABELS.get(method, method)
    return f"{label} ({', '.join(parts)})" if parts else label


def method_name(config: dict[str, Any]) -> str:
    """The method as tables and legends show it, e.g. 'FBL (paper form)', 'CE + τ-norm (τ=0.8)'.

    A BBN model (model.name 'bbn_*') is 'BBN' with its cross-entropy, 'BBN (Focal (γ=2.0))' with
    another loss.
    """
    name = loss_label(config.get("loss") or {})
    if str((config.get("model") or {}).get("name", "")).startswith("bbn_"):
        name = "BBN" if name == "CE" else f"BBN ({name})"
    decouple = config.get("decouple") or {}
    if decouple.get("method"):
        name += f" + {decouple_label(decouple)}"
    return name


def legend_labels(runs: Sequence[Run]) -> list[str]:
    """One legend entry per run: its method, plus the seed (else run name) where two share one."""
    names = [method_name(r.config) for r in runs]
    labels = list(names)
    for name in set(names):
        same = [i for i, n in enumerate(names) if n == name]
        if len(same) < 2:
            continue
        seeds = [runs[i].config.get("seed") for i in same]
        distinct = None not in seeds and len(set(map(str, seeds))) == len(seeds)
        for i, seed in zip(same, seeds):
            labels[i] = f"{name}, seed {seed}" if distinct else f"{name} [{runs[i].name}]"
    return labels


def dataset_name(config: dict[str, Any]) -> str:
    """`dataset_name`, else the tfds name, else the data root's base name, else the source."""
    data = config.get("data", {}) or {}
    for value in (config.get("dataset_name"), data.get("name")):
        if value:
            return str(value)
    if data.get("root"):
        return pathlib.PurePath(str(data["root"])).name or str(data["root"])
    return str(data.get("source", "?"))
