"""Long-tailed class profiles and subset selection, reproducing LDAM-DRW's IMBALANCECIFAR.

The CIFAR-LT benchmarks used by FBL (and LDAM, Decoupling, ...) are carved from the balanced
CIFAR training sets with the recipe in LDAM-DRW's ``imbalance_cifar.py``. The class counts must
match that code bit for bit (Table 1 of the paper), so the float expression is reproduced
exactly, and the subset is drawn with the same NumPy random stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PROFILES = ("exp", "step")


def long_tail_counts(
    num_classes: int, n_max: int, imbalance_factor: float, profile: str = "exp"
) -> list[int]:
    """Per-class image counts of a long-tailed profile (class 0 is the head).

    ``exp``: ``int(n_max * (1/IF) ** (i / (C - 1)))`` -- LDAM's
    ``img_max * (imb_factor ** (cls_idx / (cls_num - 1.0)))`` with ``imb_factor = 1/IF``.
    ``step``: the first ``C // 2`` classes keep ``n_max``, the others ``int(n_max * (1/IF))``.
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if int(n_max) != n_max or n_max < 1:
        raise ValueError(f"n_max (images of the head class) must be an integer >= 1, got {n_max!r}")
    if imbalance_factor is None or not np.isfinite(imbalance_factor) or imbalance_factor < 1:
        raise ValueError(
            f"imbalance_factor must be a finite number >= 1 (n_max / n_min, e.g. 100), "
            f"got {imbalance_factor!r}; use 1 for a balanced set"
        )
    if profile not in PROFILES:
        raise ValueError(f"unknown long-tail profile {profile!r}; choose one of {PROFILES}")
    num_classes = int(num_classes)
    img_max = float(n_max)
    imb_factor = 1.0 / float(imbalance_factor)  # LDAM passes imb_factor = 0.01 for IF 100
    if profile == "exp":
        if num_classes == 1:
            return [int(img_max)]
        return [
            int(img_max * (imb_factor ** (cls_idx / (num_classes - 1.0))))
            for cls_idx in range(num_classes)
        ]
    head = num_classes // 2
    return [int(img_max)] * head + [int(img_max * imb_factor)] * (num_classes - head)


def select_long_tail_indices(
    labels: np.ndarray | Sequence[int], counts: Sequence[int], seed: int = 0
) -> np.ndarray:
    """Indices of the long-tailed subset, as LDAM's ``gen_imbalanced_data``.

    ``np.random.seed(seed)`` then, for each class ``c`` in ``0..C-1``, shuffle the indices of
    that class (in their original order) and keep the first ``counts[c]``. The result is
    concatenated in class order, so the subset is a pure function of (labels, counts, seed).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    rng = np.random.RandomState(seed)
    chosen = []
    for c, n_c in enumerate(counts):
        if n_c < 0:
            raise ValueError(f"counts[{c}] = {n_c} is negative; counts must be >= 0")
        idx = np.where(labels == c)[0]
        if len(idx) < n_c:
            raise ValueError(
                f"class {c} has only {len(idx)} examples but the long-tail profile asks for "
                f"{n_c}; lower n_max or check the labels"
            )
        rng.shuffle(idx)
        chosen.append(idx[:n_c])
    if not chosen:
        return np.zeros((0,), np.int64)
    return np.concatenate(chosen).astype(np.int64)


def class_counts_from_labels(labels: np.ndarray | Sequence[int], num_classes: int) -> np.ndarray:
    """Examples per class (int64, shape (C,)); every class must be present (losses divide by n_c)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise ValueError(f"label {bad} is outside [0, {num_classes}); check num_classes")
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes).astype(np.int64)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(
            f"class {int(empty[0])} has no training examples ({empty.size} empty classes in all: "
            f"{empty[:10].tolist()}...); every class needs at least one example"
        )
    return counts


def shot_groups(
    class_counts: np.ndarray | Sequence[int], many: int = 100, few: int = 20
) -> dict[str, np.ndarray]:
    """Boolean masks (C,) of the usual many-shot (> many), medium, and few-shot (< few) classes."""
    if few > many:
        raise ValueError(f"few ({few}) must not exceed many ({many})")
    counts = np.asarray(class_counts)
    return {
        "many": counts > many,
        "medium": (counts >= few) & (counts <= many),
        "few": counts < few,
    }
