"""The decoupling methods as pure functions and step builders, free of files and run state.

tau-normalisation and the post-hoc logit correction are NumPy/JAX functions of the classifier
or the class counts; the eval, tau-sweep and classifier-training steps are built here to be
pmapped on `train_steps.AXIS` by decouple.py. Tests check each against NumPy on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fbl_jax import losses
from fbl_jax.train import evaluation as evaluate
from fbl_jax.train import steps as train_steps

NORM_EPS = 1e-12  # floor of a classifier column's norm in tau-normalisation


def tau_normalize(kernel: Any, tau: float) -> jnp.ndarray:
    """w_j / ||w_j||^tau for each class column w_j of a (D, C) kernel; tau = 0 is the identity."""
    kernel = jnp.asarray(kernel, jnp.float32)
    norms = jnp.linalg.norm(kernel, axis=0, keepdims=True)
    return kernel / jnp.power(jnp.maximum(norms, NORM_EPS), tau)


def tau_normalized_params(params: Any, tau: float) -> Any:
    """A copy of `params` with the linear head's kernel tau-normalised (bias unchanged)."""
    head = params.get("head", {}) if hasattr(params, "get") else {}
    if "kernel" not in head or "bias" not in head:
        raise ValueError(
            "tau_norm needs a linear classifier 'head' with 'kernel' and 'bias' parameters, "
            f"found head keys {sorted(head)}"
        )
    new_head = {**head, "kernel": np.asarray(tau_normalize(head["kernel"], tau))}
    return {**params, "head": new_head}


def posthoc_bias(class_counts: Any, tau: float) -> np.ndarray:
    """The additive logit correction -tau * log(prior) of post-hoc logit adjustment."""
    counts = np.asarray(class_counts)
    zeros = np.zeros(counts.shape, np.float32)
    return np.asarray(losses.posthoc_logit_adjust(zeros, counts, tau), np.float32)


# ----------------------------------------------------------------------------- eval steps


def make_adjusted_eval_step(model: Any, num_classes: int) -> Callable:
    """`train_steps.make_eval_step` with logits * adjust['scale'] + adjust['bias'] (per class)."""
    with_confusion = num_classes <= evaluate.MAX_CONFUSION_CLASSES

    def eval_fn(params, batch_stats, batch, adjust):
        logits, out = model.apply(
            {"params": params, "batch_stats": batch_stats}, batch["image"], train=False
        )
        logits = logits * adjust["scale"] + adjust["bias"]
        stats = evaluate.eval_stats(
            logits, out["features"], batch["label"], batch["mask"], num_classes, with_confusion
        )
        return jax.lax.psum(stats, train_steps.AXIS)

    return eval_fn


def make_sweep_step(model: Any, num_classes: int, adjusted_logits: Callable) -> Callable:
    """Per-class (count, correct[tau]) for a whole tau grid in one forward pass."""

    def sweep_fn(params, batch_stats, batch, taus):
        logits, out = model.apply(
            {"params": params, "batch_stats": batch_stats}, batch["image"], train=False
        )
        onehot = jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.float32)
        onehot = onehot * batch["mask"].astype(jnp.float32)[:, None]

        def correct(tau):
            z = adjusted_logits(params, logits, out["features"], tau)
            hit = (jnp.argmax(z, -1) == batch["label"]).astype(jnp.float32)
            return (onehot * hit[:, None]).sum(0)

        stats = {"count": onehot.sum(0), "correct": jax.lax.map(correct, taus)}
        return jax.lax.psum(stats, train_steps.AXIS)

    return sweep_fn


def balanced_accuracy_per_tau(stats: dict[str, Any]) -> np.ndarray:
    """Mean per-class accuracy over the classes present, one value per tau."""
    count = np.asarray(stats["count"], np.float64)
    present = count > 0
    return (np.asarray(stats["correct"], np.float64)[:, present] / count[present]).mean(1)


# ----------------------------------------------------------------------------- cRT / LWS steps


@flax.struct.dataclass
class ClassifierState:
    step: jnp.ndarray
    trainable: Any  # {"head": ...} (cRT) or {"scale": (C,)} (LWS)
    opt_state: Any


def classifier_logits(
    model: Any, method: str, frozen: Any, trainable: Any, images: jnp.ndarray, logit_scale: float
) -> jnp.ndarray:
    """Logits of the frozen backbone (eval mode) with the trained head (cRT) or scales (LWS)."""
    params = frozen["params"]
    if method == "crt":
        params = {**params, "head": trainable["head"]}
    logits, _ = model.apply(
        {"params": params, "batch_stats": frozen["batch_stats"]}, images, train=False
    )
    logits = logits * logit_scale
    if method == "lws":
        logits = logits * trainable["scale"]
    return logits


def make_classifier_step(
    model: Any,
    method: str,
    tx: Any,
    lr_schedule: Callable,
    logit_scale: float,
    make_batch: Callable | None = None,
) -> Callable:
    """One SGD step on the classifier part only, cross-entropy; to be pmapped on AXIS."""

    def step_fn(state: ClassifierState, frozen: Any, data: Any):
        batch = make_batch(data, state.step) if make_batch is not None else data

        def compute_loss(trainable):
            logits = classifier_logits(
                model, method, frozen, trainable, batch["image"], logit_scale
            )
            return losses.cross_entropy_loss(logits, batch["label"]), logits

        (loss, logits), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.trainable)
        grads = jax.lax.pmean(grads, train_steps.AXIS)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        trainable = jax.tree_util.tree_map(jnp.add, state.trainable, updates)
        correct = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        metrics = {
            "loss": jax.lax.pmean(loss, train_steps.AXIS),
            "train_top1": jax.lax.pmean(correct, train_steps.AXIS),
            "lr": jnp.asarray(lr_schedule(state.step), jnp.float32),
        }
        return state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state), metrics

    return step_fn
