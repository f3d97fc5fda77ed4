"""Where a run's time goes: images/s over synchronised windows, wall time by phase and by
stretch (each process that trained it, on which machine)."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

from fbl_jax import timing_file
from fbl_jax.train import host


class SpeedWindow:
    """images/s over wall time since the last sync point (a record, an eval, a compile).

    Steps are dispatched asynchronously, so the window is only restarted right after the host
    has waited for the device; compile time never counts as training time.
    """

    def __init__(self, step: int) -> None:
        self.restart(step)

    def restart(self, step: int) -> None:
        self.step, self.time = step, time.perf_counter()

    def rate(self, step: int, batch_size: int) -> float | None:
        elapsed = time.perf_counter() - self.time
        if step <= self.step or elapsed <= 0:
            return None
        return (step - self.step) * batch_size / elapsed


class WallClock:
    """Wall time by phase (compile, train, eval, checkpoint), summed over restarts, and one
    stretch per process that trained the run (the machine, when, which steps, its seconds), so
    a run stopped and resumed on several machines says how long it took on each.

    A stretch also keeps the process's CPU seconds (all its threads): unlike wall time, they
    leave out a paused process and, on a one-thread process, time a busy machine took from it.

    Written to WORKDIR/FILENAME and to each run directory's timing.json (where that is another
    file) at every checkpoint and at the end, atomically, so a killed process loses at most the
    time since its last checkpoint (whose steps the restart trains again).
    """

    PHASES = ("compile", "train", "eval", "checkpoint")

    def __init__(
        self,
        workdir: pathlib.Path | None,
        filename: str = "timing.json",
        run_dirs: Sequence[pathlib.Path] = (),
        first_step: int = 0,
        total_steps: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        paths = [workdir / filename] if workdir is not None else []
        paths += [d / "timing.json" for d in run_dirs] if workdir is not None else []
        self.paths = list(dict.fromkeys(paths))
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self.previous = {path: timing_file.read(path) for path in self.paths}
        self.batch_size = batch_size
        self._cpu0 = time.process_time()  # CPU seconds: what a pause or a busy neighbour leaves out
        machine = host.describe() if self.paths else {}
        self.stretch: dict[str, Any] = {
            "host": host.label(machine) if self.paths else None,
            "started": _now(),
            "first_step": first_step,
            "total_steps": total_steps,
        }
        if machine.get("cores_total"):  # on the CPU: what the process's CPU seconds are out of
            self.stretch["cores"] = machine.get("cores")
            self.stretch["cores_total"] = machine["cores_total"]
        if len(run_dirs) > 1:  # their steps are taken by the same process: shared seconds
            self.stretch["runs_in_process"] = [d.name for d in run_dirs]

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    @contextlib.contextmanager
    def measure(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())

    def write(self, step: int | None = None, status: str = "running") -> None:
        """`step`: the last step this process has saved (or finished); `status`: running,
        stopped or finished."""
        stretch = {**self.stretch, "ended": _now(), "status": status,
                   "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                   "cpu_s": round(time.process_time() - self._cpu0, 1)}  # fmt: skip
        if step is not None:
            stretch["last_step"] = step
            steps = step - stretch["first_step"]
            if self.batch_size and steps > 0 and self.seconds["train"] > 0:
                stretch["images_per_s"] = round(steps * self.batch_size / self.seconds["train"], 1)
        for path in self.paths:
            before = self.previous[path]
            total = {k: before["total"].get(k, 0.0) + v for k, v in self.seconds.items()}
            record = {"this_process": self.seconds, "total": total,
                      "stretches": [*before["stretches"], stretch]}  # fmt: skip
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            os.replace(tmp, path)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
