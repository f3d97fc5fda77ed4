"""How the runs of one program take their steps: each its own compiled call, or vmapped.

"sequential" gives every run its own state and calls the single-run step, compiled once per loss
setting (the data seed is an argument, so seeds share it): a run of a sweep then computes
exactly what fbl-train computes for it, bit for bit. A program of one run always steps so, and a
sweep does on the CPU, where batched (grouped) convolutions ran four runs 2.4x slower than one
(BENCHMARKS.md). "vmap" stacks the states on a leading run axis and vmaps the step over it, each
run with its own loss coefficients (`losses.program_loss`) and data seed: R small convolutions
become one batched one on accelerators; rounding may differ from a single run's.

Either way the loop gets per-run metrics shaped (devices, steps) per key, per-run evaluation
statistics and per-run host states for checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from fbl_jax import defaults, losses
from fbl_jax.defaults import ConfigError
from fbl_jax.train import bbn, replication, steps

log = logging.getLogger("fbl_jax")

RUN_AXES = ("auto", "vmap", "sequential")


def resolve_run_axis(setting: str, backend: str, num_runs: int) -> str:
    """`auto`: one run, or the CPU → sequential; several runs on accelerators → vmap."""
    defaults.check_choice("config.sweep_run_axis", setting, RUN_AXES)
    if setting == "auto":
        return "sequential" if num_runs == 1 or backend == "cpu" else "vmap"
    return setting


def _take(tree: Any, r: int) -> Any:
    return jax.tree_util.tree_map(lambda x: x[r], tree)


@dataclasses.dataclass
class _Group:
    """Runs that share one compiled call: one run, or (stacked) several on a run axis."""

    runs: list[int]
    stacked: bool
    state: Any
    data: Any
    calls: dict[str, Any]


class ProgramRunner:
    def __init__(self, configs, bundle, model, tx, lr_schedule, states) -> None:
        config = configs[0]
        backend = jax.default_backend()
        self.axis = resolve_run_axis(config.sweep_run_axis, backend, len(configs))
        self.device_pipeline = bundle.pipeline == "device"
        if not self.device_pipeline and len(configs) > 1:
            raise ConfigError(
                "several runs in one program need config.data.pipeline='device' (the tf "
                "pipeline trains one configuration at a time, with fbl-train)"
            )
        self.bundle = bundle
        self.k = defaults.resolve_steps_per_call(config, backend)
        counts = np.asarray(bundle.class_counts)
        device_data = bundle.train.device_data() if self.device_pipeline else None
        make_step = functools.partial(
            steps.make_train_step,
            model,
            tx=tx,
            lr_schedule=lr_schedule,
            steps_per_epoch=bundle.steps_per_epoch,
            bbn_alpha=bbn.alpha_fn_for(config),
        )
        eval_fn = steps.make_eval_step(model, bundle.num_classes)
        if self.axis == "vmap":
            coeffs = [
                {**losses.program_coefficients(c.loss, counts, c.num_epochs), "seed": c.seed}
                for c in configs
            ]
            stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *states)
            data = (device_data, losses.stack_coefficients(coeffs))
            self.groups = [
                _Group(
                    list(range(len(configs))), True, stacked, data, self._vmapped(make_step, config)
                )
            ]
            eval_fn = jax.vmap(eval_fn, in_axes=(0, 0, None))
        else:
            self.groups, by_loss = [], {}
            for r, c in enumerate(configs):  # runs with one loss setting share a compiled call
                key = json.dumps([c.loss.to_dict(), c.num_epochs], sort_keys=True, default=list)
                if key not in by_loss:
                    loss_fn = losses.make_loss(c.loss, counts, c.num_epochs)
                    by_loss[key] = self._single(make_step, loss_fn)
                data = (device_data, np.int32(c.seed)) if self.device_pipeline else None
                self.groups.append(_Group([r], False, states[r], data, by_loss[key]))
        for g in self.groups:
            g.state = replication.replicate(g.state)
            g.data = replication.replicate(g.data)
        self.evaluator = steps.Evaluator(
            eval_fn, bundle.eval_iter, defaults.resolve_eval_in_one_call(config, backend)
        )
        self._warm: set = set()
        self._host: dict[int, Any] = {}
        self._host_iter, self._host_iter_step = None, None  # tf pipeline: the next step's iterator
        log.info("%d run(s), %s; %d train step(s) per call", len(configs), self.axis, self.k)

    def _single(self, make_step, loss_fn) -> dict[str, Any]:
        if not self.device_pipeline:
            return _compiled(make_step(loss_fn=loss_fn), 1)
        pipeline = self.bundle.train

        def make_batch(data, step):
            arrays, seed = data
            return pipeline.batch(arrays, step, jax.lax.axis_index(steps.AXIS), seed)

        return _compiled(make_step(loss_fn=loss_fn, make_batch=make_batch), self.k)

    def _vmapped(self, make_step, config) -> dict[str, Any]:
        pipeline, num_epochs = self.bundle.train, config.num_epochs

        def run_step(state, arrays, h):
            def make_batch(d, step):
                return pipeline.batch(d, step, jax.lax.axis_index(steps.AXIS), h["seed"])

            loss_fn = functools.partial(losses.program_loss, coeffs=h, num_epochs=num_epochs)
            return make_step(loss_fn=loss_fn, make_batch=make_batch)(state, arrays)

        vstep = jax.vmap(run_step, in_axes=(0, None, 0))
        return _compiled(lambda state, data: vstep(state, *data), self.k)

    def advance(self, step: int, n: int, alive: Sequence[bool]):
        """Up to `n` steps of the live runs: (metrics per run or None, steps done, compile s).

        A compiled call's first use waits for the steps dispatched before it, then for its own
        result, so its compile time (with its one call's run) is measured apart.
        """
        out: list[Any] = [None] * len(alive)
        compile_s, done = None, 0
        self._host = {}
        for g in self.groups:
            if not any(alive[r] for r in g.runs):
                continue
            if "loop" in g.calls:
                fn, done, args = g.calls["loop"], n, (g.state, g.data, n)
            elif "multi" in g.calls and n >= self.k:
                fn, done, args = g.calls["multi"], self.k, (g.state, g.data)
            else:
                fn, done = g.calls["one"], 1
                args = (g.state, g.data if self.device_pipeline else self._host_batch(step))
            first = fn not in self._warm
            if first:  # the steps dispatched before it are training time, not its compile time
                jax.block_until_ready(g.state)
            t0 = time.perf_counter()
            g.state, metrics = fn(*args)
            if first:
                jax.block_until_ready(metrics)
                compile_s = (compile_s or 0.0) + time.perf_counter() - t0
                self._warm.add(fn)
            for i, r in enumerate(g.runs):
                if alive[r] and g.stacked:
                    out[r] = jax.tree_util.tree_map(lambda x, i=i: x[:, :, i], metrics)
                elif alive[r]:
                    out[r] = metrics
        return out, done, compile_s

    def _host_batch(self, step: int) -> Any:
        if self._host_iter_step != step:
            self._host_iter = self.bundle.train.iterator(start_step=step)
        self._host_iter_step = step + 1
        return next(self._host_iter)

    def evaluate(self, split: str, alive: Sequence[bool]) -> list[Any]:
        stats: list[Any] = [None] * len(alive)
        for g in self.groups:
            if any(alive[r] for r in g.runs):
                s = self.evaluator(split, g.state.params, g.state.batch_stats)
                for i, r in enumerate(g.runs):
                    stats[r] = _take(s, i) if g.stacked else s
        return stats

    def host_state(self, r: int) -> Any:
        """Run r's state on the host; a stacked group is fetched once per step for all its runs."""
        g = next(g for g in self.groups if r in g.runs)
        key = id(g)
        if key not in self._host:
            self._host[key] = replication.first_replica(g.state)
        return _take(self._host[key], g.runs.index(r)) if g.stacked else self._host[key]


def _with_step_axis(step_fn):
    """The one-step call's metrics shaped like the scanned calls' (a step axis of 1), inside
    the compiled call: reshaping them eagerly after it cost a dispatch per metric per step."""

    def one(state, data):
        state, metrics = step_fn(state, data)
        return state, jax.tree_util.tree_map(lambda x: x[None], metrics)

    return one


def _compiled(step_fn, k: int) -> dict[str, Any]:
    """One step, k scanned steps and a while loop to the next event, each pmapped; metrics
    come back shaped (devices, steps, ...) from each."""
    pmap = functools.partial(jax.pmap, axis_name=steps.AXIS, donate_argnums=(0,))
    calls = {"one": pmap(_with_step_axis(step_fn))}
    if k > 1:
        calls["multi"] = pmap(steps.make_multi_step(step_fn, k))
    if k == defaults.LOOP:
        calls["loop"] = pmap(steps.make_loop_steps(step_fn), in_axes=(0, 0, None))
    return calls
