"""The one training loop: a program of runs (fbl-train: one; fbl-sweep: one or many).

This is the only place that decides when to log, evaluate, checkpoint and stop: best-on-minival,
SIGTERM, resume, non-finite losses and the final record are handled here for every run, and each
run's directory gets what a run writes (config.json, class_counts.json, metrics.jsonl,
TensorBoard, checkpoints/, best/, timing, the final record). How the runs take their steps is
`runners.py`'s business.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from fbl_jax import losses
from fbl_jax.train import checkpoints, evaluation, optimizer, params_file, run_setup
from fbl_jax.train.preemption import (
    PREEMPTED_EXIT_CODE,
    Preempted,
    stop_if_requested,
    stop_requested,
    stop_scope,
)
from fbl_jax.train.runners import ProgramRunner
from fbl_jax.train.timing import SpeedWindow, WallClock
from fbl_jax.train.writers import MetricWriter, NonFiniteError, check_finite

log = logging.getLogger("fbl_jax")


def parameter_checksum(params: Any) -> float:
    """The float64 sum of every parameter: the one number a run logs at its end, so a resumed
    or multi-host run can be compared with the uninterrupted one by reading its log."""
    return sum(float(np.sum(x, dtype=np.float64)) for x in jax.tree_util.tree_leaves(params))


@dataclasses.dataclass
class Run:
    """One run of a program, and what the loop keeps for it."""

    name: str
    config: Any
    dir: pathlib.Path
    meta: dict[str, Any] = dataclasses.field(  # saved with every checkpoint
        default_factory=lambda: dict.fromkeys(
            ("best_minival", "best_step", "best_test_record", "last_test_record", "partial_train")
        )
    )
    failed: str | None = None  # why it stopped (a non-finite loss)
    last_loss: float = float("nan")
    ckpts: Any = None
    writer: Any = None


def train_program(
    runs: list[Run], timing_dir: pathlib.Path, timing_name: str = "timing.json"
) -> dict[str, dict[str, Any]]:
    """Train `runs` (one model, data and optimizer; they may differ in seed and loss) together,
    resuming from their common latest step; returns {run name: final record}. A SIGTERM at any
    point stops the call cleanly (preemption.py)."""
    with stop_scope():
        return _train_program(runs, timing_dir, timing_name)


_NOTHING_YET = "nothing trained in this call (checkpoints from earlier calls are kept)"


def _train_program(runs: list[Run], timing_dir: pathlib.Path, timing_name: str):
    config = runs[0].config  # every field a program shares is the same in all its runs
    bundle = run_setup.load_data(config)
    stop_if_requested("data loading", _NOTHING_YET)
    spe, counts = bundle.steps_per_epoch, np.asarray(bundle.class_counts)
    total_steps = config.num_epochs * spe
    run_setup.log_data(bundle, total_steps)
    for run in runs:  # every loss number checked against the real class counts, before any file
        losses.make_loss(run.config.loss, counts, run.config.num_epochs)
    model = run_setup.build_model(config, bundle.num_classes)
    lr_schedule = optimizer.make_lr_schedule(config.optimizer, spe, config.num_epochs)
    states, txs = zip(
        *[
            run_setup.init_train_state(r.config, model, bundle.image_shape, lr_schedule)
            for r in runs
        ]
    )
    states = list(states)
    stop_if_requested("model set-up", _NOTHING_YET)
    identity = run_setup.run_identity(config, bundle)
    is_chief = jax.process_index() == 0
    for run in runs:
        run.dir.mkdir(parents=True, exist_ok=True)  # only once the config and the data are good
        run.ckpts = checkpoints.Checkpoints(run.dir, run.config.keep_checkpoints)
    start, metas = checkpoints.restore_together([r.ckpts for r in runs], states, identity)
    if stop_requested():
        for run in runs:
            run.ckpts.close()
        stop_if_requested("set-up", _kept(start))
    finals = [run_setup.read_final_record(r.dir) for r in runs]
    where = runs[0].dir if len(runs) == 1 else runs[0].dir.parent
    if start >= total_steps and all(finals):
        log.info("already finished at step %d in %s; nothing to do", start, where)
        for run in runs:
            run.ckpts.close()
        return {r.name: f for r, f in zip(runs, finals)}
    if start:
        log.info("resumed %d run(s) from step %d in %s", len(runs), start, where)
    for run, meta in zip(runs, metas):
        run.meta.update({k: meta.get(k) for k in run.meta} if meta else {})
        # best/ checkpoints later than the one resumed from belong to steps about to be re-run
        run.ckpts.drop_best_after(start)
        run.writer = MetricWriter(run.dir, is_chief, total_steps)
        if is_chief:
            run_setup.write_run_files(run.dir, run.config, bundle)
            run.writer.truncate_after(start)
            failed = run_setup.read_record(run.dir, "failed")
            run.failed = failed["reason"] if failed else None
    runner = ProgramRunner([r.config for r in runs], bundle, model, txs[0], lr_schedule, states)
    timing = WallClock(
        timing_dir if is_chief else None, timing_name, [r.dir for r in runs], start,
        total_steps, config.batch_size,
    )  # fmt: skip
    return _Loop(config, bundle, runner, runs, timing, identity).run(start, total_steps)


def _kept(step: int) -> str:
    return f"the checkpoint at step {step} is kept" if step else "nothing had started"


def is_eval_epoch(config: Any, epoch: int) -> bool:
    """Whether the end of `epoch` (1-based) evaluates: every `eval_every_epochs`, and every
    epoch from `eval_every_epoch_from` on (runs saved before the field existed lack it)."""
    dense_from = config.get("eval_every_epoch_from", 0) or 0
    return epoch % config.eval_every_epochs == 0 or (0 < dense_from <= epoch)


def _next(step: int, every: int) -> int:
    return (step // every + 1) * every


class _Loop:
    def __init__(
        self, config, bundle, runner, runs: list[Run], timing: WallClock, identity
    ) -> None:
        self.config, self.bundle, self.runner, self.runs = config, bundle, runner, runs
        self.identity = identity  # saved with every checkpoint, checked on restore
        self.timing, self.spe = timing, bundle.steps_per_epoch
        self.counts = np.asarray(bundle.class_counts)
        self.single = len(runs) == 1  # one run: its own console lines, as fbl-train always gave
        self.save_every_s = 60.0 * (config.get("checkpoint_every_minutes", 0.0) or 0.0)
        self.saved_at = time.monotonic()

    def alive(self) -> list[bool]:
        return [not run.failed for run in self.runs]

    def run(self, start: int, total_steps: int) -> dict[str, dict[str, Any]]:
        config, spe, timing = self.config, self.spe, self.timing
        step, pending = start, []
        speed = SpeedWindow(step)
        with stop_scope() as stop:
            while step < total_steps:
                if stop.is_set() and step == start:  # before this call's first step
                    self._close()
                    stop_if_requested("set-up", _kept(step))
                n = min(_next(step, config.log_every_steps), _next(step, spe), total_steps) - step
                with timing.measure("train"):
                    metrics, done, compile_s = self.runner.advance(step, n, self.alive())
                pending.append(metrics)
                step += done
                if compile_s is not None:
                    timing.add("compile", compile_s)
                    timing.add("train", -compile_s)
                    log.info("compiled the train call (%d step(s)) in %.1f s", done, compile_s)
                    speed.restart(step)  # images/s counts steady-state steps only
                if step % config.log_every_steps == 0 or step == total_steps:
                    with timing.measure("train"):  # waits for the dispatched steps
                        fetched = self._check_finite(pending)
                    self._train_records(fetched, step, speed.rate(step, config.batch_size))
                    pending = []
                    speed.restart(step)
                elif stop.is_set():  # the interval's steps so far go into the checkpoint, so
                    self._keep_partial(self._check_finite(pending))  # its record is as if
                    pending = []  # uninterrupted
                if step % spe == 0:
                    with timing.measure("train"):  # never evaluate or save a diverged state
                        fetched = self._check_finite(pending)
                    if pending:  # an epoch's end inside a log interval: its steps so far go
                        self._keep_partial(fetched)  # into the epoch's checkpoint, so a run
                        pending = []  # killed after it resumes to the uninterrupted records
                    self._epoch_end(step, total_steps)
                    speed.restart(step)
                # at a log step the records are flushed and nothing is partial: a clean resume
                if (
                    step % config.log_every_steps == 0
                    and step < total_steps
                    and self._minutes_due()
                ):
                    self._save_all(step)
                    speed.restart(step)
                if stop.is_set() and step < total_steps:
                    self._save_all(step)
                    timing.write(step, "stopped")
                    self._close()
                    log.warning("SIGTERM: checkpoint written at step %d; restart to resume", step)
                    raise Preempted(PREEMPTED_EXIT_CODE)
        finals = {run.name: self._final(r, total_steps) for r, run in enumerate(self.runs)}
        timing.write(total_steps, "finished")
        log.info("wall time: %s", timing.summary())
        self._close()
        return finals

    def _check_finite(self, pending: list) -> list:
        """Fetch the metrics; a run whose loss went NaN/inf gets a `failed` record and stops,
        the others go on. Raises NonFiniteError, naming the step, once no run is left."""
        fetched = jax.device_get(pending)
        for r, run in enumerate(self.runs):
            for m in fetched if not run.failed else []:
                values, steps_ = m[r]["loss"][0], m[r]["step"][0]
                bad = np.flatnonzero(~np.isfinite(values))
                if bad.size:
                    value, at = float(values[bad[0]]), int(steps_[bad[0]])
                    run.failed = f"loss is {value} at step {at}"
                    run.writer.write({"type": "failed", "step": at, "reason": run.failed})
                    if self.single:
                        check_finite("loss", value, at)  # raises, with what to do about it
                    log.error("run %s stopped: %s; the others go on", run.name, run.failed)
                    break
        if all(run.failed for run in self.runs):
            raise NonFiniteError(
                "every run diverged: " + "; ".join(f"{r.name}: {r.failed}" for r in self.runs)
            )
        return fetched

    def _interval(self, r: int, fetched: list) -> dict[str, np.ndarray]:
        """Run r's per-call loss, accuracy and step counts since its last train record."""
        ms = [m[r] for m in fetched]
        # a while-loop call's entry is the mean of `count` steps; a scanned call's, one step
        out = {k: np.concatenate([m[k][0] for m in ms]) for k in ("loss", "train_top1")}
        out["count"] = np.concatenate([m.get("count", np.ones_like(m["loss"]))[0] for m in ms])
        kept = self.runs[r].meta["partial_train"]  # steps before a SIGTERM in this interval
        if kept:
            out = {k: np.concatenate([np.asarray(kept[k], v.dtype), v]) for k, v in out.items()}
        return out

    def _keep_partial(self, fetched: list) -> None:
        for r, run in enumerate(self.runs):
            if not run.failed:
                interval = self._interval(r, fetched)
                run.meta["partial_train"] = {k: v.tolist() for k, v in interval.items()}

    def _train_records(self, fetched: list, step: int, rate: float | None) -> None:
        for r, run in enumerate(self.runs):
            if run.failed:
                continue
            ms = [m[r] for m in fetched]
            v = self._interval(r, fetched)
            run.meta["partial_train"] = None
            mean = {k: float(np.sum(v[k] * v["count"]) / np.sum(v["count"]))
                    for k in ("loss", "train_top1")}  # fmt: skip
            record = {"type": "train", "step": step, "epoch": step / self.spe, **mean}
            record.update(lr=float(ms[-1]["lr"][0][-1]), alpha=float(ms[-1]["alpha"][0][-1]))
            record["images_per_s"] = rate  # per run; the program's is rate × live runs
            run.last_loss = record["loss"]
            run.writer.write(record)
            if self.single:
                run.writer.train_line(record)
        if not self.single:
            live = [run.last_loss for run in self.runs if not run.failed]
            log.info(
                "step %d | %d/%d runs alive | loss median %.4f | %s img/s (all runs)",
                step,
                len(live),
                len(self.runs),
                float(np.median(live)),
                "-" if rate is None else f"{rate * len(live):.0f}",
            )

    def _epoch_end(self, step: int, total_steps: int) -> None:
        epoch = step // self.spe
        if is_eval_epoch(self.config, epoch) or step == total_steps:
            with self.timing.measure("eval"):
                alive = self.alive()
                by_split = {s: self.runner.evaluate(s, alive) for s in self.bundle.eval_splits}
            for r, run in enumerate(self.runs):
                if not run.failed:
                    self._eval_records(r, run, step, {s: v[r] for s, v in by_split.items()})
            tops = [100 * r.meta["last_test_record"]["top1"] for r in self.runs
                    if not r.failed and r.meta["last_test_record"]]  # fmt: skip
            if not self.single and tops:
                log.info(
                    "eval @ epoch %d: test top-1 over %d runs: min %.2f, median %.2f, max %.2f",
                    epoch, len(tops), min(tops), float(np.median(tops)), max(tops),
                )  # fmt: skip
        if epoch % self.config.checkpoint_every_epochs == 0 or step == total_steps:
            self._save_all(step)

    def _eval_records(self, r: int, run: Run, step: int, stats: dict[str, Any]) -> None:
        records = {}
        for split, split_stats in stats.items():
            record = {"type": "eval", "step": step, "epoch": step / self.spe, "split": split}
            record.update(evaluation.metrics_from_stats(split_stats, self.counts))
            run.writer.write(record)
            if self.single:
                run.writer.eval_line(record)
            records[split] = record
        run.meta["last_test_record"] = records.get("test")
        minival = records.get("minival")
        best = run.meta["best_minival"]
        if minival is not None and (best is None or minival["balanced_top1"] > best):
            run.meta.update(best_minival=minival["balanced_top1"], best_step=step)
            run.meta["best_test_record"] = records.get("test")
            with self.timing.measure("checkpoint"):
                self._save(r, step, best=True)

    def _save(self, r: int, step: int, best: bool = False) -> None:
        """Nothing for a stopped run; a step saved already is kept (Checkpoints.save)."""
        run = self.runs[r]
        if not run.failed:
            meta = {**self.identity, **run.meta, "step": step}
            run.ckpts.save(self.runner.host_state(r), meta, best=best)

    def _minutes_due(self) -> bool:
        """Whether `checkpoint_every_minutes` have passed since the last checkpoint; process 0's
        clock decides for every host, since orbax saves only when all of them do."""
        if not self.save_every_s:
            return False
        due = time.monotonic() - self.saved_at >= self.save_every_s
        if jax.process_count() > 1:
            due = bool(multihost_utils.broadcast_one_to_all(np.int32(due)))
        return due

    def _save_all(self, step: int) -> None:
        with self.timing.measure("checkpoint"):
            for r in range(len(self.runs)):
                self._save(r, step)
        self.timing.write(step)  # a kill loses at most the time since this checkpoint
        self.saved_at = time.monotonic()

    def _final(self, r: int, total_steps: int) -> dict[str, Any]:
        run = self.runs[r]
        final = {"type": "final", "step": total_steps, "last": run.meta["last_test_record"]}
        final.update(best_on_minival=run.meta["best_test_record"], best_step=run.meta["best_step"])
        if run.failed:
            final["failed"] = run.failed
        run.writer.write(final)
        who = "" if self.single else f"{run.name}: "
        if not run.failed:
            host = self.runner.host_state(r)
            params = host.params
            if jax.process_count() > 1:
                multihost_utils.assert_equal(params, "parameters differ across processes")
            if jax.process_index() == 0:  # the trained model, for use beyond this directory
                params_file.save_params(run.dir / params_file.FILE_NAME, params, host.batch_stats)
            log.info("%sparameter checksum %.12e", who, parameter_checksum(params))
        last, best = final["last"] or {}, final["best_on_minival"] or {}
        log.info(
            "%sdone: test top-1 last %s, best-on-minival %s (step %s)%s",
            who,
            f"{100 * last['top1']:.2f}" if last else "n/a",
            f"{100 * best['top1']:.2f}" if best else "n/a",
            final["best_step"],
            f" (FAILED: {run.failed})" if run.failed else "",
        )
        return final

    def _close(self) -> None:
        for run in self.runs:
            run.ckpts.close()
            run.writer.close()
