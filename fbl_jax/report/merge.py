"""One `Run` per setting: a method's seeds merged, so figures and per-class tables show one line
or row per method (mean over its seeds), named by the method, not by a run folder.

A setting is the runs whose configs differ only in the report's ignore keys (the seed, the run
name …), as `tables.aggregate_settings` groups them. Its merged evaluations are those at the steps
every finished seed evaluated: per-class numbers and scalars averaged over the seeds (per-class
numbers also keep their sample std over the seeds, `<key>_std`, for error bars), confusion
matrices summed (so a row-normalised matrix weighs every seed's test images alike). Training
records (lr, α) are the first seed's: a setting's seeds share their schedules.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

from fbl_jax.report.labels import method_name
from fbl_jax.report.run_dir import Run

AVERAGED_LISTS = ("per_class_accuracy", "feature_norm_per_class")


def setting_label(setting: dict[str, Any]) -> str:
    """The method, what tells it apart from a same-named setting, and its seed count."""
    label = setting["method"]
    if setting.get("differs_in"):
        label += " [" + ", ".join(f"{k}={v}" for k, v in setting["differs_in"].items()) + "]"
    n = setting["num_seeds"]
    return f"{label} ({n} seeds)" if n > 1 else label


def _mean(values: list[Any]) -> Any:
    if any(v is None for v in values):
        return None
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return sum(values) / len(values)
    return values[0]


def _std(values: list[Any]) -> Any:
    """Sample std (ddof=1) over the seeds; None where a seed lacks the value."""
    return None if any(v is None for v in values) else statistics.stdev(values)


def _merge_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Records of one split and step from every seed, as one."""
    out = dict(records[0])
    for key in records[0]:
        values = [r.get(key) for r in records]
        if key in AVERAGED_LISTS and all(isinstance(v, list) for v in values):
            out[key] = [_mean(list(col)) for col in zip(*values)]
            out[f"{key}_std"] = [_std(list(col)) for col in zip(*values)]
        elif key == "confusion" and all(isinstance(v, list) for v in values):
            out[key] = [[sum(cells) for cells in zip(*rows)] for rows in zip(*values)]
        elif key not in ("step", "epoch", "split", "type"):
            out[key] = _mean(values)
    return out


def _common_evals(members: Sequence[Run]) -> list[dict[str, Any]]:
    by_run = [{(e.get("split"), e.get("step")): e for e in m.evals} for m in members]
    keys = [k for k in by_run[0] if all(k in b for b in by_run[1:])]
    return [_merge_records([b[k] for b in by_run]) for k in keys]


def _merge_final(members: Sequence[Run]) -> dict[str, Any] | None:
    finals = [m.final for m in members]
    if any(f is None for f in finals):
        return None
    out = dict(finals[0])
    for key in ("last", "best_on_minival"):
        records = [f.get(key) for f in finals]
        out[key] = _merge_records(records) if all(records) else None
    return out


def merge_settings(runs: Sequence[Run], settings: Sequence[dict[str, Any]]) -> list[Run]:
    """A merged Run per setting (settings from `aggregate_settings`), named by `setting_label`;
    runs in no setting (unfinished) stay as they are, named by their method and seed."""
    by_name = {r.name: r for r in runs}
    merged, used = [], set()
    for setting in settings:
        members = [by_name[n] for n in setting["runs"] if n in by_name]
        if not members:
            continue
        used.update(m.name for m in members)
        first = members[0]
        merged.append(
            dataclasses.replace(
                first,
                name=setting_label(setting),
                evals=_common_evals(members) if len(members) > 1 else first.evals,
                final=_merge_final(members) if len(members) > 1 else first.final,
                num_seeds=len(members),
            )
        )
    for run in runs:  # unfinished: by its method and seed too
        if run.name not in used:
            seed = run.config.get("seed")
            label = method_name(run.config) + ("" if seed is None else f", seed {seed}")
            merged.append(dataclasses.replace(run, name=f"{label} (unfinished)", num_seeds=1))
    return merged
