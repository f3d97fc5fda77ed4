"""timing.json as `train/timing.WallClock` writes it, read without JAX (fbl-report and
fbl-reproduce's time tables read it as well as the trainer)."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

# host.label's ", 1 of 2 cores": stretches written before the cores had fields of their own
_CORES_IN_LABEL = re.compile(r", (\d+) of (\d+) cores\b")


def read(path: pathlib.Path) -> dict[str, Any]:
    """{"total": seconds by phase, "stretches": [...]} of a run's timing file; empty if it is
    missing or unreadable. A file from before stretches were recorded counts as one stretch on
    an unrecorded machine (host None) with its totals."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
        total = dict(data.get("total", {}))
        stretches = data.get("stretches")
    except (
        OSError,
        UnicodeDecodeError,
        json.JSONDecodeError,
        AttributeError,
        TypeError,
        ValueError,
    ):
        return {"total": {}, "stretches": []}
    if stretches is None:
        stretches = [{"host": None, "seconds": total}] if total else []
    return {"total": total, "stretches": [s for s in stretches if isinstance(s, dict)]}


def read_stretches(path: pathlib.Path) -> list[dict[str, Any]]:
    """The stretches of a timing file (see `read`)."""
    return read(path)["stretches"]


def machine_cores(stretch: dict[str, Any]) -> int | None:
    """The CPU cores of the machine a stretch ran on; None off the CPU (an accelerator's work is
    not in the process's CPU seconds) or where the stretch does not say."""
    if stretch.get("cores_total"):
        return int(stretch["cores_total"])
    found = _CORES_IN_LABEL.search(stretch.get("host") or "")
    return int(found.group(2)) if found else None
