"""Run a plan's stages in priority order until the budget, then write the report.

Each stage trains through the same loop as fbl-train (`train_sweep`) in this process. At the
budget's end the stage gets SIGTERM: the loop writes a checkpoint at the step it is at and stops,
and the same command later resumes it. OUT/stages.json records which stages are done.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import signal
import threading
import time
from typing import Any

from fbl_jax.reproduce.plan import Stage
from fbl_jax.train import train_sweep
from fbl_jax.train.preemption import Preempted
from fbl_jax.train.programs import expand, group_programs
from fbl_jax.train.run_setup import read_final_record

log = logging.getLogger("fbl_jax")


class _Deadline:
    """SIGTERM to this process at the deadline, and every few seconds after it until cancelled,
    so a stage that is still loading data when the first one arrives still stops."""

    def __init__(self, deadline: float) -> None:
        self.deadline, self.done = deadline, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self.done.wait(max(0.0, self.deadline - time.time())):
            return
        while not self.done.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            self.done.wait(5.0)

    def __enter__(self) -> _Deadline:
        if self.deadline != float("inf"):
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()


def stage_runs(stage: Stage, out: pathlib.Path) -> list[tuple[str, dict, pathlib.Path]]:
    """(run name, --set values, run directory) of every run a stage trains or writes."""
    if stage.decouple:
        return [
            (name, settings, out / "runs" / stage.name / name)
            for name, settings, _ in source_runs(stage, out)
        ]
    runs = expand(stage.config(), stage.sets)
    return [(r.name, r.settings, out / "runs" / stage.name / r.name) for r in runs]


def source_runs(stage: Stage, out: pathlib.Path) -> list[tuple[str, dict, pathlib.Path]]:
    """The CE runs of the Table 2 stage a decoupling stage corrects."""
    config = stage.config()
    runs = expand(config, [*stage.sets, ("loss.name", ["ce"])])
    return [(r.name, r.settings, out / "runs" / stage.source / r.name) for r in runs]


def count_programs(stage: Stage) -> tuple[int, int]:
    """(runs, compiled programs) a sweep stage trains: distinct loss settings count on the CPU."""
    runs = expand(stage.config(), stage.sets)
    programs = group_programs(runs)
    losses = {json.dumps(r.config.loss.to_dict(), sort_keys=True, default=list) for r in runs}
    return len(runs), max(len(programs), len(losses))


def run_stages(stages: list[Stage], out: pathlib.Path, deadline: float) -> dict[str, Any]:
    """Train the stages not done yet, in order, until `deadline` (time.time()); returns the
    state ({stage: {"status", "seconds"}}), also kept in OUT/stages.json."""
    path = out / "stages.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    for stage in stages:
        if state.get(stage.name, {}).get("status") == "done":
            continue
        if time.time() >= deadline:
            log.warning(
                "budget used up before stage %s; rerun the same command to go on", stage.name
            )
            break
        t0 = time.time()
        log.info("stage %s: starting", stage.name)
        try:
            with _Deadline(deadline):
                status = _run_stage(stage, out)
        except Preempted:
            status = "stopped"
        entry = state.setdefault(stage.name, {"seconds": 0.0})
        entry["status"], entry["seconds"] = status, entry["seconds"] + time.time() - t0
        path.write_text(json.dumps(state, indent=1) + "\n")
        log.info("stage %s: %s (%.0f s)", stage.name, status, time.time() - t0)
        if status == "stopped":
            log.warning("budget used up in stage %s; rerun the same command to resume it",
                        stage.name)  # fmt: skip
            break
    return state


def _run_stage(stage: Stage, out: pathlib.Path) -> str:
    workdir = out / "runs" / stage.name
    if not stage.decouple:
        train_sweep(stage.config(), stage.sets, workdir)
        return "done"
    from fbl_jax.decouple import default_config, run_decouple

    for name, _, source_dir in source_runs(stage, out):
        if read_final_record(source_dir) is None:
            return "waiting"  # its CE runs are not trained yet
        target = workdir / name
        if read_final_record(target) is not None:
            continue
        shutil.rmtree(target, ignore_errors=True)  # a correction cut short: minutes, so redo
        config = default_config()
        config.method, config.from_run = stage.decouple, str(source_dir)
        if stage.base["file"] == "demo.py":  # the tiny plan: one short cRT epoch
            config.crt.epochs = 1
        run_decouple(config, target)
    return "done"
