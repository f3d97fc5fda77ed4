"""What the paper comparison says beside its numbers: what the tiny plan is, and which of its rows
are one formula (so their equal numbers are expected, not a finding).

Two rows are one formula when their runs' configs are equal outside `config.loss` (the seed, run
name and work directory aside) and their losses give equal coefficients of the shared program
formula (losses/program.py) on the runs' class counts. Each kind's own formula equals the program
formula with its coefficients exactly (tests/test_loss_kinds.py), so such runs train the same
steps to the same parameters. The check knows no loss by name: logit adjustment at τ = 1 and
balanced softmax are one formula by it (equal offsets log π), at τ = 2 they are not. It is
sufficient, not necessary: formulas equal only through an identity (a constant shift of all
logits, as τ · log π on balanced counts) have other coefficients and are not named.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np

from fbl_jax.defaults import BOOKKEEPING_KEYS
from fbl_jax.reproduce.plan import TINY, Stage, row_of

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
# Config fields that name a run, not what it computes (as fbl-report's settings ignore them).
RUN_NAMING_KEYS = ("seed", "run_name", "workdir")


def tiny_plan_note() -> str:
    epochs = int(TINY["num_epochs"])
    return (
        f"The tiny plan is a {NUMBER_WORDS.get(epochs, epochs)}-epoch smoke test of the "
        f"machinery (stages, sweeps, decoupling, checkpoints, this report) on the bundled digits "
        f"({TINY['model.name']}): its accuracies mean nothing about the methods. The paper "
        "column is empty (—) because the paper has no numbers for these digits; `--plan paper` "
        "compares with them."
    )


def same_formula(a: dict[str, Any], b: dict[str, Any], counts: Sequence[float]) -> bool:
    """True if the runs of configs `a` and `b` (config.json dicts) compute the same: equal
    outside `loss` and seed/run name/workdir, and equal program-formula coefficients."""
    from fbl_jax import losses
    from fbl_jax.report.run_dir import flatten

    def rest(config: dict[str, Any]) -> dict[str, Any]:
        flat = flatten({k: v for k, v in config.items() if k != "loss"})
        return {k: v for k, v in flat.items() if k not in (*RUN_NAMING_KEYS, *BOOKKEEPING_KEYS)}

    if rest(a) != rest(b):
        return False
    if a.get("loss") == b.get("loss"):
        return True
    try:
        ca, cb = (
            losses.program_coefficients(
                ml_collections.ConfigDict(c["loss"]), counts, c["num_epochs"]
            )
            for c in (a, b)
        )
    except (ValueError, KeyError, TypeError):  # ConfigError is a ValueError: no coefficients
        return False
    return ca.keys() == cb.keys() and all(np.array_equal(ca[k], cb[k]) for k in ca)


def same_formula_notes(
    stages: Sequence[Stage], runs_of: Callable[[Stage], Any], labels: dict[str, str]
) -> list[str]:
    """One sentence per group of rows (of one dataset and IF) that are one formula, from the
    finished runs' config.json and class_counts.json; rows without a run are left out."""
    from fbl_jax.report.labels import loss_label

    found: dict[tuple, dict[tuple, tuple[dict, list]]] = {}
    for stage in stages:
        if stage.decouple:  # decoupled classifiers: no training loss of their own
            continue
        for _, settings, run_dir in runs_of(stage):
            row = (stage.table, row_of(stage, settings))
            rows = found.setdefault((stage.dataset, stage.imbalance), {})
            if row not in rows and (read := _read_run(pathlib.Path(run_dir))) is not None:
                rows[row] = read
    notes = []
    for (dataset, imbalance), rows in found.items():
        for group in _groups(rows):
            tables = {table for table, _ in group}
            names = []
            for table, row in group:
                name = labels.get(row, row)
                if len(tables) > 1:
                    name = f"{name} (Table {table})"
                loss = loss_label(rows[(table, row)][0].get("loss", {}))
                names.append(name if loss == name else f"{name}, here {loss},")
            which = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 2 else names)
            notes.append(
                f"{dataset}, IF {imbalance}: {which} are one formula: their configs differ only "
                "in config.loss, and their losses give the same coefficients of the shared loss "
                "formula, so their runs train the same steps to the same parameters (the same "
                "parameter checksum). Their equal numbers are expected, not a finding."
            )
    return [" ".join(n.replace(",,", ",").split()) for n in notes]


def _read_run(run_dir: pathlib.Path) -> tuple[dict, list] | None:
    try:
        config = json.loads((run_dir / "config.json").read_text())
        counts = json.loads((run_dir / "class_counts.json").read_text())["counts"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return config, counts


def _groups(rows: dict[tuple, tuple[dict, list]]) -> list[list[tuple]]:
    """The rows in groups of one formula (groups of two or more, in row order)."""
    groups: list[list[tuple]] = []
    for row, (config, counts) in rows.items():
        for group in groups:
            first_config, first_counts = rows[group[0]]
            if counts == first_counts and same_formula(first_config, config, counts):
                group.append(row)
                break
        else:
            groups.append([row])
    return [g for g in groups if len(g) > 1]
