"""A short timing probe on this machine, so the plan can say how long each stage will take.

One program of the stage's model on synthetic data of its image size and batch, stepped as the
training loop steps it (`ProgramRunner`): the first call's time (compile) and the time per step
of one run and, on accelerators, of four vmapped runs (runs share a call there). Estimates are
rough: evaluation, checkpoints and data loading come on top.
"""

from __future__ import annotations

import copy
import json
import logging
import pathlib
import time
import types
from typing import Any

import jax
import numpy as np

from fbl_jax import defaults
from fbl_jax.data.device_pipeline import DevicePipeline
from fbl_jax.data.long_tail import long_tail_counts
from fbl_jax.data.samplers import make_sampler
from fbl_jax.train import optimizer
from fbl_jax.train.run_setup import build_model, init_train_state
from fbl_jax.train.runners import ProgramRunner, resolve_run_axis

log = logging.getLogger("fbl_jax")


def probe_key(config: Any) -> str:
    return json.dumps(
        [config.model.name, config.model.head, config.batch_size, config.data.image_size,
         config.data.num_classes, config.half_precision, jax.default_backend()]
    )  # fmt: skip


def _seconds_per_step(config: Any, runs: int, calls: int = 3) -> tuple[float, float]:
    size, classes = config.data.image_size, config.data.num_classes
    counts = np.asarray(long_tail_counts(classes, 40, 10.0))
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(classes), counts)).astype(np.int32)
    images = rng.integers(0, 256, (len(labels), size, size, 3), dtype=np.uint8)
    second = config.data.get("second_sampler") or None  # BBN's re-balancing stream
    pipeline = DevicePipeline(
        images, labels, make_sampler("instance", labels, counts),
        global_batch_size=config.batch_size, mean=config.data.mean, std=config.data.std,
        num_devices=jax.local_device_count(), pad=config.data.pad,
        second_sampler=make_sampler(second, labels, counts, num_samples=len(labels)) if second else None,
    )  # fmt: skip
    spe = pipeline.steps_per_epoch
    bundle = types.SimpleNamespace(  # what the runner reads of a DataBundle
        pipeline="device", train=pipeline, class_counts=counts, steps_per_epoch=spe,
        num_classes=classes, eval_iter=None,
    )  # fmt: skip
    lr = optimizer.make_lr_schedule(config.optimizer, spe, config.num_epochs)
    model = build_model(config, classes)
    configs = [copy.deepcopy(config) for _ in range(runs)]
    for seed, c in enumerate(configs):
        c.seed = seed
    states, txs = zip(*[init_train_state(c, model, (size, size, 3), lr) for c in configs])
    runner = ProgramRunner(configs, bundle, model, txs[0], lr, list(states))
    k = defaults.resolve_steps_per_call(config, jax.default_backend())
    n = max(k, 1) if k != defaults.LOOP else 20
    step, alive = 0, [True] * runs
    t0 = time.perf_counter()
    metrics, done, _ = runner.advance(step, n, alive)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    step += done
    t0 = time.perf_counter()
    for _ in range(calls):
        metrics, done, _ = runner.advance(step, n, alive)
        jax.block_until_ready(metrics)
        step += done
    return compile_s, (time.perf_counter() - t0) / (calls * done)


def probe(config: Any, cache_path: pathlib.Path) -> dict[str, float]:
    """{compile_s, step_s_1, step_s_4}: measured once per model/batch/backend, kept in OUT."""
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    key = probe_key(config)
    if key not in cache:
        log.info("timing probe: %s, batch %d ...", config.model.name, config.batch_size)
        compile_s, one = _seconds_per_step(config, 1)
        result = {"compile_s": compile_s, "step_s_1": one, "step_s_4": 4 * one}
        if resolve_run_axis(config.sweep_run_axis, jax.default_backend(), 4) == "vmap":
            result["step_s_4"] = _seconds_per_step(config, 4)[1]
        cache[key] = result
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=1))
    return cache[key]


def estimate_seconds(measured: dict[str, float], runs: int, steps: int, compiles: int) -> float:
    """Compile per distinct program plus every run's steps (linear in runs between 1 and 4)."""
    slope = (measured["step_s_4"] - measured["step_s_1"]) / 3
    per_step = measured["step_s_1"] + slope * (runs - 1)
    return compiles * measured["compile_s"] + steps * per_step
