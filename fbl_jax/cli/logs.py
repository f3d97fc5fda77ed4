"""The one log set-up of every entry point: one format, fbl_jax's own lines, no library chatter.

    2026-12-05 02:22:10 epoch 1.00 step 15/30 | loss 2.0222 | ...
    2026-12-05 02:22:10 [seed=0,loss.name=ce] compiled the train call (1 step(s)) in 4.1 s
    2026-12-05 02:22:11 WARNING: ...

fbl-train, fbl-sweep, fbl-decouple (cli.run_absl), fbl-reproduce, fbl-report, fbl-bench and a
sweep's child processes (their run names as the `[label]`) all call `setup_logging`. fbl_jax
logs at INFO; every other library only from WARNING on: the root logger stays at WARNING and the
chatty libraries' own loggers are set there too (absl and orbax's INFO lines, matplotlib's font
cache, fontTools' PDF font subsetting, jax's "Unable to initialize backend 'tpu'"). A library
logger someone set explicitly (JAX_LOGGING_LEVEL, absl's --verbosity) keeps its level.
"""

from __future__ import annotations

import logging
import os
import sys

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
QUIET_LOGGERS = ("absl", "jax", "jaxlib", "orbax", "matplotlib", "fontTools", "PIL", "tensorflow")


class _Formatter(logging.Formatter):
    """`asctime [label] message`; warnings and errors say their level before the message."""

    def __init__(self, label: str | None):
        label = "" if not label else "[" + label.replace("%", "%%") + "] "
        super().__init__(f"%(asctime)s {label}%(levelprefix)s%(message)s", DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.levelprefix = f"{record.levelname}: " if record.levelno >= logging.WARNING else ""
        return super().format(record)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (pytest swaps it per test)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _absl_verbosity_given() -> bool:
    flags = sys.modules.get("absl.flags")
    try:
        return bool(flags and flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present)
    except (AttributeError, KeyError):
        return False


def setup_logging(label: str | None = None) -> logging.Handler:
    """Route log records to stderr in the one format; call once, first thing, in an entry point.

    Replaces absl's handler (app.run installs it on the root logger) and an earlier call's; other
    handlers (pytest's) stay. Returns the handler."""
    root = logging.getLogger()
    absl_handler = None
    if "absl.logging" in sys.modules:
        from absl import logging as absl_logging

        absl_handler = absl_logging.get_absl_handler()
        if not _absl_verbosity_given():  # absl's flag parsing set its logger to INFO
            absl_logging.set_verbosity(absl_logging.WARNING)
    for handler in list(root.handlers):
        if handler is absl_handler or isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter(label))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("fbl_jax").setLevel(logging.INFO)
    chosen = {"absl": _absl_verbosity_given()}
    chosen["jax"] = chosen["jaxlib"] = bool(os.environ.get("JAX_LOGGING_LEVEL"))
    for name in QUIET_LOGGERS:
        if not chosen.get(name):
            logging.getLogger(name).setLevel(logging.WARNING)
    return handler
