"""Figures for fbl-report (matplotlib, Agg backend, fixed pixel size).

Every figure is saved at figsize × dpi without tight bounding boxes, so its size in pixels is
known in advance (8×5 in at 100 dpi → 800×500 px). Classes are always ordered by training
count, most frequent first, as in the paper's Fig. 2 and Tables 5/6.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fbl_jax.run_dir import safe_filename  # noqa: E402

if TYPE_CHECKING:
    from fbl_jax.run_dir import Run

# Class-name tick labels only up to this many classes; beyond it the axis shows frequency rank.
MAX_TICK_LABELS = 30


def _values(values: Sequence[Any] | None, order: Sequence[int]) -> np.ndarray:
    """values[order] as float, None (class absent from the split) → NaN."""
    if values is None:
        return np.full(len(order), np.nan)
    return np.array([np.nan if values[c] is None else float(values[c]) for c in order])


def _save(fig: Any, path: pathlib.Path, dpi: float) -> pathlib.Path:
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return path


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def _class_axis(ax: Any, runs: Sequence[Run], n: int) -> None:
    """Class names as ticks when every run has the same few classes in the same order."""
    first = runs[0]
    same = all(
        r.class_order() == first.class_order() and r.class_names == first.class_names for r in runs
    )
    if same and n <= MAX_TICK_LABELS:
        ax.set_xticks(range(n))
        ax.set_xticklabels([first.class_names[c] for c in first.class_order()], rotation=90)
        ax.set_xlabel("class (most → least frequent in training)")
    else:
        ax.set_xlabel("class rank by training count (0 = most frequent)")


def select_classes(
    run: Run, classes: Sequence[int] | None, n_head: int = 2, n_tail: int = 2
) -> list[tuple[str, int]]:
    """(panel label, class id) pairs: the given ids, or the n_head most and n_tail least frequent."""
    if classes is not None:
        return [(f"class {c}", c) for c in classes]
    order = run.class_order()
    head = [(f"most frequent #{i + 1}", c) for i, c in enumerate(order[:n_head])]
    tail_ids = order[::-1][:n_tail][::-1]
    tail = [(f"least frequent #{len(tail_ids) - i}", c) for i, c in enumerate(tail_ids)]
    taken = {c for _, c in head}
    return head + [(label, c) for label, c in tail if c not in taken]


def plot_feature_norm_over_epochs(
    runs: Sequence[Run],
    path: pathlib.Path,
    classes: Sequence[int] | None,
    figsize: tuple[float, float],
    dpi: float,
) -> pathlib.Path:
    """Mean test feature norm of chosen head/tail classes per eval epoch, one line per run."""
    picks = {r.name: select_classes(r, classes) for r in runs}
    panels = max(len(p) for p in picks.values())
    ncols = min(panels, 4)
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, sharey=True)
    flat = axes.ravel()
    drawn = [False] * len(flat)
    for run in runs:
        evals = [e for e in run.test_evals if e.get("feature_norm_per_class") is not None]
        epochs = [e.get("epoch", e.get("step")) for e in evals]
        for i, (label, c) in enumerate(picks[run.name]):
            norms = [e["feature_norm_per_class"][c] for e in evals]
            norms = [np.nan if v is None else v for v in norms]
            name = f"{run.name}: {run.class_names[c]} (n={run.counts[c]})"
            flat[i].plot(epochs, norms, marker="o", markersize=3, label=name)
            flat[i].set_title(label, fontsize=9)
            drawn[i] = drawn[i] or bool(evals)
    for i, ax in enumerate(flat):
        if i >= panels:
            ax.set_visible(False)
            continue
        if drawn[i]:
            ax.legend(fontsize=6)
        else:
            _no_data(ax)
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean feature norm (test)")
    fig.suptitle("Feature norm over training: head vs tail classes")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_feature_norm_distribution(
    runs: Sequence[Run], path: pathlib.Path, figsize: tuple[float, float], dpi: float
) -> pathlib.Path:
    """Per-class mean feature norm at the last test eval, classes by frequency, one line per run."""
    fig, ax = plt.subplots(figsize=figsize)
    n = 0
    for run in runs:
        last = run.last_test()
        if not last or last.get("feature_norm_per_class") is None:
            continue
        y = _values(last["feature_norm_per_class"], run.class_order())
        small = len(y) <= MAX_TICK_LABELS
        ax.plot(np.arange(len(y)), y, marker="o" if small else None, markersize=3, label=run.name)
        n = max(n, len(y))
    if n:
        ax.legend(fontsize=7)
        _class_axis(ax, runs, n)
    else:
        _no_data(ax)
    ax.set_ylabel("mean feature norm (test, last eval)")
    ax.set_title("Per-class feature norm")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_per_class_accuracy(
    runs: Sequence[Run], path: pathlib.Path, figsize: tuple[float, float], dpi: float
) -> pathlib.Path:
    """Per-class top-1 (%) at the last test eval as bars, runs side by side, classes by frequency."""
    fig, ax = plt.subplots(figsize=figsize)
    series = []
    for run in runs:
        last = run.last_test()
        if last and last.get("per_class_accuracy") is not None:
            series.append((run.name, 100 * _values(last["per_class_accuracy"], run.class_order())))
    width = 0.8 / max(len(series), 1)
    for k, (name, y) in enumerate(series):
        x = np.arange(len(y)) - 0.4 + width * (k + 0.5)
        ax.bar(x, np.nan_to_num(y), width=width, label=name)
    if series:
        ax.legend(fontsize=7)
        _class_axis(ax, runs, max(len(y) for _, y in series))
    else:
        _no_data(ax)
    ax.set_ylim(0, 100)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Per-class accuracy (test, last eval)")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_confusion(
    run: Run, path: pathlib.Path, figsize: tuple[float, float], dpi: float
) -> pathlib.Path | None:
    """Row-normalised confusion matrix of the last test eval (classes by frequency), if logged."""
    last = run.last_test()
    if not last or last.get("confusion") is None:
        return None
    order = run.class_order()
    cm = np.asarray(last["confusion"], dtype=np.float64)[np.ix_(order, order)]
    rows = cm.sum(axis=1, keepdims=True)
    cm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=figsize)
    im = ax.imshow(cm, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    if len(order) <= MAX_TICK_LABELS:
        names = [run.class_names[c] for c in order]
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("predicted class (by training frequency)")
    ax.set_ylabel("true class (by training frequency)")
    ax.set_title(f"{run.name}: confusion, row-normalised (step {last.get('step')})")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_schedules(
    runs: Sequence[Run], path: pathlib.Path, figsize: tuple[float, float], dpi: float
) -> pathlib.Path:
    """Learning rate and FBL α(t) against epoch, from the train records."""
    fig, (ax_lr, ax_a) = plt.subplots(1, 2, figsize=figsize)
    any_data = False
    for run in runs:
        for ax, key in ((ax_lr, "lr"), (ax_a, "alpha")):
            recs = [t for t in run.train if t.get(key) is not None]
            if recs:
                any_data = True
                ax.plot(
                    [t.get("epoch", t.get("step")) for t in recs],
                    [t[key] for t in recs],
                    label=run.name,
                )
    for ax, title in ((ax_lr, "learning rate"), (ax_a, "α(t)")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if any_data:
            ax.legend(fontsize=7)
        else:
            _no_data(ax)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_all(
    runs: Sequence[Run],
    out: pathlib.Path,
    *,
    classes: Sequence[int] | None,
    dpi: float,
    figsize: tuple[float, float],
) -> list[pathlib.Path]:
    """Write every figure into `out`; returns the PNG paths (confusion only where logged)."""
    paths = [
        plot_feature_norm_over_epochs(
            runs, out / "feature_norm_over_epochs.png", classes, figsize, dpi
        ),
        plot_feature_norm_distribution(runs, out / "feature_norm_distribution.png", figsize, dpi),
        plot_per_class_accuracy(runs, out / "per_class_accuracy.png", figsize, dpi),
        plot_schedules(runs, out / "schedules.png", figsize, dpi),
    ]
    for run in runs:
        p = plot_confusion(run, out / f"confusion_{safe_filename(run.name)}.png", figsize, dpi)
        if p is not None:
            paths.append(p)
    return paths
