"""Figures for fbl-report, sized and labelled for a paper (matplotlib, Agg backend).

Each `draw_*` function returns its Figure, unsaved, so tests can inspect the axes; `save_figure`
writes it as PNG (for summary.md) and as PDF beside it (same stem, TrueType fonts, for LaTeX).
PNGs are saved at figsize × dpi without tight bounding boxes, so their size in pixels is known in
advance (8×5 in at 100 dpi → 800×500 px). Classes are ordered by training count, most frequent
first, as in the paper's Fig. 2 and Tables 5/6; text is never smaller than 8 pt.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fbl_jax.report.labels import legend_labels  # noqa: E402
from fbl_jax.report.run_dir import Run, safe_filename  # noqa: E402

# Class-name tick labels only up to this many classes; beyond it the axis shows frequency rank.
MAX_TICK_LABELS = 30
# Up to this many classes the tick labels stand upright, count under the name; else rotated.
MAX_UPRIGHT_LABELS = 10
TICK_FONTSIZE = 8
LEGEND_FONTSIZE = 8
LABEL_FONTSIZE = 9
TITLE_FONTSIZE = 10


def _values(values: Sequence[Any] | None, order: Sequence[int]) -> np.ndarray:
    """values[order] as float, None (class absent from the split) → NaN."""
    if values is None:
        return np.full(len(order), np.nan)
    return np.array([np.nan if values[c] is None else float(values[c]) for c in order])


def _finish(fig: Any) -> Any:
    """Paper font sizes on every axes (ticks made later inherit them), then a tight layout."""
    for ax in fig.axes:
        ax.tick_params(which="both", labelsize=TICK_FONTSIZE)  # log axes label minor ticks
        ax.xaxis.label.set_fontsize(LABEL_FONTSIZE)
        ax.yaxis.label.set_fontsize(LABEL_FONTSIZE)
        ax.title.set_fontsize(TITLE_FONTSIZE)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: pathlib.Path, dpi: float) -> pathlib.Path:
    """Write `path` (PNG) and the same figure as PDF beside it; close the figure."""
    fig.savefig(path, dpi=dpi, format="png")
    with plt.rc_context({"pdf.fonttype": 42}):  # TrueType, not Type 3: what publishers accept
        fig.savefig(path.with_suffix(".pdf"), format="pdf")
    plt.close(fig)
    return path


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def class_tick_labels(run: Run, upright: bool = True) -> list[str]:
    """Class names by training frequency with the training count: 'dog\\n(500)' or 'dog (500)'."""
    sep = "\n" if upright else " "
    return [f"{run.class_names[c]}{sep}({run.counts[c]})" for c in run.class_order()]


def _class_axis(ax: Any, runs: Sequence[Run], n: int) -> None:
    """Class names and counts as ticks when every run has the same few classes in the same order."""
    first = runs[0]
    same = all(
        r.class_order() == first.class_order()
        and r.class_names == first.class_names
        and r.counts == first.counts
        for r in runs
    )
    if same and n <= MAX_TICK_LABELS:
        upright = n <= MAX_UPRIGHT_LABELS
        ax.set_xticks(range(n))
        ax.set_xticklabels(class_tick_labels(first, upright), rotation=0 if upright else 90)
        ax.set_xlabel("class (training count), most → least frequent")
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


def accuracy_ylim(max_percent: float) -> tuple[float, float]:
    """Bars start at 0; the top is the next multiple of 10 above the tallest bar + 5, ≤ 100."""
    if not np.isfinite(max_percent):
        return 0.0, 100.0
    return 0.0, float(min(100.0, 10 * math.ceil((max_percent + 5) / 10)))


def draw_feature_norm_over_epochs(
    runs: Sequence[Run], classes: Sequence[int] | None, figsize: tuple[float, float]
) -> Any:
    """Mean test feature norm of chosen head/tail classes per eval epoch, one line per run."""
    picks = [select_classes(r, classes) for r in runs]
    labels = legend_labels(runs)
    panels = max(len(p) for p in picks)
    ncols = min(panels, 4)
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, sharey=True)
    flat = axes.ravel()
    drawn = [False] * len(flat)
    for i in range(panels):
        # One class per panel for every run: its name and count go in the title, not the legend.
        at_i = [(r, p[i]) for r, p in zip(runs, picks) if i < len(p)]
        ids = {(c, r.class_names[c], r.counts[c]) for r, (_, c) in at_i}
        title = at_i[0][1][0]
        if len(ids) == 1:
            _, cname, count = next(iter(ids))
            title += f"\n{cname} (n={count})"  # two lines: four panels side by side
        flat[i].set_title(title)
    for run, pick, label in zip(runs, picks, labels):
        evals = [e for e in run.test_evals if e.get("feature_norm_per_class") is not None]
        epochs = [e.get("epoch", e.get("step")) for e in evals]
        for i, (_, c) in enumerate(pick):
            norms = [e["feature_norm_per_class"][c] for e in evals]
            norms = [np.nan if v is None else v for v in norms]
            flat[i].plot(epochs, norms, marker="o", markersize=3, label=label)
            drawn[i] = drawn[i] or bool(evals)
    for i, ax in enumerate(flat):
        if i >= panels:
            ax.set_visible(False)
            continue
        if not drawn[i]:
            _no_data(ax)
        elif i == 0:
            ax.legend(fontsize=LEGEND_FONTSIZE)
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean feature norm (test)")
    fig.suptitle("Feature norm over training: head vs tail classes", fontsize=TITLE_FONTSIZE)
    return _finish(fig)


def draw_feature_norm_distribution(runs: Sequence[Run], figsize: tuple[float, float]) -> Any:
    """Per-class mean feature norm at the last test eval: points per class, runs side by side."""
    fig, ax = plt.subplots(figsize=figsize)
    series = []
    for run, label in zip(runs, legend_labels(runs)):
        last = run.last_test()
        if last and last.get("feature_norm_per_class") is not None:
            series.append((label, _values(last["feature_norm_per_class"], run.class_order())))
    n = max((len(y) for _, y in series), default=0)
    small = n <= MAX_TICK_LABELS
    width = 0.6 / max(len(series), 1) if small else 0.0  # runs dodge within a class's slot
    for k, (label, y) in enumerate(series):
        x = np.arange(len(y)) + (k - (len(series) - 1) / 2) * width
        ax.plot(x, y, linestyle="none", marker="o", markersize=5 if small else 2, label=label)
    if series:
        ax.legend(fontsize=LEGEND_FONTSIZE)
        _class_axis(ax, runs, n)
        if small:
            ax.set_xlim(-0.5, n - 0.5)
            ax.grid(axis="y", alpha=0.3)
    else:
        _no_data(ax)
    ax.set_ylabel("mean feature norm (test, last eval)")
    ax.set_title("Per-class feature norm")
    return _finish(fig)


def draw_per_class_accuracy(runs: Sequence[Run], figsize: tuple[float, float]) -> Any:
    """Per-class top-1 (%) at the last test eval as bars, runs side by side, classes by frequency."""
    fig, ax = plt.subplots(figsize=figsize)
    series = []
    for run, label in zip(runs, legend_labels(runs)):
        last = run.last_test()
        if last and last.get("per_class_accuracy") is not None:
            series.append((label, 100 * _values(last["per_class_accuracy"], run.class_order())))
    width = 0.8 / max(len(series), 1)
    for k, (label, y) in enumerate(series):
        x = np.arange(len(y)) - 0.4 + width * (k + 0.5)
        ax.bar(x, np.nan_to_num(y), width=width, label=label)
    top = -np.inf
    if series:
        ax.legend(fontsize=LEGEND_FONTSIZE)
        _class_axis(ax, runs, max(len(y) for _, y in series))
        top = max((float(np.nanmax(y)) for _, y in series if np.isfinite(y).any()), default=top)
    else:
        _no_data(ax)
    ax.set_ylim(*accuracy_ylim(top))
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Per-class accuracy (test, last eval)")
    return _finish(fig)


def draw_confusion(run: Run, figsize: tuple[float, float]) -> Any | None:
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
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([run.class_names[c] for c in order], rotation=90)
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels(class_tick_labels(run, upright=False))
    ax.set_xlabel("predicted class (by training frequency)")
    ax.set_ylabel("true class (training count)")
    ax.set_title(f"{run.name}: confusion, row-normalised (step {last.get('step')})")
    return _finish(fig)


def draw_schedules(runs: Sequence[Run], figsize: tuple[float, float]) -> Any:
    """Learning rate (log axis: its step drops span decades) and FBL α(t) against epoch."""
    fig, (ax_lr, ax_a) = plt.subplots(1, 2, figsize=figsize)
    positive_lr = False
    for run, label in zip(runs, legend_labels(runs)):
        for ax, key in ((ax_lr, "lr"), (ax_a, "alpha")):
            recs = [t for t in run.train if t.get(key) is not None]
            if recs:
                values = [t[key] for t in recs]
                positive_lr = positive_lr or (key == "lr" and max(values) > 0)
                ax.plot([t.get("epoch", t.get("step")) for t in recs], values, label=label)
    if positive_lr:
        ax_lr.set_yscale("log", nonpositive="mask")
    for ax, title in ((ax_lr, "learning rate (log scale)"), (ax_a, "α(t)")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if not ax.lines:
            _no_data(ax)
    if ax_lr.lines or ax_a.lines:
        (ax_lr if ax_lr.lines else ax_a).legend(fontsize=LEGEND_FONTSIZE)
    return _finish(fig)


def plot_all(
    runs: Sequence[Run],
    out: pathlib.Path,
    *,
    classes: Sequence[int] | None,
    dpi: float,
    figsize: tuple[float, float],
) -> list[pathlib.Path]:
    """Write every figure into `out` as PNG + PDF; returns the PNG paths (confusion if logged)."""
    figures = [
        ("feature_norm_over_epochs", draw_feature_norm_over_epochs(runs, classes, figsize)),
        ("feature_norm_distribution", draw_feature_norm_distribution(runs, figsize)),
        ("per_class_accuracy", draw_per_class_accuracy(runs, figsize)),
        ("schedules", draw_schedules(runs, figsize)),
    ]
    paths = [save_figure(fig, out / f"{stem}.png", dpi) for stem, fig in figures]
    for run in runs:
        fig = draw_confusion(run, figsize)
        if fig is not None:
            paths.append(save_figure(fig, out / f"confusion_{safe_filename(run.name)}.png", dpi))
    return paths
