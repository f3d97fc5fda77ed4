"""SIGTERM (schedulers, TPU maintenance): the loop checkpoints at the step it is at and exits."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, so schedulers see the run as terminated


class Preempted(SystemExit):
    """SIGTERM arrived; a checkpoint was written and the run stops (restart to resume)."""


@contextlib.contextmanager
def sigterm_flag() -> Iterator[threading.Event]:
    """A flag SIGTERM sets (the loop checkpoints and stops); the old handler comes back after."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)
