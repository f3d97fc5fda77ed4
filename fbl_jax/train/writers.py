"""Run outputs: WORKDIR/metrics.jsonl, TensorBoard event files and console progress lines.

Only process 0 writes. A non-finite logged value stops the run with an error naming the step.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import pathlib
import time
from typing import Any

log = logging.getLogger("fbl_jax")

SCALAR_EVAL_KEYS = ("top1", "top5", "balanced_top1", "many_shot", "medium_shot", "few_shot")
# The ETA follows the pace of the last this-many console lines (evaluations between them
# included), so a pause, a slow start or a busier stretch of a shared machine fades out.
ETA_WINDOW = 20


class NonFiniteError(FloatingPointError):
    """The loss (or another logged value) became NaN or inf."""


def check_finite(name: str, value: float, step: int) -> None:
    if not math.isfinite(value):
        raise NonFiniteError(
            f"{name} is {value} at step {step}; the run is stopped. Lower the learning rate, "
            "check the data, or resume from an earlier checkpoint with another setting."
        )


def eval_line(record: dict[str, Any]) -> None:
    """An eval record's console line (fbl-train, fbl-decouple, fbl-eval)."""
    parts = [f"{k} {100 * record[k]:.2f}" for k in SCALAR_EVAL_KEYS if record.get(k) is not None]
    n = record["num_examples"]
    where = (
        f"({n} images)" if record.get("step") is None  # weights without a run (fbl-eval)
        else f"@ epoch {record['epoch']:.1f} (step {record['step']}, {n} images)"
    )  # fmt: skip
    log.info(
        "eval %s %s: %s | mean |f| %.3f",
        record["split"],
        where,
        ", ".join(parts),
        record["mean_feature_norm"],
    )


class MetricWriter:
    def __init__(self, workdir: str | pathlib.Path, enabled: bool, total_steps: int) -> None:
        self.workdir = pathlib.Path(workdir)
        self.enabled = enabled
        self.total_steps = total_steps
        self._tb = None
        self._recent: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=ETA_WINDOW + 1
        )

    def _tensorboard(self):
        # created on the first scalar, so a rerun that trains nothing adds no empty event file
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.workdir / "tensorboard"))
        return self._tb

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resumed run starts from)."""
        path = self.workdir / "metrics.jsonl"
        if not self.enabled or not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
            if record.get("type") != "final" and record.get("step", 0) <= step:
                kept.append(line)
        path.write_text("".join(k + "\n" for k in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.workdir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if record["type"] == "final":
            return  # its values are the eval records', already in TensorBoard
        step = int(record.get("step", 0))
        prefix = record["type"] if record["type"] != "eval" else f"eval_{record['split']}"
        tb = self._tensorboard()
        for key, value in record.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and key != "step":
                tb.add_scalar(f"{prefix}/{key}", value, step)
        tb.flush()

    def train_line(self, record: dict[str, Any]) -> None:
        step = record["step"]
        self._recent.append((time.time(), step))
        (t_old, s_old), (t_new, s_new) = self._recent[0], self._recent[-1]
        eta = (
            (t_new - t_old) / (s_new - s_old) * (self.total_steps - step)
            if s_new > s_old
            else float("nan")
        )
        speed = record.get("images_per_s")
        log.info(
            "epoch %.2f step %d/%d | loss %.4f | train top1 %.2f | lr %.5f | alpha %.4f | "
            "%s img/s | ETA %s",
            record["epoch"],
            step,
            self.total_steps,
            record["loss"],
            100 * record["train_top1"],
            record["lr"],
            record["alpha"],
            "-" if speed is None else f"{speed:.0f}",
            _fmt_time(eta),
        )

    def eval_line(self, record: dict[str, Any]) -> None:
        eval_line(record)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
