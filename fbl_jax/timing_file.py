"""timing.json as `train/timing.WallClock` writes it, read without JAX (fbl-report and
fbl-reproduce's time tables read it as well as the trainer)."""

from __future__ import annotations

import json
import pathlib
from typing import Any


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
