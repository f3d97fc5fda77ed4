"""Classifier re-balancing on a finished run, without training the backbone.

Four methods, each applied to one checkpoint (``best`` on minival, or ``last``) of an fbl-train
run directory, each writing a NEW run directory that fbl-report reads like any other:

- ``tau_norm`` (Kang et al. 2020): classifier columns w_j / ||w_j||^tau, bias kept.
- ``la_posthoc`` (Menon et al. 2021): logits - tau * log(prior).
- ``crt``: a re-initialised classifier trained alone on the frozen backbone (class-balanced).
- ``lws``: a learnable per-class scale s_j on the logits, everything else frozen.

tau is chosen on the minival's balanced top-1 in ONE pass over the minival for the whole grid;
cRT/LWS pick their epoch on it. The backbone always runs in eval mode (``train=False``), so
neither its weights nor its BatchNorm statistics change. For a cosine head the logits are
``loss.ldam_s * cos`` (what the run's LDAM loss saw), so tau and the LWS scales keep their scale.

This module runs a method end to end (`run_decouple`); its config is decouple_config.py, the
corrections and jitted steps decouple_steps.py, the source run and shared eval
decouple_context.py. The names below are re-exported so `fbl_jax.decouple` stays the one import.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fbl_jax.decouple.config import (
    CHECKPOINTS,
    METHODS,
    TAU_GRID,
    TAU_METHODS,
    default_config,
    validate_config,
)
from fbl_jax.decouple.context import DecoupleContext, SourceRun, load_source_run
from fbl_jax.decouple.steps import (
    ClassifierState,
    balanced_accuracy_per_tau,
    make_classifier_step,
    make_sweep_step,
    posthoc_bias,
    tau_normalize,
    tau_normalized_params,
)
from fbl_jax.train import checkpoints as checkpointing
from fbl_jax.train import optimizer as optim
from fbl_jax.train import replication
from fbl_jax.train import steps as train_steps
from fbl_jax.train.preemption import stop_if_requested, stop_requested
from fbl_jax.train.writers import MetricWriter, check_finite

__all__ = [
    "CHECKPOINTS",
    "METHODS",
    "TAU_GRID",
    "TAU_METHODS",
    "DecoupleResult",
    "SourceRun",
    "default_config",
    "load_source_run",
    "posthoc_bias",
    "run_decouple",
    "tau_normalize",
    "tau_normalized_params",
    "validate_config",
]

log = logging.getLogger("fbl_jax")


@dataclasses.dataclass
class DecoupleResult:
    """The final record and the chosen model: variables plus the per-class logit correction."""

    final: dict[str, Any]
    params: Any
    batch_stats: Any
    logit_scale: np.ndarray  # (C,) logits are multiplied by this ...
    logit_bias: np.ndarray  # ... and this is added (see make_adjusted_eval_step)
    tau: float | None


def run_decouple(config: Any, workdir: str | pathlib.Path) -> DecoupleResult:
    """Apply `config.method` to `config.from_run`'s checkpoint; write a new run in `workdir`."""
    validate_config(config)
    workdir = pathlib.Path(workdir)
    if (workdir / "metrics.jsonl").exists():
        raise FileExistsError(f"{workdir} already holds a run (metrics.jsonl); use a new --workdir")
    ctx = DecoupleContext(config, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if ctx.is_chief:
        (workdir / "class_counts.json").write_text(
            json.dumps(
                {"counts": ctx.src.class_counts.tolist(), "class_names": ctx.src.class_names}
            )
        )
    ctx.write_config()
    log.info(
        "%s on %s (%s checkpoint, step %d) -> %s",
        ctx.method,
        ctx.src.path,
        ctx.src.checkpoint,
        ctx.src.step,
        workdir,
    )
    if ctx.trains:
        return _run_training(ctx)
    return _run_tau(ctx)


def _run_tau(ctx: DecoupleContext) -> DecoupleResult:
    src, bundle = ctx.src, ctx.bundle
    taus = [float(t) for t in ctx.config[ctx.method].taus]
    sweep = None
    p_params = replication.replicate(src.params)
    p_stats = replication.replicate(src.batch_stats)
    if len(taus) > 1:
        if "minival" not in bundle.eval_splits:
            raise ValueError(
                f"{src.path} has no minival split to choose tau on; give one value, e.g. "
                f"--config.{ctx.method}.taus='(1.0,)'"
            )
        if ctx.method == "tau_norm":

            def adjusted(params, logits, features, tau):
                head = params["head"]
                kernel = tau_normalize(head["kernel"], tau)
                return features.astype(jnp.float32) @ kernel + head["bias"]
        else:
            log_prior = -posthoc_bias(src.class_counts, 1.0)

            def adjusted(params, logits, features, tau):
                return logits * ctx.base_scale - tau * log_prior

        p_sweep = jax.pmap(
            make_sweep_step(ctx.model, ctx.num_classes, adjusted), axis_name=train_steps.AXIS
        )
        p_taus = replication.replicate(jnp.asarray(taus, jnp.float32))
        stats = train_steps.run_evaluation(
            p_sweep, p_params, p_stats, bundle.eval_iter("minival"), p_taus
        )
        balanced = balanced_accuracy_per_tau(stats)
        sweep = [{"tau": t, "minival_balanced_top1": float(b)} for t, b in zip(taus, balanced)]
        tau = taus[int(np.argmax(balanced))]  # the first of equals: grid order breaks ties
        log.info(
            "minival balanced top-1 (%%) by tau: %s; best tau %g",
            ", ".join(f"{t:g}: {100 * float(b):.2f}" for t, b in zip(taus, balanced)),
            tau,
        )
    else:
        tau = taus[0]
    ctx.section["tau"] = tau
    ctx.write_config()
    params, adjust = src.params, ctx.adjust()
    if ctx.method == "tau_norm":
        params = tau_normalized_params(src.params, tau)
        p_params = replication.replicate(params)
    else:
        adjust = ctx.adjust(bias=posthoc_bias(src.class_counts, tau))
    spe = bundle.steps_per_epoch
    writer = MetricWriter(ctx.workdir, ctx.is_chief, src.step)
    records = ctx.evaluate_all(writer, p_params, p_stats, adjust, src.step, spe)
    final = {
        "type": "final",
        "step": src.step,
        "last": records["test"],
        "best_on_minival": records["test"],
        "best_step": src.step,
        "tau": tau,
        "tau_sweep": sweep,
    }
    writer.write(final)
    writer.close()
    log.info("%s: tau %g, test top-1 %.2f", ctx.method, tau, 100 * records["test"]["top1"])
    return DecoupleResult(final, params, src.batch_stats, adjust["scale"], adjust["bias"], tau)


def _init_head(rng: jax.Array, model: Any, image_shape: tuple[int, ...]) -> Any:
    """The head as the model's own init makes it (jit keeps only the head: fast to compile)."""
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    init = jax.jit(lambda r: model.init({"params": r}, dummy, train=False)["params"]["head"])
    return jax.device_get(init(rng))


def _run_training(ctx: DecoupleContext) -> DecoupleResult:
    """cRT / LWS: train the classifier part each epoch, evaluate, keep the best on minival."""
    src, bundle, method = ctx.src, ctx.bundle, ctx.method
    m = ctx.config[method]
    spe = bundle.steps_per_epoch
    total = m.epochs * spe
    schedule = optim.make_lr_schedule(m.optimizer, spe, m.epochs)
    rng = jax.random.fold_in(jax.random.PRNGKey(ctx.seed), 0x63525421)
    if method == "crt":
        trainable = {"head": _init_head(rng, ctx.model, bundle.image_shape)}
    else:
        trainable = {"scale": jnp.ones((ctx.num_classes,), jnp.float32)}
    tx = optim.make_optimizer(m.optimizer, schedule, trainable)
    state = ClassifierState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))
    make_batch, data = None, None
    if bundle.pipeline == "device":
        pipeline = bundle.train

        def make_batch(d, step):
            return pipeline.batch(d, step, jax.lax.axis_index(train_steps.AXIS))

        data = replication.replicate(pipeline.device_data())
    else:
        host_iter = bundle.train.iterator(start_step=0)
    step_fn = make_classifier_step(ctx.model, method, tx, schedule, ctx.base_scale, make_batch)
    p_step = jax.pmap(step_fn, axis_name=train_steps.AXIS, donate_argnums=(0,))
    p_frozen = replication.replicate({"params": src.params, "batch_stats": src.batch_stats})
    p_state = replication.replicate(state)

    writer = MetricWriter(ctx.workdir, ctx.is_chief, total)
    ckpts = checkpointing.Checkpoints(ctx.workdir, ctx.config.keep_checkpoints)
    meta_base = {"method": method, "from_run": ctx.section["from_run"]}
    meta_base["source_checkpoint"] = ctx.section["checkpoint_path"]
    best: dict[str, Any] = {"minival": None, "step": None, "test": None, "trained": None}
    last_test, last_trained = None, None
    for epoch in range(1, m.epochs + 1):
        t0, pending = time.time(), []
        for _ in range(spe):
            p_state, metrics = p_step(
                p_state, p_frozen, data if data is not None else next(host_iter)
            )
            pending.append(metrics)
        fetched = jax.device_get(pending)
        step = epoch * spe
        loss = float(np.mean([f["loss"][0] for f in fetched]))
        check_finite("loss", loss, step)
        record = {
            "type": "train",
            "step": step,
            "epoch": float(epoch),
            "loss": loss,
            "train_top1": float(np.mean([f["train_top1"][0] for f in fetched])),
            "lr": float(fetched[-1]["lr"][0]),
            "alpha": 0.0,
            "images_per_s": spe * ctx.batch_size / (time.time() - t0),
        }
        writer.write(record)
        log.info(
            "%s epoch %d/%d | loss %.4f | train top-1 %.2f | lr %.5f | %.0f img/s",
            method,
            epoch,
            m.epochs,
            loss,
            100 * record["train_top1"],
            record["lr"],
            record["images_per_s"],
        )
        trained = replication.first_replica(p_state.trainable)
        if method == "crt":
            p_params = {**p_frozen["params"], "head": replication.replicate(trained["head"])}
            adjust = ctx.adjust()
        else:
            p_params, adjust = p_frozen["params"], ctx.adjust(scale=trained["scale"])
        records = ctx.evaluate_all(writer, p_params, p_frozen["batch_stats"], adjust, step, spe)
        last_test, last_trained = records["test"], trained
        meta = {**meta_base, "step": step, "epoch": epoch}
        minival = records.get("minival")
        if minival is not None and (
            best["minival"] is None or minival["balanced_top1"] > best["minival"]
        ):
            best.update(minival=minival["balanced_top1"], step=step, test=records["test"])
            best["trained"] = trained
            ckpts.save({"step": np.asarray(step), **trained}, meta, best=True)
        ckpts.save({"step": np.asarray(step), **trained}, meta)
        if stop_requested() and epoch < m.epochs:  # minutes of work: redone, not resumed
            ckpts.close()
            writer.close()
            shutil.rmtree(ctx.workdir, ignore_errors=True)
            stop_if_requested(f"{method} epoch {epoch}", f"{ctx.workdir} removed, rerun to redo")
    ckpts.close()
    chosen = best["trained"] if best["trained"] is not None else last_trained
    final = {
        "type": "final",
        "step": total,
        "last": last_test,
        "best_on_minival": best["test"],
        "best_step": best["step"],
    }
    writer.write(final)
    writer.close()
    log.info(
        "%s: test top-1 last %.2f, best-on-minival %s (step %s)",
        method,
        100 * last_test["top1"],
        f"{100 * best['test']['top1']:.2f}" if best["test"] else "n/a",
        best["step"],
    )
    params, adjust = src.params, ctx.adjust()
    if method == "crt":
        params = {**src.params, "head": chosen["head"]}
    else:
        adjust = ctx.adjust(scale=chosen["scale"])
    return DecoupleResult(final, params, src.batch_stats, adjust["scale"], adjust["bias"], None)
