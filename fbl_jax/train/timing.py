"""Where a run's time goes: images/s over synchronised windows and wall time by phase."""

from __future__ import annotations

import contextlib
import json
import pathlib
import time
from collections.abc import Iterator


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
    """Wall time by phase (compile, train, eval, checkpoint), summed over restarts in
    WORKDIR/timing.json, so a benchmark can say where a run's time went."""

    PHASES = ("compile", "train", "eval", "checkpoint")

    def __init__(self, workdir: pathlib.Path | None, filename: str = "timing.json") -> None:
        self.path = workdir / filename if workdir is not None else None
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self.previous = {}
        if self.path is not None and self.path.exists():
            try:
                self.previous = json.loads(self.path.read_text()).get("total", {})
            except (json.JSONDecodeError, AttributeError):
                self.previous = {}

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

    def write(self) -> None:
        if self.path is None:
            return
        total = {k: self.previous.get(k, 0.0) + v for k, v in self.seconds.items()}
        self.path.write_text(json.dumps({"this_process": self.seconds, "total": total}, indent=1))
