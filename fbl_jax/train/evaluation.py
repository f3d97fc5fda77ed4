"""Evaluation from mergeable sufficient statistics.

The eval step returns per-class sums (examples, top-1 hits, top-5 hits, feature-norm sums and a
confusion matrix) that are psum'd across devices and hosts and added across batches. Metrics are
computed once from the totals, so no average of averages is ever taken and padded examples
(mask 0) count nowhere.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Classes above this count get no confusion matrix (8,142² floats for iNaturalist is 265 MB).
MAX_CONFUSION_CLASSES = 1000
# Many/medium/few thresholds on the training count, as in OLTR/Decoupling/FBL.
MANY_SHOT_MIN = 100  # many: > 100
FEW_SHOT_MAX = 20  # few: < 20


def eval_stats(
    logits: jnp.ndarray,
    features: jnp.ndarray,
    labels: jnp.ndarray,
    mask: jnp.ndarray,
    num_classes: int,
    with_confusion: bool,
) -> dict[str, jnp.ndarray]:
    """Per-class sums for one (per-device) batch; callers psum them across devices."""
    mask = mask.astype(jnp.float32)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * mask[:, None]
    pred = jnp.argmax(logits, axis=-1)
    correct = (pred == labels).astype(jnp.float32)
    k = min(5, num_classes)
    top_k = jax.lax.top_k(logits, k)[1]
    correct5 = jnp.any(top_k == labels[:, None], axis=-1).astype(jnp.float32)
    norm = jnp.linalg.norm(features.astype(jnp.float32), axis=-1)
    stats = {
        "count": onehot.sum(0),
        "correct": (onehot * correct[:, None]).sum(0),
        "correct5": (onehot * correct5[:, None]).sum(0),
        "norm_sum": (onehot * norm[:, None]).sum(0),
    }
    if with_confusion:
        pred_onehot = jax.nn.one_hot(pred, num_classes, dtype=jnp.float32)
        stats["confusion"] = onehot.T @ pred_onehot
    return stats


def shot_masks(class_counts: np.ndarray) -> dict[str, np.ndarray]:
    """Many (> 100 training images), medium (20..100) and few (< 20) class masks."""
    counts = np.asarray(class_counts)
    return {
        "many_shot": counts > MANY_SHOT_MIN,
        "medium_shot": (counts <= MANY_SHOT_MIN) & (counts >= FEW_SHOT_MAX),
        "few_shot": counts < FEW_SHOT_MAX,
    }


def metrics_from_stats(stats: dict[str, Any], class_counts: np.ndarray) -> dict[str, Any]:
    """Top-1/top-5, per-class and shot-group accuracy, per-class mean feature norm.

    Per-class numbers for classes absent from the split are NaN in the arrays and `None` in the
    JSON-ready lists; group and balanced accuracies average only over classes present.
    """
    count = np.asarray(stats["count"], np.float64)
    correct = np.asarray(stats["correct"], np.float64)
    correct5 = np.asarray(stats["correct5"], np.float64)
    norm_sum = np.asarray(stats["norm_sum"], np.float64)
    total = count.sum()
    if total <= 0:
        raise ValueError(
            "evaluation saw no examples: the split is empty or every example was masked"
        )
    present = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(present, correct / count, np.nan)
        norms = np.where(present, norm_sum / count, np.nan)
    out: dict[str, Any] = {
        "top1": float(correct.sum() / total),
        "top5": float(correct5.sum() / total),
        "balanced_top1": float(np.nanmean(per_class)),
        "per_class_accuracy": _to_list(per_class),
        "feature_norm_per_class": _to_list(norms),
        "mean_feature_norm": float(norm_sum.sum() / total),
        "num_examples": int(round(total)),
    }
    for name, group in shot_masks(class_counts).items():
        sel = group & present
        out[name] = float(per_class[sel].mean()) if sel.any() else None
    if "confusion" in stats and count.size <= 100:
        out["confusion"] = np.rint(np.asarray(stats["confusion"])).astype(int).tolist()
    return out


def _to_list(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]
