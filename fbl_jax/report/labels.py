"""Human-readable names of a run's method and dataset, from its config.json.

The results table, summary.json and the figure legends all name runs through these functions,
so one setting is called the same everywhere: 'FBL (authors' form)', 'LA (τ=1.0)',
'CE + τ-norm (τ=0.8)'. A label shows the loss settings that differ from their defaults, so two
different loss settings never share one; settings outside the loss (learning rate …) are named
by the results table's "Differs in" column instead. Each loss kind's label comes from its
declaration in fbl_jax/losses/kinds/ (which imports JAX, not the training code).
"""

from __future__ import annotations

import pathlib
import textwrap
from collections.abc import Sequence
from typing import Any

from fbl_jax.losses import registry
from fbl_jax.losses.registry import differs as _differs
from fbl_jax.losses.registry import fmt_decimal as _num
from fbl_jax.losses.registry import fmt_short as _short
from fbl_jax.report.run_dir import Run

# How the method column names fbl-decouple's methods.
DECOUPLE_LABELS = {"tau_norm": "τ-norm", "la_posthoc": "post-hoc LA", "crt": "cRT", "lws": "LWS"}
DECOUPLE_DEFAULTS = {"checkpoint": "best", "epochs": 10, "sampler": "class_balanced"}


def __getattr__(name: str) -> Any:
    """LOSS_DEFAULTS: the defaults a label compares a run's loss fields with (the registry's)."""
    if name == "LOSS_DEFAULTS":
        return registry.defaults()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def loss_label(loss: dict[str, Any]) -> str:
    """'CE', 'LA (τ=1.0)', 'FBL (authors' form, A=150)' … from a config's `loss` section.

    The kind's declaration (fbl_jax/losses/kinds/) gives the name and which fields to show;
    missing fields are the defaults (configs written before a field existed); an unknown kind
    is named as it is.
    """
    name = str(loss.get("name", "?"))
    kind = registry.find_kind(name)
    if kind is None:
        return name
    values = {
        f.name: f.default if loss.get(f.name) is None else loss.get(f.name) for f in kind.fields
    }
    parts = list(kind.label_parts(values)) if kind.label_parts else []
    for f in kind.fields:
        shown = f.name in kind.label_always or _differs(values[f.name], f.default)
        if f.show is not None and shown:
            parts.append(f.show(values[f.name]))
    return f"{kind.label} ({', '.join(parts)})" if parts else kind.label


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
    """One legend entry per run: its method, plus the seed (else run name) where two share one.
    A merged run (seeds averaged) keeps its merged name, which says how many seeds it holds."""
    names = [method_name(r.config) for r in runs]
    labels = [r.name if r.num_seeds is not None else n for r, n in zip(runs, names)]
    for name in set(names):
        same = [i for i, n in enumerate(names) if n == name and runs[i].num_seeds is None]
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


def wrap_label(label: str, width: int) -> str:
    """`label` in lines of at most `width` characters, broken after its commas where it can.

    A legend keeps the whole method name (a reader must tell the settings apart) but a paper
    column is narrow: 'FBL (authors' form, α(t) offset 1.5, α per epoch)' at 30 becomes
    'FBL (authors' form,' / 'α(t) offset 1.5, α per epoch)'. A word longer than `width` stays whole.
    """
    if width < 1 or len(label) <= width:
        return label
    parts = [p + "," for p in label.split(", ")]
    parts[-1] = parts[-1][:-1]
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 1 + len(part) <= width:
            lines[-1] += " " + part
        elif len(part) <= width:
            lines.append(part)
        else:
            lines += textwrap.wrap(part, width, break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines)
