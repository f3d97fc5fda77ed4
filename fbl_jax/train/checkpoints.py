"""Orbax checkpoints: the latest K for resuming, plus the best-on-minival for later use.

The data position is a pure function of (seed, step), so a checkpoint is the state and its step.
A checkpoint that cannot be read is moved aside and the previous one is used; a checkpoint made
for another model or class count is an error, never a silent re-initialisation. A save that a
kill interrupted leaves an orbax temporary folder: it is removed, with a log line, on the next
start, and best/ checkpoints newer than the step resumed from are dropped (those steps re-run).
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

# Meta keys that must agree between a checkpoint and the run that restores it.
IDENTITY_KEYS = ("model", "head", "num_classes", "class_counts", "image_shape")
TMP_MARKER = ".orbax-checkpoint-tmp"  # orbax writes STEP.orbax-checkpoint-tmp-N, then renames


class CheckpointMismatchError(ValueError):
    """The workdir holds a checkpoint of a different run (model, classes or data)."""


class Checkpoints:
    """`WORKDIR/checkpoints` (latest `keep` steps) and `WORKDIR/best` (best on the minival)."""

    def __init__(self, workdir: str | pathlib.Path, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
        # orbax (tensorstore's OCDBT) needs an absolute path; `--workdir=runs/x` is relative
        self.workdir = pathlib.Path(workdir).absolute()
        self.keep = keep
        self._remove_temporary()
        self._latest = self._manager("checkpoints", keep)
        self._best = self._manager("best", 1)

    def _manager(self, name: str, keep: int) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        return ocp.CheckpointManager(self.workdir / name, options=options)

    def save(self, state: Any, meta: dict[str, Any], best: bool = False) -> None:
        """Save on every process (orbax coordinates hosts); `state` is host-local, unreplicated."""
        step = int(meta["step"])
        manager = self._best if best else self._latest
        if step in manager.all_steps():
            # a restart re-running steps it had saved; the run is deterministic, keep that one
            log.info(
                "%s checkpoint for step %d already exists; kept", "best" if best else "a", step
            )
            return
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(serialization.to_state_dict(jax.device_get(state))),
            meta=ocp.args.JsonSave(meta),
        )
        manager.save(step, args=args, force=True)
        manager.wait_until_finished()

    def drop_best_after(self, step: int) -> None:
        """Delete best/ checkpoints later than `step`: the resumed run will make them again."""
        for best_step in self._best.all_steps():
            if best_step > step:
                log.warning(
                    "best/ holds step %d, after the resumed step %d (a kill between the two "
                    "saves); removed, the re-run steps will choose again",
                    best_step,
                    step,
                )
                self._best.delete(best_step)

    def _remove_temporary(self) -> None:
        if jax.process_index() == 0:
            for name in ("checkpoints", "best"):
                folder = self.workdir / name
                if not folder.is_dir():
                    continue
                for entry in sorted(folder.iterdir()):
                    if TMP_MARKER in entry.name:
                        log.warning("removing %s: a checkpoint whose save was interrupted", entry)
                        shutil.rmtree(entry, ignore_errors=True)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("fbl_jax_remove_temporary")

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def restore_latest(
        self, template: Any, identity: dict[str, Any], at_most: int | None = None
    ) -> tuple[Any, dict] | None:
        """Restore the newest readable checkpoint into `template`'s structure, or None if none.

        Unreadable checkpoints are reported and moved to `WORKDIR/corrupt_checkpoints/`.
        `at_most`: ignore later steps (a sweep resumes all its runs at one step).
        """
        steps = sorted(self._latest.all_steps(), reverse=True)
        if at_most is not None:
            steps = [s for s in steps if s <= at_most]
        for step in steps:
            try:
                restored = self._latest.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(None), meta=ocp.args.JsonRestore()
                    ),
                )
            except Exception as err:  # orbax raises many kinds for damaged files
                log.error(
                    "checkpoint at step %d in %s is unreadable (%s: %s); using the previous one",
                    step,
                    self.workdir / "checkpoints",
                    type(err).__name__,
                    str(err)[:300],
                )
                self._move_aside(step)
                continue
            meta = dict(restored["meta"])
            check_identity(meta, identity, self.workdir)
            state = serialization.from_state_dict(template, _to_numpy(restored["state"]))
            return state, meta
        if steps:
            raise RuntimeError(
                f"none of the checkpoints {steps} in {self.workdir / 'checkpoints'} could be read "
                "(see the errors above); move that folder away to start afresh"
            )
        return None

    def restore_best(self, template: Any) -> tuple[Any, dict]:
        step = self._best.latest_step()
        if step is None:
            raise FileNotFoundError(f"no best-on-minival checkpoint in {self.workdir / 'best'}")
        restored = self._best.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(None), meta=ocp.args.JsonRestore()
            ),
        )
        state = serialization.from_state_dict(template, _to_numpy(restored["state"]))
        return state, dict(restored["meta"])

    def _move_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            src = self.workdir / "checkpoints" / str(step)
            dst_root = self.workdir / "corrupt_checkpoints"
            dst_root.mkdir(exist_ok=True)
            if src.exists():
                shutil.move(str(src), str(dst_root / f"{step}.{int(time.time())}"))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"fbl_jax_move_aside_{step}")
        self._latest = self._manager("checkpoints", self.keep)

    def close(self) -> None:
        self._latest.close()
        self._best.close()


def restore_together(
    ckpts: list[Checkpoints], states: list[Any], identity: dict[str, Any]
) -> tuple[int, list[dict | None]]:
    """(step, metas): the runs of a program restored at the latest step ALL of them saved.

    Saves happen in lockstep, but a kill in the middle of a round leaves some runs a round
    ahead; a run with no checkpoint at all sends every run back to step 0. `states` is updated
    in place; a run started afresh has meta None.
    """
    latest = [c.latest_step() for c in ckpts]
    metas: list[dict | None] = [None] * len(ckpts)
    if all(s is None for s in latest):
        return 0, metas
    common = 0 if any(s is None for s in latest) else min(latest)
    for r, c in enumerate(ckpts):
        restored = c.restore_latest(states[r], identity, at_most=common)
        if restored is not None:
            states[r], metas[r] = restored
        latest[r] = int(states[r].step)
    if len(set(latest)) > 1:  # e.g. a run's newest checkpoint was unreadable
        raise RuntimeError(
            f"the runs resumed at different steps {latest} ({[str(c.workdir) for c in ckpts]});"
            f" remove the checkpoints after step {min(latest)} of the runs ahead, or start anew"
        )
    return latest[0], metas


def check_identity(meta: dict[str, Any], identity: dict[str, Any], workdir: pathlib.Path) -> None:
    diffs = [
        f"{key}: checkpoint has {meta.get(key)!r}, config gives {identity.get(key)!r}"
        for key in IDENTITY_KEYS
        if key in identity and _norm(meta.get(key)) != _norm(identity.get(key))
    ]
    if diffs:
        raise CheckpointMismatchError(
            f"the checkpoint in {workdir} was made by a different run: "
            + "; ".join(d[:200] for d in diffs)
            + ". Use a new --workdir for a different experiment."
        )


def _norm(value: Any) -> Any:
    if isinstance(value, list | tuple | np.ndarray):
        return [_norm(v) for v in list(value)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _to_numpy(tree: Any) -> Any:
    return jax.tree_util.tree_map(np.asarray, tree)
