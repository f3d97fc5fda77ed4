"""A sweep wave in several processes on the CPU, each on its own cores.

On a 2-core machine two one-thread processes train CIFAR-LT ResNet-32 side by side in about a
fifth less time than one two-thread process trains the same runs (BENCHMARKS.md, CPU-7, CPU-8): the
small convolutions and the per-call runtime work of one process do not keep two cores busy. So
where the runs of a wave take their steps one after another anyway (the sequential run axis),
`config.sweep_processes` can share them out over child processes, each pinned to its own share
of the cores and running the same `train_program` as an in-process sweep. A SIGTERM to the parent (or its stop flag) is passed on:
every child checkpoints and stops, and the parent stops as one run would.
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from fbl_jax import pinned
from fbl_jax.train.preemption import PREEMPTED_EXIT_CODE, Preempted, stop_requested

log = logging.getLogger("fbl_jax")


def resolve_processes(setting: int, backend: str, axis: str, num_runs: int) -> int:
    """`setting` processes (0: automatic: one per core, at most one per run, on the CPU with
    the sequential run axis; else 1), never more than the runs."""
    if axis != "sequential" or num_runs < 2:
        return 1
    if setting == 0:
        return min(num_runs, len(os.sched_getaffinity(0))) if backend == "cpu" else 1
    return max(1, min(setting, num_runs))


def share(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """`items` dealt round-robin into `parts` non-empty lists (in order within each)."""
    return [list(items[i::parts]) for i in range(min(parts, len(items)))]


def train_in_processes(
    runs: Sequence[Any], workdir: pathlib.Path, timing_name: str, processes: int
) -> dict[str, dict[str, Any]]:
    """Train `runs` (SweepRuns of one program and seed) in `processes` child processes;
    returns {run name: final record} as train_program does."""
    from fbl_jax.train.run_setup import read_final_record

    groups = share(list(runs), processes)
    cores = share(sorted(os.sched_getaffinity(0)), len(groups))
    specs = [
        {"runs": [(r.name, r.config, workdir / r.name) for r in group], "workdir": workdir,
         "timing": timing_name.replace(".json", f"_process{i}.json"), "cpus": cpus}
        for i, (group, cpus) in enumerate(zip(groups, cores))
    ]  # fmt: skip
    for i, (group, cpus) in enumerate(zip(groups, cores)):
        log.info("process %d on core(s) %s: %s", i, cpus, ", ".join(r.name for r in group))
    with tempfile.TemporaryDirectory(prefix="fbl_jax_wave_") as tmp:
        children = pinned.spawn("fbl_jax.cli.sweep_process", specs, pathlib.Path(tmp))
        codes = _wait(children)
    failed = [i for i, code in enumerate(codes) if code not in (0, PREEMPTED_EXIT_CODE)]
    if failed:
        names = [r.name for i in failed for r in groups[i]]
        raise RuntimeError(
            f"the training process of {', '.join(names)} exited with {codes[failed[0]]}; its "
            "log above says why (rerun to resume from its checkpoints)"
        )
    if PREEMPTED_EXIT_CODE in codes:
        raise Preempted(PREEMPTED_EXIT_CODE)
    return {r.name: read_final_record(workdir / r.name) for r in runs}


def _wait(children: list[subprocess.Popen]) -> list[int]:
    """Every child's exit code; the parent's stop (SIGTERM, a budget) is passed on once."""
    passed_on = False
    while any(c.poll() is None for c in children):
        if stop_requested() and not passed_on:
            for c in children:
                if c.poll() is None:
                    c.send_signal(signal.SIGTERM)
            passed_on = True
        time.sleep(0.5)
    return [c.returncode for c in children]
