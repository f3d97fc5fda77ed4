"""train_sweep: many runs in one compiled program, each written as an ordinary run directory.

The runs of a program share the data on the device, the model and the optimizer; their train
states (params, batch statistics, optimizer state, step) are stacked on a leading run axis and
the single-run train step (`train_steps.make_train_step`) is vmapped over it, with each run's
loss arrays (`sweep_loss`) and data seed. BatchNorm statistics stay per run. A run's directory
holds what fbl-train writes (config.json, metrics.jsonl, TensorBoard, checkpoints/, best/, the
final record), so fbl-report and fbl-decouple read it unchanged. A run whose loss goes
non-finite is stopped (a `failed` record in its metrics.jsonl) while the others go on.
"""

from __future__ import annotations

import functools
import json
import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import flax
import jax
import numpy as np

from fbl_jax import defaults
from fbl_jax.defaults import ConfigError
from fbl_jax.losses import program as sweep_loss
from fbl_jax.train import bbn
from fbl_jax.train import checkpoints as checkpointing
from fbl_jax.train import evaluation as evaluate
from fbl_jax.train import optimizer as optim
from fbl_jax.train import steps as train_steps
from fbl_jax.train.programs import Program, SweepRun, differences, expand, group_programs
from fbl_jax.train.timing import SpeedWindow, WallClock
from fbl_jax.train.trainer import (
    PREEMPTED_EXIT_CODE,
    Preempted,
    build_model,
    check_devices,
    init_train_state,
    load_data,
    read_final_record,
    run_identity,
    sigterm_flag,
)
from fbl_jax.train.writers import MetricWriter, NonFiniteError

log = logging.getLogger("fbl_jax")


def train_sweep(
    base_config: Any, sets: Sequence[tuple[str, list[Any]]], workdir: str | pathlib.Path
) -> dict[str, dict[str, Any]]:
    """Train every combination of `sets` over `base_config`; returns {run name: final record}."""
    workdir = pathlib.Path(workdir)
    runs = expand(base_config, sets)
    programs = group_programs(runs)
    for run in runs:
        defaults.check_data_paths(run.config.data)
        check_devices(run.config.batch_size)
        check_devices(run.config.eval_batch_size, "config.eval_batch_size")
        if run.config.data.pipeline != "device":
            raise ConfigError(
                "fbl-sweep trains on the on-device pipeline: set config.data.pipeline='device' "
                "(the tf pipeline runs one configuration at a time, with fbl-train)"
            )
    why = differences(programs)
    log.info(
        "%d run(s) in %d program(s)%s",
        len(runs),
        len(programs),
        f"; the programs differ in {', '.join(why)}" if why else "",
    )
    spec = {
        "sets": [[k, v] for k, v in sets],
        "runs": [{"name": r.name, "settings": r.settings} for r in runs],
        "programs": [[r.name for r in p.runs] for p in programs],
    }
    _check_spec(workdir, spec)
    finals = {}
    for program in programs:
        finals.update(train_program(program, workdir))
    return finals


def _check_spec(workdir: pathlib.Path, spec: dict[str, Any]) -> None:
    """The workdir names the sweep: a restart resumes it, another sweep there is an error."""
    path = workdir / "sweep.json"
    text = json.dumps(spec, indent=1, default=list)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("runs") != json.loads(text)["runs"]:
            raise ConfigError(
                f"{workdir} holds another sweep (its sweep.json lists other runs); use a new "
                "--workdir, or the same --set values to resume it"
            )
        return
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        path.write_text(text + "\n")


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *trees)


def _take(tree: Any, r: int) -> Any:
    return jax.tree_util.tree_map(lambda x: x[r], tree)


class _RunIO:
    """One run's directory: writer, checkpoints, best-on-minival bookkeeping."""

    def __init__(self, run: SweepRun, root: pathlib.Path, identity: dict, is_chief: bool):
        self.run = run
        self.dir = root / run.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.identity = identity
        self.ckpts = checkpointing.Checkpoints(self.dir, run.config.keep_checkpoints)
        self.meta: dict[str, Any] = dict.fromkeys(
            ("best_minival", "best_step", "best_test_record", "last_test_record")
        )
        self.is_chief = is_chief
        self.writer: MetricWriter | None = None
        self.failed: str | None = None
        self.last_loss = float("nan")

    def save(self, state: Any, step: int, best: bool = False) -> None:
        """Nothing for a stopped run; a step saved already is kept (Checkpoints.save)."""
        if not self.failed:
            self.ckpts.save(state, {**self.identity, **self.meta, "step": step}, best=best)


def train_program(program: Program, root: pathlib.Path) -> dict[str, dict[str, Any]]:
    """Train the runs of one program together, resuming from their common latest step."""
    configs = [r.config for r in program.runs]
    config = configs[0]  # every field a program shares is the same in all its runs
    names = [r.name for r in program.runs]
    log.info("program %d: %d run(s): %s", program.index, len(names), ", ".join(names))
    bundle = load_data(config)
    spe = bundle.steps_per_epoch
    total_steps = config.num_epochs * spe
    counts = np.asarray(bundle.class_counts)
    model = build_model(config, bundle.num_classes)
    lr_schedule = optim.make_lr_schedule(config.optimizer, spe, config.num_epochs)
    hypers = []
    for c in configs:
        h = sweep_loss.run_hypers(c.loss, counts, c.num_epochs)
        h["seed"] = np.int32(c.seed)
        hypers.append(h)
    states, tx = [], None
    for c in configs:  # as fbl-train initialises each seed
        state, tx = init_train_state(c, model, bundle.image_shape, lr_schedule)
        states.append(state)
    identity = run_identity(config, bundle)
    is_chief = jax.process_index() == 0
    ios = [_RunIO(r, root, identity, is_chief) for r in program.runs]
    start = _restore(ios, states)
    if start >= total_steps and all(read_final_record(io.dir) for io in ios):
        log.info("program %d already finished at step %d", program.index, start)
        for io in ios:
            io.ckpts.close()
        return {io.run.name: read_final_record(io.dir) for io in ios}
    for io in ios:
        io.ckpts.drop_best_after(start)
        io.writer = MetricWriter(io.dir, is_chief, total_steps)
        if is_chief:
            (io.dir / "config.json").write_text(
                json.dumps(io.run.config.to_dict(), indent=2, default=list)
            )
            (io.dir / "class_counts.json").write_text(
                json.dumps({"counts": counts.tolist(), "class_names": list(bundle.class_names)})
            )
            io.writer.truncate_after(start)
            failed = _failed_record(io.dir)
            if failed is not None:
                io.failed = failed["reason"]
    loop = _ProgramLoop(config, bundle, model, tx, lr_schedule, hypers, ios, root, program)
    return loop.run(_stack(states), start, total_steps)


def _restore(ios: list[_RunIO], states: list[Any]) -> int:
    """Each run's state at the latest step ALL runs have saved (saves happen in lockstep; a
    kill in the middle of one round leaves some runs a round ahead)."""
    latest = [io.ckpts.latest_step() for io in ios]
    if all(s is None for s in latest):
        return 0
    # a run without any checkpoint (a kill inside the first round) sends every run back to 0
    common = 0 if any(s is None for s in latest) else min(latest)
    for r, io in enumerate(ios):
        restored = io.ckpts.restore_latest(states[r], io.identity, at_most=common)
        if restored is None:
            step = 0
        else:
            states[r], saved_meta = restored
            io.meta.update({k: saved_meta.get(k) for k in io.meta})
            step = int(states[r].step)
        latest[r] = step
    if len(set(latest)) > 1:  # e.g. a run's newest checkpoint was unreadable: start together
        low = min(latest)
        raise RuntimeError(
            f"the runs resumed at different steps {dict(zip([io.run.name for io in ios], latest))};"
            f" remove the checkpoints after step {low} of the runs ahead, or start a new sweep"
        )
    if latest[0]:
        log.info("resumed %d run(s) from step %d", len(ios), latest[0])
    return latest[0]


def _failed_record(run_dir: pathlib.Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("type") == "failed":
            return record
    return None


class _ProgramLoop:
    """The train/eval/checkpoint loop of one program (train.py's loop, over a run axis)."""

    def __init__(self, config, bundle, model, tx, lr_schedule, hypers, ios, root, program):
        self.config, self.bundle, self.ios = config, bundle, ios
        self.spe = bundle.steps_per_epoch
        self.counts = np.asarray(bundle.class_counts)
        self.k = defaults.resolve_steps_per_call(config, jax.default_backend())
        self.run_axis = resolve_run_axis(config.sweep_run_axis, jax.default_backend())
        if self.run_axis == "unroll" and config.steps_per_call == 0 and len(ios) > 1:
            self.k = 1  # R runs per call already amortise the dispatch; R×k copies compile slowly
        pipeline = bundle.train
        vstep = make_sweep_step(
            model,
            tx,
            lr_schedule,
            self.spe,
            pipeline,
            config.num_epochs,
            bbn.alpha_fn_for(config),
            self.run_axis,
        )

        def multi(states, data, h):
            return train_steps.make_multi_step(lambda s, d: vstep(s, d, h), self.k)(states, data)

        self.p_step = jax.pmap(vstep, axis_name=train_steps.AXIS, donate_argnums=(0,))
        self.p_multi = (
            jax.pmap(multi, axis_name=train_steps.AXIS, donate_argnums=(0,)) if self.k > 1 else None
        )

        def loop(states, data, h, n):
            return train_steps.make_loop_steps(lambda s, d: vstep(s, d, h))(states, data, n)

        self.p_loop = (
            jax.pmap(loop, axis_name=train_steps.AXIS, in_axes=(0, 0, 0, None), donate_argnums=(0,))
            if self.k == defaults.LOOP
            else None
        )
        eval_fn = train_steps.make_eval_step(model, bundle.num_classes)
        self.evaluate = train_steps.Evaluator(
            jax.vmap(eval_fn, in_axes=(0, 0, None)),
            bundle.eval_iter,
            defaults.resolve_eval_in_one_call(config, jax.default_backend()),
        )
        self.device_data = flax.jax_utils.replicate(pipeline.device_data())
        self.hypers = flax.jax_utils.replicate(sweep_loss.stack_hypers(hypers))
        self.timing = WallClock(root, f"timing_program{program.index}.json")
        self._warm: set = set()

    def _call(self, p_state, n: int):
        args = (p_state, self.device_data, self.hypers)
        if self.p_loop is not None:
            fn, k, args = self.p_loop, n, (*args, n)
        elif self.p_multi is not None and n >= self.k:
            fn, k = self.p_multi, self.k
        else:
            fn, k = self.p_step, 1
        first = fn not in self._warm
        with self.timing.measure("compile" if first else "train"):
            p_state, metrics = fn(*args)
            if first:  # wait, so the compile (and this call) is timed apart from training
                jax.block_until_ready(metrics)
        if k == 1 and fn is not self.p_loop:  # (devices, R) → (devices, 1, R), as a scan's
            metrics = jax.tree_util.tree_map(lambda x: x[:, None], metrics)
        self._warm.add(fn)
        return p_state, metrics, k, first

    def run(self, p_state_host: Any, start: int, total_steps: int) -> dict[str, dict]:
        config, spe, ios = self.config, self.spe, self.ios
        p_state = flax.jax_utils.replicate(p_state_host)
        step, pending = start, []
        speed = SpeedWindow(step)
        n_runs = len(ios)
        with sigterm_flag() as stop:
            while step < total_steps:
                nxt = min(_next(step, config.log_every_steps), _next(step, spe), total_steps)
                p_state, metrics, done, compiled = self._call(p_state, nxt - step)
                pending.append(metrics)
                step += done
                if compiled:
                    log.info("compiled the sweep's train call (%d step(s), %d runs)", done, n_runs)
                    speed.restart(step)
                if step % config.log_every_steps == 0 or step == total_steps or stop.is_set():
                    with self.timing.measure("train"):  # waits for the dispatched steps
                        self._train_records(pending, step)
                    rate = speed.rate(step, config.batch_size * n_runs)
                    pending = []
                    losses_now = [io.last_loss for io in ios if not io.failed]
                    log.info(
                        "step %d/%d | %d/%d runs alive | loss median %.4f | %s img/s (all runs)",
                        step,
                        total_steps,
                        len(losses_now),
                        n_runs,
                        float(np.median(losses_now)) if losses_now else float("nan"),
                        "-" if rate is None else f"{rate:.0f}",
                    )
                    speed.restart(step)
                if step % spe == 0:
                    with self.timing.measure("train"):  # waits for the dispatched steps
                        self._check_finite(jax.device_get(pending))
                    self._epoch_end(p_state, step, total_steps)
                    speed.restart(step)
                if stop.is_set() and step < total_steps:
                    self._save_all(p_state, step)
                    self._close()
                    log.warning("SIGTERM: checkpoints written at step %d; restart to resume", step)
                    raise Preempted(PREEMPTED_EXIT_CODE)
        finals = {}
        for io in ios:
            final = {
                "type": "final",
                "step": total_steps,
                "last": io.meta["last_test_record"],
                "best_on_minival": io.meta["best_test_record"],
                "best_step": io.meta["best_step"],
            }
            if io.failed:
                final["failed"] = io.failed
            io.writer.write(final)
            finals[io.run.name] = final
            last = final["last"] or {}
            log.info(
                "done %s: test top-1 last %s%s",
                io.run.name,
                f"{100 * last['top1']:.2f}" if last else "n/a",
                f" (FAILED: {io.failed})" if io.failed else "",
            )
        self.timing.write()
        log.info("wall time: %s", self.timing.summary())
        self._close()
        return finals

    def _check_finite(self, fetched: list) -> None:
        """Mark runs whose loss went NaN/inf (in the fetched metrics); they stop writing, the
        others go on."""
        for r, io in enumerate(self.ios):
            if io.failed:
                continue
            for m in fetched:
                values, steps = m["loss"][0][:, r], m["step"][0][:, r]
                bad = ~np.isfinite(values)
                if bad.any():
                    s = int(steps[np.argmax(bad)])
                    io.failed = f"loss is {values[np.argmax(bad)]} at step {s}"
                    io.writer.write({"type": "failed", "step": s, "reason": io.failed})
                    log.error("run %s stopped: %s; the other runs go on", io.run.name, io.failed)
                    break
        if all(io.failed for io in self.ios):
            raise NonFiniteError(
                "every run of the sweep diverged: "
                + "; ".join(f"{io.run.name}: {io.failed}" for io in self.ios)
            )

    def _train_records(self, pending: list, step: int) -> None:
        fetched = jax.device_get(pending)
        self._check_finite(fetched)
        for r, io in enumerate(self.ios):
            if io.failed:
                continue
            loss = np.concatenate([m["loss"][0][:, r] for m in fetched])
            top1 = np.concatenate([m["train_top1"][0][:, r] for m in fetched])
            count = np.concatenate(
                [m.get("count", np.ones_like(m["loss"]))[0][:, r] for m in fetched]
            )
            record = {
                "type": "train",
                "step": step,
                "epoch": step / self.spe,
                "loss": float(np.sum(loss * count) / np.sum(count)),
                "train_top1": float(np.sum(top1 * count) / np.sum(count)),
                "lr": float(fetched[-1]["lr"][0][-1, r]),
                "alpha": float(fetched[-1]["alpha"][0][-1, r]),
            }
            io.last_loss = record["loss"]
            io.writer.write(record)

    def _epoch_end(self, p_state, step: int, total_steps: int) -> None:
        config = self.config
        epoch = step // self.spe
        host_state = None
        if epoch % config.eval_every_epochs == 0 or step == total_steps:
            with self.timing.measure("eval"):
                by_split = {}
                for split in self.bundle.eval_splits:
                    by_split[split] = self.evaluate(split, p_state.params, p_state.batch_stats)
            for r, io in enumerate(self.ios):
                if io.failed:
                    continue
                records = {}
                for split, stats in by_split.items():
                    record = {"type": "eval", "step": step, "epoch": step / self.spe}
                    record["split"] = split
                    record.update(evaluate.metrics_from_stats(_take(stats, r), self.counts))
                    io.writer.write(record)
                    records[split] = record
                io.meta["last_test_record"] = records.get("test")
                minival = records.get("minival")
                if minival is not None and (
                    io.meta["best_minival"] is None
                    or minival["balanced_top1"] > io.meta["best_minival"]
                ):
                    io.meta.update(best_minival=minival["balanced_top1"], best_step=step)
                    io.meta["best_test_record"] = records.get("test")
                    if host_state is None:
                        host_state = self._host_state(p_state)
                    with self.timing.measure("checkpoint"):
                        io.save(_take(host_state, r), step, best=True)
            tops = [
                100 * io.meta["last_test_record"]["top1"]
                for io in self.ios
                if not io.failed and io.meta["last_test_record"]
            ]
            if tops:
                log.info(
                    "eval @ epoch %d: test top-1 over %d runs: min %.2f, median %.2f, max %.2f",
                    epoch,
                    len(tops),
                    min(tops),
                    float(np.median(tops)),
                    max(tops),
                )
        if epoch % config.checkpoint_every_epochs == 0 or step == total_steps:
            self._save_all(p_state, step, host_state)

    def _host_state(self, p_state) -> Any:
        return jax.device_get(flax.jax_utils.unreplicate(p_state))

    def _save_all(self, p_state, step: int, host_state: Any = None) -> None:
        with self.timing.measure("checkpoint"):
            host_state = self._host_state(p_state) if host_state is None else host_state
            for r, io in enumerate(self.ios):
                io.save(_take(host_state, r), step)

    def _close(self) -> None:
        for io in self.ios:
            io.ckpts.close()
            if io.writer is not None:
                io.writer.close()


RUN_AXES = ("vmap", "unroll")


def resolve_run_axis(setting: str, backend: str) -> str:
    """`auto`: vmap on accelerators (R small convolutions become one batched one), unroll on
    the CPU, whose batched (grouped) convolutions ran 4 runs 2.4x slower than one (BENCHMARKS.md)."""
    if setting == "auto":
        return "unroll" if backend == "cpu" else "vmap"
    if setting not in RUN_AXES:
        raise ConfigError(f"config.sweep_run_axis={setting!r} is not one of auto, vmap, unroll")
    return setting


def make_sweep_step(
    model: Any,
    tx: Any,
    lr_schedule: Any,
    spe: int,
    pipeline: Any,
    num_epochs: int,
    bbn_alpha: Any = None,
    run_axis: str = "vmap",
) -> Any:
    """(stacked states, device data, stacked loss arrays) → (states, metrics (R,) each): the
    single-run train step over a run axis, each run with its own data seed and loss arrays;
    `run_axis` "vmap" batches the runs, "unroll" traces each run's step in turn."""

    def run_step(state, data, h):
        def make_batch(d, step):
            return pipeline.batch(d, step, jax.lax.axis_index(train_steps.AXIS), h["seed"])

        loss_fn = functools.partial(sweep_loss.sweep_loss, h=h, num_epochs=num_epochs)
        step_fn = train_steps.make_train_step(
            model, loss_fn, tx, lr_schedule, spe, make_batch, bbn_alpha=bbn_alpha
        )
        return step_fn(state, data)

    if run_axis == "vmap":
        return jax.vmap(run_step, in_axes=(0, None, 0))

    def unrolled(states, data, hs):
        n = jax.tree_util.tree_leaves(hs)[0].shape[0]
        outs = [run_step(_take(states, r), data, _take(hs, r)) for r in range(n)]
        return jax.tree_util.tree_map(lambda *xs: jax.numpy.stack(xs), *outs)

    return unrolled


def _next(step: int, every: int) -> int:
    return (step // every + 1) * every
