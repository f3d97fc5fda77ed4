"""train_and_evaluate (one run) and train_sweep (a product of settings): both are programs of
runs trained by the one loop in loop.py; the workdir names the run or the sweep, so the same
call resumes it."""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import jax

from fbl_jax.train.loop import Run, train_program
from fbl_jax.train.preemption import stop_scope
from fbl_jax.train.processes import resolve_processes, train_in_processes
from fbl_jax.train.programs import (
    Program,
    claim_workdir,
    differences,
    expand,
    group_programs,
)
from fbl_jax.train.run_setup import check_run_config
from fbl_jax.train.runners import resolve_run_axis

log = logging.getLogger("fbl_jax")


def train_and_evaluate(config: Any, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Train and evaluate as `config` says; resume from the latest checkpoint in `workdir`.

    Returns the final record (last and best-on-minival test metrics).
    """
    check_run_config(config)
    workdir = pathlib.Path(workdir)
    finals = train_program([Run(workdir.name, config, workdir)], workdir)
    return finals[workdir.name]


def train_sweep(
    base_config: Any,
    sets: Sequence[tuple[str, list[Any]]],
    workdir: str | pathlib.Path,
    extend: bool = False,
) -> dict[str, dict[str, Any]]:
    """Train every combination of `sets` over `base_config`, one run directory each under
    `workdir`; returns {run name: final record}. `extend`: see `claim_workdir`."""
    with stop_scope():  # a SIGTERM between programs or while child processes train
        return _train_sweep(base_config, sets, pathlib.Path(workdir), extend)


def _train_sweep(base_config, sets, workdir: pathlib.Path, extend: bool):
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
    claim_workdir(workdir, spec, extend)
    finals = {}
    for program, seed in seed_waves(programs):
        names = [r.name for r in program.runs]
        wave = "" if seed is None else f" (seed {seed})"
        log.info("program %d%s: %d run(s): %s", program.index, wave, len(names), ", ".join(names))
        timing = f"timing_program{program.index}{'' if seed is None else f'_seed{seed}'}.json"
        config = program.runs[0].config
        axis = resolve_run_axis(config.sweep_run_axis, jax.default_backend(), len(names))
        count = resolve_processes(
            config.get("sweep_processes", 1), jax.default_backend(), axis, len(names)
        )
        if count > 1:
            finals.update(train_in_processes(program.runs, workdir, timing, count))
            continue
        members = [Run(r.name, r.config, workdir / r.name) for r in program.runs]
        finals.update(train_program(members, workdir, timing))
    return finals


def seed_waves(programs: Sequence[Program]) -> list[tuple[Program, Any]]:
    """The order programs train in: where a program's runs take their steps one after another
    anyway (the sequential run axis), it is split by seed and every program's first seed trains
    before any second seed, so a stopped sweep has whole results for its first seeds. Vmapped
    programs stay whole (their runs share each call). (program, seed or None) pairs."""
    backend = jax.default_backend()
    waves: list[tuple[int, int, Program, Any]] = []
    for program in programs:
        config = program.runs[0].config
        seeds = list(dict.fromkeys(r.config.seed for r in program.runs))
        axis = resolve_run_axis(config.sweep_run_axis, backend, len(program.runs))
        if axis != "sequential" or len(seeds) == 1:
            waves.append((0, program.index, program, None))
            continue
        for rank, seed in enumerate(seeds):
            runs = [r for r in program.runs if r.config.seed == seed]
            waves.append((rank, program.index, Program(program.index, runs, program.key), seed))
    return [(p, seed) for _, _, p, seed in sorted(waves, key=lambda w: w[:2])]
