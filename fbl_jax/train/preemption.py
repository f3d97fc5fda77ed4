"""SIGTERM (schedulers, TPU maintenance, fbl-reproduce's budget): stop at the next safe point.

Inside a `stop_scope` SIGTERM only sets the call's stop flag. Set-up checks it between its
phases (data, model, restore) and the loop after every compiled call, evaluation and checkpoint:
the run writes a checkpoint at the step it is at (or says that nothing had started) and exits
143. Without the scope a SIGTERM during set-up would kill the process mid-way.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, so schedulers see the run as terminated

log = logging.getLogger("fbl_jax")
_current: threading.Event | None = None  # the outermost scope's flag


class Preempted(SystemExit):
    """SIGTERM arrived; what there was to save is saved and the call stops (rerun to resume)."""


@contextlib.contextmanager
def stop_scope() -> Iterator[threading.Event]:
    """A stop flag that SIGTERM (and `request_stop`) sets for the duration; nested scopes share
    the outermost one's flag, and the previous SIGTERM handler comes back after it."""
    global _current
    if _current is not None:
        yield _current
        return
    flag = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set()) if main else None
    _current = flag
    try:
        yield flag
    finally:
        _current = None
        if main:
            signal.signal(signal.SIGTERM, previous)


sigterm_flag = stop_scope  # the loop's name for it


def request_stop() -> None:
    """What SIGTERM does, from code (a budget's deadline): the current scope stops."""
    if _current is not None:
        _current.set()


def stop_requested() -> bool:
    return _current is not None and _current.is_set()


def stop_if_requested(phase: str, saved: str) -> None:
    """Raise Preempted (exit 143) with one line saying where the stop came and what is kept."""
    if stop_requested():
        log.warning("SIGTERM during %s: %s; rerun the same command to go on", phase, saved)
        raise Preempted(PREEMPTED_EXIT_CODE)
