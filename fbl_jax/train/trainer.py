"""train_and_evaluate(config, workdir): the whole run, resumable from WORKDIR alone."""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import signal
import threading
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from fbl_jax import defaults, losses
from fbl_jax.data import build_datasets
from fbl_jax.models import get_model
from fbl_jax.models.layers import resolve_bn_impl
from fbl_jax.models.pretrained import load_state_dict_file, load_torchvision_weights
from fbl_jax.train import bbn
from fbl_jax.train import checkpoints as checkpointing
from fbl_jax.train import evaluation as evaluate
from fbl_jax.train import optimizer as optim
from fbl_jax.train import steps as train_steps
from fbl_jax.train.timing import SpeedWindow, WallClock
from fbl_jax.train.writers import MetricWriter, check_finite

log = logging.getLogger("fbl_jax")

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, so schedulers see the run as terminated


class Preempted(SystemExit):
    """SIGTERM arrived; a checkpoint was written and the run stops (restart to resume)."""


def build_model(config: Any, num_classes: int):
    dtype = jnp.bfloat16 if config.half_precision else jnp.float32
    return get_model(
        config.model.name,
        num_classes,
        head=config.model.head,
        dtype=dtype,
        bn_axis_name=train_steps.AXIS,
        # runs saved before the option existed have no model.batch_norm
        bn_impl=resolve_bn_impl(config.model.get("batch_norm", "auto")),
    )


def check_devices(global_batch: int, what: str = "config.batch_size") -> None:
    n = jax.device_count()
    if global_batch % n:
        raise defaults.ConfigError(
            f"{what}={global_batch} does not divide over {n} devices "
            f"({jax.process_count()} process(es) × {jax.local_device_count()} local devices); "
            f"use a multiple of {n}, e.g. {max(n, global_batch // n * n)}"
        )


def load_data(config: Any) -> Any:
    """The config's DataBundle (its seed orders the data; fbl-sweep gives each run its own)."""
    return build_datasets(
        config.data,
        global_batch_size=config.batch_size,
        seed=config.seed,
        eval_batch_size=config.eval_batch_size,
        num_epochs=config.num_epochs,
    )


def init_train_state(
    config: Any, model: Any, image_shape: tuple, lr_schedule: Any
) -> tuple[train_steps.TrainState, Any]:
    """(TrainState at step 0, optimizer) for `config.seed`, pretrained weights loaded."""
    # rbg keys: the same initialisation for a seed on a given backend, and XLA compiles the
    # init in a fifth of threefry's time on CPU. The parameters live in checkpoints afterwards.
    rng = jax.random.key(config.seed, impl="rbg")
    variables = train_steps.init_variables(rng, model, image_shape)
    if config.model.pretrained:
        state_dict = load_state_dict_file(config.model.pretrained)
        variables = load_torchvision_weights(
            variables, state_dict, skip_head=config.model.pretrained_skip_head
        )
        log.info("loaded pretrained weights from %s", config.model.pretrained)
    tx = optim.make_optimizer(
        config.optimizer, lr_schedule, variables["params"], config.model.freeze
    )
    return train_steps.create_train_state(rng, model, image_shape, tx, variables), tx


def run_identity(config: Any, bundle: Any) -> dict[str, Any]:
    """What a checkpoint must share with the run that restores it (checkpointing.IDENTITY_KEYS)."""
    return {
        "model": config.model.name,
        "head": config.model.head,
        "num_classes": bundle.num_classes,
        "class_counts": np.asarray(bundle.class_counts).tolist(),
        "image_shape": list(bundle.image_shape),
    }


def train_and_evaluate(config: Any, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Train and evaluate as `config` says; resume from the latest checkpoint in `workdir`.

    Returns the final record (last and best-on-minival test metrics).
    """
    defaults.validate_config(config)
    defaults.check_data_paths(config.data)
    workdir = pathlib.Path(workdir)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    check_devices(config.batch_size)
    check_devices(config.eval_batch_size, "config.eval_batch_size")
    if losses.loss_needs_cosine_head(config.loss.name) and config.model.head != "cosine":
        raise defaults.ConfigError(
            f"loss {config.loss.name!r} is defined on cosine logits: set config.model.head='cosine'"
        )

    bundle = load_data(config)
    spe = bundle.steps_per_epoch
    total_steps = config.num_epochs * spe
    class_counts = np.asarray(bundle.class_counts)
    log.info(
        "data: %d training images in %d classes (largest %d, smallest %d), %d steps/epoch, "
        "%d steps; eval splits %s",
        bundle.num_train,
        bundle.num_classes,
        class_counts.max(),
        class_counts.min(),
        spe,
        total_steps,
        dict(bundle.eval_sizes),
    )

    workdir.mkdir(parents=True, exist_ok=True)  # only once the config and the data are good
    model = build_model(config, bundle.num_classes)
    loss_fn = losses.make_loss(config.loss, class_counts, config.num_epochs)
    lr_schedule = optim.make_lr_schedule(config.optimizer, spe, config.num_epochs)
    state, tx = init_train_state(config, model, bundle.image_shape, lr_schedule)
    identity = run_identity(config, bundle)
    ckpts = checkpointing.Checkpoints(workdir, config.keep_checkpoints)
    meta: dict[str, Any] = {"best_minival": None, "best_step": None, "best_test_record": None}
    meta["last_test_record"] = None
    restored = ckpts.restore_latest(state, identity)
    if restored is not None:
        state, saved_meta = restored
        meta.update({k: saved_meta.get(k) for k in meta})
    start_step = int(state.step)
    is_chief = jax.process_index() == 0

    finished = read_final_record(workdir) if start_step >= total_steps else None
    if finished is not None:
        log.info("already finished at step %d in %s; nothing to do", start_step, workdir)
        ckpts.close()
        return finished
    if restored is not None:
        log.info("resumed from step %d in %s", start_step, workdir)
    # best/ checkpoints later than the one resumed from belong to steps about to be re-run
    ckpts.drop_best_after(start_step)

    writer = MetricWriter(workdir, is_chief, total_steps)
    if is_chief:
        (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=list))
        (workdir / "class_counts.json").write_text(
            json.dumps({"counts": class_counts.tolist(), "class_names": list(bundle.class_names)})
        )
        writer.truncate_after(start_step)

    timing = WallClock(workdir if is_chief else None)
    runner = _Runner(config, bundle, model, loss_fn, tx, lr_schedule, spe)
    p_state = flax.jax_utils.replicate(state)
    with sigterm_flag() as stop:

        def evaluate_all(p_state, step: int) -> dict[str, dict]:
            records = {}
            for split in bundle.eval_splits:
                stats = runner.evaluate(split, p_state.params, p_state.batch_stats)
                record = {"type": "eval", "step": step, "epoch": step / spe, "split": split}
                record.update(evaluate.metrics_from_stats(stats, class_counts))
                writer.write(record)
                writer.eval_line(record)
                records[split] = record
            return records

        def save(p_state, step: int, best: bool = False) -> None:
            # a step saved already (SIGTERM right after the epoch's checkpoint) is kept as is
            host_state = jax.device_get(flax.jax_utils.unreplicate(p_state))
            ckpts.save(host_state, {**identity, **meta, "step": step}, best=best)

        step = start_step
        pending: list[Any] = []
        speed = SpeedWindow(step)
        while step < total_steps:
            next_event = min(
                _next_multiple(step, config.log_every_steps), _next_multiple(step, spe)
            )
            n = min(next_event, total_steps) - step
            with timing.measure("train"):
                p_state, metrics, done, compile_s = runner.run(p_state, step, n)
            pending.append(metrics)
            step += done
            if compile_s is not None:
                timing.add("compile", compile_s)
                timing.add("train", -compile_s)
                log.info("compiled the train call (%d step(s)) in %.1f s", done, compile_s)
                speed.restart(step)  # images/s counts steady-state steps only
            if step % config.log_every_steps == 0 or step == total_steps or stop.is_set():
                with timing.measure("train"):
                    record = _train_record(pending, step, spe)  # waits for the steps to finish
                record["images_per_s"] = speed.rate(step, config.batch_size)
                pending = []
                writer.write(record)
                writer.train_line(record)
                speed.restart(step)
            if step % spe == 0:
                epoch = step // spe
                with timing.measure("train"):
                    _check_pending_finite(pending)  # never evaluate or save a diverged state
                if epoch % config.eval_every_epochs == 0 or step == total_steps:
                    with timing.measure("eval"):
                        records = evaluate_all(p_state, step)
                    meta["last_test_record"] = records.get("test")
                    minival = records.get("minival")
                    if minival is not None and (
                        meta["best_minival"] is None
                        or minival["balanced_top1"] > meta["best_minival"]
                    ):
                        meta.update(best_minival=minival["balanced_top1"], best_step=step)
                        meta["best_test_record"] = records.get("test")
                        with timing.measure("checkpoint"):
                            save(p_state, step, best=True)
                if epoch % config.checkpoint_every_epochs == 0 or step == total_steps:
                    with timing.measure("checkpoint"):
                        save(p_state, step)
                speed.restart(step)
            if stop.is_set() and step < total_steps:
                with timing.measure("checkpoint"):
                    save(p_state, step)
                timing.write()
                ckpts.close()
                writer.close()
                log.warning("SIGTERM: checkpoint written at step %d; restart to resume", step)
                raise Preempted(PREEMPTED_EXIT_CODE)

        host_params = jax.device_get(flax.jax_utils.unreplicate(p_state.params))
        if jax.process_count() > 1:
            multihost_utils.assert_equal(host_params, "parameters differ across processes")
        leaves = jax.tree_util.tree_leaves(host_params)
        log.info(
            "parameter checksum %.12e", sum(float(np.sum(x, dtype=np.float64)) for x in leaves)
        )
        final = {
            "type": "final",
            "step": total_steps,
            "last": meta["last_test_record"],
            "best_on_minival": meta["best_test_record"],
            "best_step": meta["best_step"],
        }
        writer.write(final)
        last = final["last"] or {}
        best = final["best_on_minival"] or {}
        log.info(
            "done: test top-1 last %.2f, best-on-minival %s (step %s)",
            100 * last.get("top1", float("nan")),
            f"{100 * best['top1']:.2f}" if best else "n/a",
            final["best_step"],
        )
        timing.write()
        log.info("wall time: %s", timing.summary())
        ckpts.close()
        writer.close()
        return final


def read_final_record(workdir: pathlib.Path) -> dict[str, Any] | None:
    """The `final` record of a finished run's metrics.jsonl, or None."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    final = None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("type") == "final":
            final = record
    return final


class _Runner:
    """Compiled train calls (one step, `steps_per_call` steps scanned, or a while loop up to the
    next event) and the eval step."""

    def __init__(self, config, bundle, model, loss_fn, tx, lr_schedule, spe) -> None:
        self.bundle = bundle
        self.k = defaults.resolve_steps_per_call(config, jax.default_backend())
        log.info("%d train step(s) per compiled call", self.k)
        make_batch = None
        if bundle.pipeline == "device":
            pipeline = bundle.train

            def make_batch(data, step):
                return pipeline.batch(data, step, jax.lax.axis_index(train_steps.AXIS))

            self.device_data = flax.jax_utils.replicate(pipeline.device_data())
        step_fn = train_steps.make_train_step(
            model, loss_fn, tx, lr_schedule, spe, make_batch, bbn_alpha=bbn.alpha_fn_for(config)
        )
        self.p_step = train_steps.pmap_train(step_fn)
        self.p_multi = (
            train_steps.pmap_train(train_steps.make_multi_step(step_fn, self.k))
            if self.k > 1
            else None
        )
        self.p_loop = (
            jax.pmap(
                train_steps.make_loop_steps(step_fn),
                axis_name=train_steps.AXIS,
                in_axes=(0, 0, None),
                donate_argnums=(0,),
            )
            if self.k == defaults.LOOP
            else None
        )
        self.evaluate = train_steps.Evaluator(
            train_steps.make_eval_step(model, bundle.num_classes),
            bundle.eval_iter,
            defaults.resolve_eval_in_one_call(config, jax.default_backend()),
        )
        self._host_iter = None  # tf pipeline: the iterator, and the step it will yield next
        self._host_iter_step: int | None = None
        self._warm: set = set()  # compiled functions already called once

    def run(self, p_state, step: int, n: int):
        """Advance up to `n` steps from `step`: (state, metrics, steps done, compile seconds).

        The first call of each compiled function waits for its result, so its compile time is
        measured (returned, else None) and kept out of the images/s figures.
        """
        if self.bundle.pipeline == "device":
            if self.p_loop is not None:  # every step up to the next event, one dispatch
                fn, args, k = self.p_loop, (p_state, self.device_data, n), n
            elif self.p_multi is not None and n >= self.k:
                fn, args, k = self.p_multi, (p_state, self.device_data), self.k
            else:
                fn, args, k = self.p_step, (p_state, self.device_data), 1
        else:
            if self._host_iter_step != step:
                self._host_iter = self.bundle.train.iterator(start_step=step)
            batch = next(self._host_iter)
            self._host_iter_step = step + 1
            fn, args, k = self.p_step, (p_state, batch), 1
        first = fn not in self._warm
        t0 = time.perf_counter()
        p_state, metrics = fn(*args)
        compile_s = None
        if first:
            jax.block_until_ready(metrics)
            compile_s = time.perf_counter() - t0
            self._warm.add(fn)
        if k == 1 and fn is not self.p_loop:
            metrics = jax.tree_util.tree_map(lambda x: x[:, None], metrics)
        return p_state, metrics, k, compile_s


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


def _check_pending_finite(pending: list) -> None:
    """Raise NonFiniteError naming the first step whose loss is NaN/inf (waits for the steps)."""
    _check_finite_metrics(jax.device_get(pending))


def _check_finite_metrics(fetched: list) -> None:
    for m in fetched:
        for s, value in zip(m["step"][0], m["loss"][0]):
            check_finite("loss", float(value), int(s))


def _train_record(pending: list, step: int, spe: int) -> dict[str, Any]:
    """Fetch the metrics of every step since the last record; stop on the first non-finite loss."""
    fetched = jax.device_get(pending)
    _check_finite_metrics(fetched)
    # a while-loop call's entry is the mean of `count` steps; a scanned call's, one step each
    counts = np.concatenate([m.get("count", np.ones_like(m["loss"]))[0] for m in fetched])
    losses_ = np.concatenate([m["loss"][0] for m in fetched])
    top1 = np.concatenate([m["train_top1"][0] for m in fetched])
    last = fetched[-1]
    return {
        "type": "train",
        "step": step,
        "epoch": step / spe,
        "loss": float(np.sum(losses_ * counts) / np.sum(counts)),
        "train_top1": float(np.sum(top1 * counts) / np.sum(counts)),
        "lr": float(last["lr"][0][-1]),
        "alpha": float(last["alpha"][0][-1]),
    }


@contextlib.contextmanager
def sigterm_flag():
    """A flag SIGTERM sets (the loop checkpoints and stops); the old handler comes back after."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)
