"""Run a plan's stages in priority order until the budget, then write the report.

Each stage trains through the same loop as fbl-train (`train_sweep`) in this process. At the
budget's end, or on a SIGTERM, the stage stops at its next safe point whatever it is doing
(preemption.py): a checkpoint at the step it is at, or nothing if it had not started, and the
same command later resumes it. OUT/stages.json records which stages are done and each call's
stretch of time on which machine.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import threading
import time
from typing import Any

from fbl_jax.reproduce.plan import Stage
from fbl_jax.timing_file import machine_cores, read_stretches
from fbl_jax.train import host, train_sweep
from fbl_jax.train.preemption import Preempted, request_stop, stop_requested, stop_scope
from fbl_jax.train.programs import expand, group_programs
from fbl_jax.train.run_setup import read_final_record

log = logging.getLogger("fbl_jax")


class _Deadline:
    """At the deadline, the stop a SIGTERM would make (preemption.request_stop): the stage
    stops at its next safe point, in whatever phase it is (set-up, compiling, evaluating)."""

    def __init__(self, deadline: float) -> None:
        self.deadline, self.done = deadline, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if not self.done.wait(max(0.0, self.deadline - time.time())):
            request_stop()

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


def stage_done(stage: Stage, out: pathlib.Path, state: dict[str, Any]) -> bool:
    """Done, and every run it has now (a later call may add methods or seeds) finished."""
    if state.get(stage.name, {}).get("status") != "done":
        return False
    return all(read_final_record(d) is not None for _, _, d in stage_runs(stage, out))


def stage_progress(stage: Stage, out: pathlib.Path) -> float | None:
    """The fraction of a training stage's steps its runs have saved (from their timing.json
    stretches), None for a decoupling stage."""
    if stage.decouple:
        return None
    runs = stage_runs(stage, out)
    done, total_steps = 0, None  # every run of a stage takes the same number of steps
    for _, _, run_dir in runs:
        stretches = [s for s in read_stretches(run_dir / "timing.json") if s.get("total_steps")]
        if stretches:
            done += max(s.get("last_step", s["first_step"]) for s in stretches)
            total_steps = stretches[-1]["total_steps"]
    return done / (total_steps * len(runs)) if total_steps else 0.0


def stage_cpu_floor(stage: Stage, out: pathlib.Path) -> float | None:
    """Seconds the whole training stage takes at the CPU time its runs have used per step so far,
    with every core of the machine busy on it: the wall time with the machine to itself, a floor
    (pauses and other load are not in CPU time; idle cores would add to it). None for a
    decoupling stage, or where no stretch on a CPU recorded its CPU seconds."""
    if stage.decouple:
        return None
    runs = stage_runs(stage, out)
    machine_s, steps, total_steps = 0.0, 0, None
    for _, _, run_dir in runs:
        for s in read_stretches(run_dir / "timing.json"):
            cores, first = machine_cores(s), s.get("first_step", 0)
            taken = s.get("last_step", first) - first
            if s.get("cpu_s") is None or not cores or taken <= 0 or not s.get("total_steps"):
                continue
            shared = len(s.get("runs_in_process") or [None])  # a process's seconds, its runs'
            machine_s += s["cpu_s"] / shared / cores
            steps += taken
            total_steps = s["total_steps"]
    return machine_s / steps * total_steps * len(runs) if steps else None


def run_stages(
    stages: list[Stage],
    out: pathlib.Path,
    deadline: float,
    estimates: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Train the stages not done yet, in order, until `deadline` (time.time()); returns the
    state ({stage: {"status", "seconds"}}), also kept in OUT/stages.json."""
    with stop_scope():
        return _run_stages(stages, out, deadline, estimates or {})


def _run_stages(stages, out: pathlib.Path, deadline: float, estimates) -> dict[str, Any]:
    path = out / "stages.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    machine = host.label(host.describe(), cores=False)
    for name, estimate in estimates.items():  # the dry run's estimate beside the measured time
        entry = state.setdefault(name, {"seconds": 0.0, "status": "not started"})
        entry["estimate_s"], entry["estimate_host"] = estimate, machine
    for stage in stages:
        if stage_done(stage, out, state):
            continue
        if time.time() >= deadline or stop_requested():
            log.warning(
                "budget used up (or SIGTERM) before stage %s; rerun the same command to go on",
                stage.name,
            )
            break
        t0 = time.time()
        log.info("stage %s: starting", stage.name)
        try:
            with _Deadline(deadline):
                status = _run_stage(stage, out)
        except Preempted:
            status = "stopped"
        elapsed = time.time() - t0
        entry = state.setdefault(stage.name, {"seconds": 0.0})
        entry["status"], entry["seconds"] = status, entry["seconds"] + elapsed
        entry.setdefault("stretches", []).append(
            {"host": machine, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0)),
             "seconds": round(elapsed, 1), "status": status}
        )  # fmt: skip
        path.write_text(json.dumps(state, indent=1) + "\n")
        log.info("stage %s: %s (%.0f s)", stage.name, status, elapsed)
        if status == "stopped":
            log.warning("budget used up (or SIGTERM) in stage %s; rerun the same command to resume it",
                        stage.name)  # fmt: skip
            break
    return state


def _run_stage(stage: Stage, out: pathlib.Path) -> str:
    workdir = out / "runs" / stage.name
    if not stage.decouple:
        train_sweep(stage.config(), stage.sets, workdir, extend=True)
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
