"""The train state and the pmapped train/eval steps.

Everything that changes with training progress (lr, α(t), DRW weights, the on-device batch) is
computed from `state.step` inside the step, so one compiled function serves the whole run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fbl_jax.train import bbn, replication
from fbl_jax.train import evaluation as evaluate

AXIS = "batch"  # pmap axis; spans every device of every host


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any


def create_train_state(
    rng: jax.Array,
    model: nn.Module,
    image_shape: tuple[int, int, int],
    tx: optax.GradientTransformation | None,
    variables: Any = None,
) -> TrainState:
    """Initialise (or wrap given `variables`, e.g. pretrained weights) into a TrainState."""
    if variables is None:
        variables = init_variables(rng, model, image_shape)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params) if tx is not None else None,
    )


def init_variables(rng: jax.Array, model: nn.Module, image_shape: tuple[int, int, int]) -> Any:
    dummy = jnp.zeros((1, *image_shape), jnp.float32)

    @jax.jit
    def init(rng):
        return model.init({"params": rng}, dummy, train=False)

    return flax.core.unfreeze(init(rng))


def make_train_step(
    model: nn.Module,
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    steps_per_epoch: int,
    make_batch: Callable | None = None,
    bbn_alpha: Callable | None = None,
) -> Callable:
    """One SGD step: (state, batch_or_device_data) → (state, metrics); to be pmapped on AXIS.

    With `make_batch` (the on-device pipeline) the second argument is the device-resident data
    and the batch for `state.step` is built inside the step, so no image crosses the host.
    With `bbn_alpha` (epoch → α, `fbl_jax.train.bbn`) the batch's `image_rb` and α go to the model and
    the loss and train accuracy are BBN's α/(1 − α) mix over `label` and `label_rb`.
    """

    def step_fn(state: TrainState, data: Any) -> tuple[TrainState, dict[str, jnp.ndarray]]:
        step = state.step
        batch = make_batch(data, step) if make_batch is not None else data
        epoch = step.astype(jnp.float32) / steps_per_epoch

        mix = None if bbn_alpha is None else bbn_alpha(epoch)
        extra = {} if mix is None else {"images_rb": batch["image_rb"], "mix": mix}

        def compute_loss(params):
            (logits, out), updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch["image"],
                train=True,
                mutable=["batch_stats"],
                **extra,
            )
            features = out["features"]
            if mix is not None:
                loss, aux = bbn.mixed_loss(
                    loss_fn, logits, features, batch["label"], batch["label_rb"], epoch, mix
                )
                return loss, (aux, logits, updates["batch_stats"])
            loss, aux = loss_fn(logits, features, batch["label"], epoch)
            if "mix_lam" in batch:
                loss_b, _ = loss_fn(logits, features, batch["label_b"], epoch)
                lam = batch["mix_lam"].reshape(())
                loss = lam * loss + (1.0 - lam) * loss_b
            return loss, (aux, logits, updates["batch_stats"])

        grad_fn = jax.value_and_grad(compute_loss, has_aux=True)
        (loss, (aux, logits, batch_stats)), grads = grad_fn(state.params)
        grads = jax.lax.pmean(grads, AXIS)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        correct = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        if mix is not None:
            correct = bbn.mixed_accuracy(logits, batch["label"], batch["label_rb"], mix)
        metrics = {
            "loss": jax.lax.pmean(loss, AXIS),
            "train_top1": jax.lax.pmean(correct, AXIS),
            "alpha": jnp.asarray(aux.get("alpha", 0.0), jnp.float32),
            "lr": jnp.asarray(lr_schedule(step), jnp.float32),
            "step": step,
        }
        new_state = state.replace(
            step=step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, metrics

    return step_fn


def make_multi_step(step_fn: Callable, num_steps: int, unroll: bool | None = None) -> Callable:
    """`num_steps` train steps in one compiled call (lax.scan); metrics stacked per step.

    ``unroll`` (default: on the CPU backend) copies the step `num_steps` times instead of looping:
    XLA's CPU backend runs this step inside a while loop ~30x slower (BENCHMARKS.md).
    """
    if unroll is None:
        unroll = jax.default_backend() == "cpu"

    def multi(state, data):
        def body(s, _):
            return step_fn(s, data)

        return jax.lax.scan(body, state, None, length=num_steps, unroll=num_steps if unroll else 1)

    return multi


def make_loop_steps(step_fn: Callable) -> Callable:
    """`n` train steps (n traced: one compiled call serves every length) in a while loop, for
    accelerators: one dispatch runs up to the next log/eval event, often a whole epoch.

    Metrics come back reduced, shaped like one step's with a leading axis of 1: the loss and
    train accuracy as means over the n steps, `count` = n, lr/α of the last step, and `step`
    the first step whose loss was not finite (else the last step), so a divergence is named.
    """

    def loop(state, data, n):
        _, m0 = jax.eval_shape(step_fn, state, data)
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), m0)
        acc0 = {"sums": {"loss": zeros["loss"], "train_top1": zeros["train_top1"]}}
        acc0["last"] = zeros
        acc0["first_bad"] = jnp.full(m0["step"].shape, -1, m0["step"].dtype)

        def body(_, carry):
            state, acc = carry
            state, m = step_fn(state, data)
            bad = ~jnp.isfinite(m["loss"]) & (acc["first_bad"] < 0)
            acc = {
                "sums": {k: acc["sums"][k] + m[k] for k in acc["sums"]},
                "last": m,
                "first_bad": jnp.where(bad, m["step"], acc["first_bad"]),
            }
            return state, acc

        state, acc = jax.lax.fori_loop(0, n, body, (state, acc0))
        count = jnp.asarray(n, jnp.float32)
        metrics = dict(acc["last"])
        for k, total in acc["sums"].items():
            metrics[k] = total / count
        metrics["step"] = jnp.where(acc["first_bad"] >= 0, acc["first_bad"], metrics["step"])
        metrics["count"] = jnp.full(m0["loss"].shape, count)
        return state, jax.tree_util.tree_map(lambda x: x[None], metrics)

    return loop


def pmap_train(fn: Callable, donate: bool = True) -> Callable:
    return jax.pmap(fn, axis_name=AXIS, donate_argnums=(0,) if donate else ())


def make_eval_step(model: nn.Module, num_classes: int) -> Callable:
    """Eval step → per-class sufficient statistics psum'd over all devices and hosts."""
    with_confusion = num_classes <= evaluate.MAX_CONFUSION_CLASSES

    def eval_fn(params, batch_stats, batch, logit_bias=None):
        logits, out = model.apply(
            {"params": params, "batch_stats": batch_stats}, batch["image"], train=False
        )
        if logit_bias is not None:
            logits = logits + logit_bias
        stats = evaluate.eval_stats(
            logits, out["features"], batch["label"], batch["mask"], num_classes, with_confusion
        )
        return jax.lax.psum(stats, AXIS)

    return eval_fn


def stack_eval_batches(batches: Any) -> dict[str, Any]:
    """Every batch of a split as one array per key: (local devices, batches, per device, ...)."""
    listed = list(batches)
    if not listed:
        raise ValueError("the evaluation split produced no batches")
    return {k: np.stack([b[k] for b in listed], axis=1) for k in listed[0]}


def make_eval_scan(eval_fn: Callable) -> Callable:
    """A whole split in one call (to be pmapped): lax.scan over its stacked batches, the psum'd
    statistics summed on the device, so an evaluation is one dispatch and one fetch."""

    def run(params, batch_stats, stacked):
        first = jax.tree_util.tree_map(lambda x: x[0], stacked)
        shapes = jax.eval_shape(eval_fn, params, batch_stats, first)
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(total, batch):
            stats = eval_fn(params, batch_stats, batch)
            return jax.tree_util.tree_map(jnp.add, total, stats), None

        total, _ = jax.lax.scan(body, zeros, stacked)
        return total

    return run


def run_evaluation(
    p_eval: Callable, params: Any, batch_stats: Any, batches: Any, logit_bias: Any = None
) -> dict[str, Any]:
    """Sum the eval step's statistics over every batch of a split.

    Each batch's statistics come back from the first device one batch late (the next batch is
    already dispatched) and are summed in NumPy: adding them with eager JAX ops compiled a
    program per statistic shape at every run start.
    """
    totals, pending = None, None
    for batch in batches:
        if logit_bias is None:
            stats = p_eval(params, batch_stats, batch)
        else:
            stats = p_eval(params, batch_stats, batch, logit_bias)
        if pending is not None:
            totals = _add(totals, replication.first_replica(pending))
        pending = stats
    if pending is None:
        raise ValueError("the evaluation split produced no batches")
    return _add(totals, replication.first_replica(pending))


def _add(totals: Any, stats: Any) -> Any:
    return stats if totals is None else jax.tree_util.tree_map(np.add, totals, stats)


class Evaluator:
    """Evaluate a split: one compiled call a batch, or (`one_call`) one call for the whole
    split on its stacked batches, placed on the devices once and reused at every evaluation.

    `eval_fn(params, batch_stats, batch) -> psum'd stats` is the per-device step (a sweep
    passes it vmapped over its runs); statistics come back from the first device, summed.
    """

    def __init__(self, eval_fn: Callable, batches_of: Callable[[str], Any], one_call: bool):
        self.batches_of = batches_of
        self.one_call = one_call
        self.p_eval = jax.pmap(eval_fn, axis_name=AXIS)
        self.p_scan = jax.pmap(make_eval_scan(eval_fn), axis_name=AXIS) if one_call else None
        self._on_device: dict[str, Any] = {}

    def __call__(self, split: str, params: Any, batch_stats: Any) -> dict[str, Any]:
        if not self.one_call:
            return run_evaluation(self.p_eval, params, batch_stats, self.batches_of(split))
        if split not in self._on_device:
            stacked = stack_eval_batches(self.batches_of(split))
            self._on_device[split] = replication.shard(stacked)
        return replication.first_replica(self.p_scan(params, batch_stats, self._on_device[split]))
