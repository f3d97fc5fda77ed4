"""train_and_evaluate (one run) and train_sweep (a product of settings): both are programs of
runs trained by the one loop in loop.py; the workdir names the run or the sweep, so the same
call resumes it."""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence
from typing import Any

from fbl_jax.train.loop import Run, train_program
from fbl_jax.train.programs import claim_workdir, differences, expand, group_programs
from fbl_jax.train.run_setup import check_run_config

log = logging.getLogger("fbl_jax")


def _logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)


def train_and_evaluate(config: Any, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Train and evaluate as `config` says; resume from the latest checkpoint in `workdir`.

    Returns the final record (last and best-on-minival test metrics).
    """
    _logging()
    check_run_config(config)
    workdir = pathlib.Path(workdir)
    finals = train_program([Run(workdir.name, config, workdir)], workdir)
    return finals[workdir.name]


def train_sweep(
    base_config: Any, sets: Sequence[tuple[str, list[Any]]], workdir: str | pathlib.Path
) -> dict[str, dict[str, Any]]:
    """Train every combination of `sets` over `base_config`, one run directory each under
    `workdir`; returns {run name: final record}."""
    _logging()
    workdir = pathlib.Path(workdir)
    runs = expand(base_config, sets)
    programs = group_programs(runs)
    for run in runs:
        check_run_config(run.config)
    why = differences(programs)
    log.info(
        "%d run(s) in %d program(s)%s",
        len(runs),
        len(programs),
        f"; the programs differ in {', '.join(why)}" if why else "",
    )
    spec = {
        "sets": [[k, v] for k, v in sets],
        "runs": [{"name": r.name, "settings": r.settings} for r in runs],
        "programs": [[r.name for r in p.runs] for p in programs],
    }
    claim_workdir(workdir, spec)
    finals = {}
    for program in programs:
        names = [r.name for r in program.runs]
        log.info("program %d: %d run(s): %s", program.index, len(names), ", ".join(names))
        members = [Run(r.name, r.config, workdir / r.name) for r in program.runs]
        finals.update(train_program(members, workdir, f"timing_program{program.index}.json"))
    return finals
