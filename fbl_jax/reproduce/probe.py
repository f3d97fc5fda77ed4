"""A short timing probe on this machine, so the plan can say how long each stage will take.

The stage's model on synthetic data of its image size and batch, stepped as the training loop
steps it (`ProgramRunner`) and laid out as the stage will train: where a sweep's waves go to
several pinned processes (config.sweep_processes), that many probes run at once, each on its
cores, since cores shared by processes are not the cores one process has alone. Measured: the
first call (compile), the time per step after two untimed warm calls (the first calls also set
up kernels), the evaluation time per image, and on accelerators four vmapped runs.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pathlib
import subprocess
import tempfile
import time
import types
from typing import Any

import jax
import numpy as np

from fbl_jax import defaults, pinned
from fbl_jax.data.device_pipeline import DevicePipeline
from fbl_jax.data.eval_batches import eval_batches
from fbl_jax.data.long_tail import long_tail_counts
from fbl_jax.data.samplers import make_sampler
from fbl_jax.train import host, optimizer
from fbl_jax.train.processes import resolve_processes, share
from fbl_jax.train.run_setup import build_model, init_train_state
from fbl_jax.train.runners import ProgramRunner, resolve_run_axis

log = logging.getLogger("fbl_jax")
WARM_CALLS, TIMED_CALLS, EVAL_IMAGES = 2, 10, 2000


def probe_key(config: Any, processes: int) -> str:
    """What the measurement depends on, the machine and malloc's settings (hugepages.py)
    included: an OUT resumed on another machine (the next node of a cluster, another CPU kind)
    is probed again there."""
    return json.dumps(
        [config.model.name, config.model.head, config.batch_size, config.data.image_size,
         config.data.num_classes, config.half_precision, host.label(host.describe(), cores=False),
         processes, os.environ.get("GLIBC_TUNABLES", "")]
    )  # fmt: skip


def _measure(config: Any, runs: int) -> dict[str, float]:
    """{compile_s, step_s, eval_s_per_image} for `runs` runs of `config` in this process."""
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
    eval_images = rng.integers(0, 256, (EVAL_IMAGES, size, size, 3), dtype=np.uint8)
    eval_labels = rng.integers(0, classes, EVAL_IMAGES).astype(np.int32)

    def eval_iter(split):
        return eval_batches(
            eval_images, eval_labels, global_batch=config.eval_batch_size,
            local_device_count=jax.local_device_count(), process_index=0, process_count=1,
            mean=config.data.mean, std=config.data.std,
        )  # fmt: skip

    spe = pipeline.steps_per_epoch
    bundle = types.SimpleNamespace(  # what the runner reads of a DataBundle
        pipeline="device", train=pipeline, class_counts=counts, steps_per_epoch=spe,
        num_classes=classes, eval_iter=eval_iter,
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

    def calls(count: int) -> float:
        """Seconds for `count` calls dispatched as the training loop dispatches them: one
        after another, waiting only at the end (it waits at its log records), so the host's
        work for the next call overlaps the current one."""
        nonlocal step
        t0 = time.perf_counter()
        for _ in range(count):
            metrics, done, _ = runner.advance(step, n, alive)
            step += done
        jax.block_until_ready(metrics)
        return time.perf_counter() - t0

    compile_s = calls(1)
    calls(WARM_CALLS)
    before = step
    step_s = calls(TIMED_CALLS) / (step - before)
    jax.block_until_ready(runner.evaluate("test", alive))  # compiles
    t0 = time.perf_counter()
    jax.block_until_ready(runner.evaluate("test", alive))
    eval_s = (time.perf_counter() - t0) / EVAL_IMAGES
    return {"compile_s": compile_s, "step_s": step_s, "eval_s_per_image": eval_s}


def _measure_in_processes(config: Any, processes: int) -> dict[str, float]:
    """`processes` probes at once, each pinned as train/processes.py pins a wave's children."""
    specs = [{"config": config, "cpus": cpus}
             for cpus in share(sorted(os.sched_getaffinity(0)), processes)]  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory(prefix="fbl_jax_probe_") as tmp:
        children = pinned.spawn("fbl_jax.reproduce.probe_process", specs, pathlib.Path(tmp),
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        for child in children:
            out, _ = child.communicate()
            if child.returncode:
                raise RuntimeError(f"the timing probe process exited with {child.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    return {key: float(np.mean([r[key] for r in results])) for key in results[0]}


def probe(config: Any, cache_path: pathlib.Path, processes: int = 1) -> dict[str, float]:
    """{compile_s, step_s_1, step_s_4, eval_s_per_image} of one run per process with
    `processes` processes training at once; measured once per layout, kept in OUT."""
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    key = probe_key(config, processes)
    if key not in cache:
        log.info("timing probe: %s, batch %d, %d process(es) ...", config.model.name,
                 config.batch_size, processes)  # fmt: skip
        if processes > 1:
            one = _measure_in_processes(config, processes)
        else:
            one = _measure(config, 1)
        result = {"compile_s": one["compile_s"], "step_s_1": one["step_s"],
                  "step_s_4": 4 * one["step_s"], "eval_s_per_image": one["eval_s_per_image"]}  # fmt: skip
        if resolve_run_axis(config.sweep_run_axis, jax.default_backend(), 4) == "vmap":
            result["step_s_4"] = _measure(config, 4)["step_s"]
        cache[key] = result
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=1))
    return cache[key]


def stage_layout(config: Any, runs: int, seeds: int) -> tuple[int, int, int]:
    """(waves, runs a wave, processes a wave) as train_sweep will train a sweep stage."""
    backend = jax.default_backend()
    axis = resolve_run_axis(config.sweep_run_axis, backend, runs)
    waves = seeds if axis == "sequential" and seeds > 1 else 1
    per_wave = runs // waves
    processes = resolve_processes(config.get("sweep_processes", 1), backend, axis, per_wave)
    return waves, per_wave, processes


def eval_passes(config: Any) -> int:
    """Evaluations in a run: the loop's cadence (train/loop.py) and the last epoch."""
    from fbl_jax.train.loop import is_eval_epoch

    epochs = config.num_epochs
    return sum(is_eval_epoch(config, e) or e == epochs for e in range(1, epochs + 1))


def estimate_seconds(
    measured: dict[str, float],
    runs: int,
    steps: int,
    compiles: int,
    evals: int = 0,
    eval_images: int = 0,
) -> float:
    """Compile per distinct program plus every run's steps (linear in runs between 1 and 4)
    and evaluations, for `runs` runs stepping together in one process."""
    slope = (measured["step_s_4"] - measured["step_s_1"]) / 3
    per_step = measured["step_s_1"] + slope * (runs - 1)
    eval_s = runs * evals * eval_images * measured.get("eval_s_per_image", 0.0)
    return compiles * measured["compile_s"] + steps * per_step + eval_s


def estimate_stage(
    config: Any, runs: int, seeds: int, compiles: int, steps: int, eval_images: int, out: Any
) -> float:
    """A sweep stage's seconds: its waves one after another, each wave's runs shared over its
    processes (which run at once), each process's runs stepping together."""
    waves, per_wave, processes = stage_layout(config, runs, seeds)
    measured = probe(config, out / "probe.json", processes)
    per_process = math.ceil(per_wave / processes)
    compiles_a_process = max(1, math.ceil(compiles / processes)) if waves == 1 else compiles
    wave_s = estimate_seconds(
        measured, per_process, steps, min(compiles_a_process, per_process),
        eval_passes(config), eval_images,
    )  # fmt: skip
    return waves * wave_s
