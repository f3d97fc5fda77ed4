"""Figures for fbl-report, sized and labelled for a paper (matplotlib, Agg backend).

Each `draw_*` function returns its Figure, unsaved, so tests can inspect the axes; `save_figure`
writes it as PNG (for summary.md) and as PDF beside it (same stem, TrueType fonts, for LaTeX).
A figure's size is either fixed, (width, height) in inches, or a column width alone
(`COLUMN_WIDTHS`: 3.3 in single, 6.9 in double), in which case the figure picks the height its
panels and legend need. PNGs are saved at that size × dpi without tight bounding boxes, so their
size in pixels is known in advance (8×5 in at 100 dpi → 800×500 px); matplotlib's constrained
layout keeps every label inside. Legends sit below the axes, their labels wrapped to the width;
tick labels that would collide are rotated or thinned. Classes are ordered by training count,
most frequent first, as in the paper's Fig. 2 and Tables 5/6; text is never smaller than 8 pt.
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
from matplotlib.ticker import (  # noqa: E402
    FixedFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

from fbl_jax.report.labels import legend_labels, wrap_label  # noqa: E402
from fbl_jax.report.run_dir import Run, safe_filename  # noqa: E402

# Paper column widths in inches (two-column layouts such as IEEE/CVPR: 3.3 in and 6.9 in).
COLUMN_WIDTHS = {"single": 3.3, "double": 6.9}
# Class-name tick labels only up to this many classes; beyond it the axis shows frequency rank.
MAX_TICK_LABELS = 30
TICK_FONTSIZE = 8
LEGEND_FONTSIZE = 8
LABEL_FONTSIZE = 9
TITLE_FONTSIZE = 9
SUPTITLE_FONTSIZE = 10
# Feature-norm-over-epochs panels are at least this wide (inches): 2 a row in one column, 4 in two.
MIN_PANEL_WIDTH = 1.5
MAX_LEGEND_COLUMNS = 4
# A figure that picks its own height grows so that no axes is lower than this (inches).
MIN_AXES_HEIGHT = 1.3
# Series a panel shows at most (one colour each, none repeated); more go to further figures.
MAX_SERIES = 8
# Feature norms spanning more than this factor (a cosine head's beside a linear one's) get a
# log axis, so the small ones are not flattened against zero.
LOG_NORM_RATIO = 5.0
# Runs on top of each other (same lr schedule) stay visible through their line styles.
LINESTYLES = ("-", "--", ":", "-.")
# ±1 std over a merged run's seeds on its per-class bars and points: thin, small caps
ERROR_BARS = {"error_kw": {"elinewidth": 0.8, "capsize": 2, "ecolor": "0.2"}}
# Tick spacings an epoch or rank axis may use: 5, 10, 20 … rather than 6 or 8.
NICE_STEPS = [1, 2, 5, 10]

Figsize = Sequence[float] | float
"""(width, height) in inches, or a width alone: the figure then chooses its height."""


def _values(values: Sequence[Any] | None, order: Sequence[int]) -> np.ndarray:
    """values[order] as float, None (class absent from the split) → NaN."""
    if values is None:
        return np.full(len(order), np.nan)
    return np.array([np.nan if values[c] is None else float(values[c]) for c in order])


def _size(figsize: Figsize, height: float) -> tuple[tuple[float, float], bool]:
    """(the figure's size, whether its height may grow to fit the legend)."""
    if isinstance(figsize, int | float):
        return (float(figsize), height), True
    w, h = figsize
    return (float(w), float(h)), False


def _new_figure(size: tuple[float, float], nrows: int = 1, ncols: int = 1, **kw: Any) -> Any:
    fig, axes = plt.subplots(nrows, ncols, figsize=size, layout="constrained", squeeze=False, **kw)
    fig.get_layout_engine().set(h_pad=0.03, w_pad=0.03, hspace=0.03, wspace=0.03)
    return fig, axes


def _text_width(renderer: Any, text: str, artist: Any) -> float:
    w, _, _ = renderer.get_text_width_height_descent(text, artist.get_fontproperties(), False)
    return w


def _wrap_to(artist: Any, max_px: float, renderer: Any) -> None:
    """Break a title's text into lines no wider than `max_px` (words stay whole)."""
    text = artist.get_text()
    if not text or max(_text_width(renderer, ln, artist) for ln in text.split("\n")) <= max_px:
        return
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}" if line else word
            if line and _text_width(renderer, trial, artist) > max_px:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    artist.set_text("\n".join(lines))


def _legend_below(fig: Any, handles: list[Any], labels: Sequence[str], grow: bool) -> Any:
    """One legend for the whole figure, under the axes, its labels wrapped to the width.

    Of the column counts that fit the figure's width, the one giving the shortest legend wins;
    labels are wrapped (after their commas) only where whole ones do not fit. With `grow` the
    figure becomes taller by the legend's height, so the axes keep their size.
    """
    if not handles:
        return None

    def legend(texts: Sequence[str], ncol: int) -> Any:
        return fig.legend(
            handles,
            texts,
            loc="outside lower center",
            ncols=ncol,
            fontsize=LEGEND_FONTSIZE,
            frameon=False,
            handlelength=1.8,
            columnspacing=1.0,
        )

    renderer = fig.canvas.get_renderer()
    width_in = fig.get_figwidth()
    char_in = 0.55 * LEGEND_FONTSIZE / 72  # an average character of the legend font

    def wrapped(ncol: int) -> list[str]:
        chars = int(((width_in - 0.15) / ncol - 0.45) / char_in)
        return [wrap_label(label, max(chars, 8)) for label in labels]

    best = (math.inf, 1, wrapped(1))  # the narrowest there is, should nothing fit
    for ncol in range(min(len(labels), MAX_LEGEND_COLUMNS), 0, -1):
        for texts in (list(labels), wrapped(ncol)):
            trial = legend(texts, ncol)
            box = trial.get_window_extent(renderer)
            trial.remove()
            if box.width <= 0.97 * width_in * fig.dpi:
                if box.height < best[0] - 0.5:  # ties: more columns, found first
                    best = (box.height, ncol, texts)
                break  # whole labels fit: no need to try them wrapped
    height, ncol, texts = best
    if grow and math.isfinite(height):
        fig.set_figheight(fig.get_figheight() + height / fig.dpi + 0.05)
    return legend(texts, ncol)


def _tick_labels(axis: Any) -> list[Any]:
    """The tick labels an axis draws: visible, non-empty, their tick inside the view."""
    low, high = sorted(axis.get_view_interval())
    out = []
    for ticks, locs in (
        (axis.get_major_ticks(), axis.get_majorticklocs()),
        (axis.get_minor_ticks(), axis.get_minorticklocs()),
    ):
        for tick, loc in zip(ticks, locs):
            label = tick.label1
            inside = low - 1e-9 * abs(low) <= loc <= high + 1e-9 * abs(high)
            if inside and label.get_visible() and label.get_text():
                out.append(label)
    return out


def labels_collide(axis: Any, renderer: Any, gap_pt: float = 2.0) -> bool:
    """True if two drawn tick labels of `axis` overlap or come closer than `gap_pt` points."""
    boxes = [t.get_window_extent(renderer) for t in _tick_labels(axis)]
    gap_px = gap_pt * axis.figure.dpi / 72
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if (
                a.x0 < b.x1 + gap_px
                and b.x0 < a.x1 + gap_px
                and a.y0 < b.y1 + gap_px
                and b.y0 < a.y1 + gap_px
            ):
                return True
    return False


def _thin_fixed_labels(axis: Any, texts: Sequence[str], renderer: Any, fig: Any) -> None:
    """Keep every k-th label of a class axis (the first, most frequent, always), smallest k."""
    for k in range(2, len(texts) + 1):
        axis.set_ticklabels([t if i % k == 0 else "" for i, t in enumerate(texts)])
        fig.draw_without_rendering()
        if not labels_collide(axis, renderer):
            return


def _short_name(name: str, suffix: str, max_px: float, artist: Any, renderer: Any) -> str:
    """`name + suffix`, the name cut (ending in '…') until it is at most `max_px` long."""
    text = name + suffix
    cut = len(name)
    while cut > 1 and _text_width(renderer, text, artist) > max_px:
        cut -= 1
        text = name[:cut] + "…" + suffix
    return text


def _rotate_class_ticks(
    fig: Any, ax: Any, classes: Sequence[tuple[str, int]], renderer: Any
) -> None:
    """Class ticks that collide upright: rotated 'name (count)', long names cut to at most 30 %
    of the figure's height, and every k-th if even those collide."""
    max_px = max(0.8 * fig.dpi, 0.3 * fig.bbox.height)
    artist = ax.xaxis.get_ticklabels()[0]
    rotated = [_short_name(n, f" ({c})", max_px, artist, renderer) for n, c in classes]
    ax.set_xticklabels(rotated, rotation=90)
    fig.draw_without_rendering()
    if labels_collide(ax.xaxis, renderer):
        _thin_fixed_labels(ax.xaxis, rotated, renderer, fig)


def _grow_short_axes(fig: Any, renderer: Any) -> None:
    """Make the figure taller where tick labels left an axes under MIN_AXES_HEIGHT inches."""
    for _ in range(3):  # the layout moves a little with the new height: check again
        heights = [
            ax.get_window_extent(renderer).height / fig.dpi
            for ax in fig.axes
            if ax.get_visible() and ax.get_label() != "<colorbar>"
        ]
        deficit = MIN_AXES_HEIGHT - min(heights, default=MIN_AXES_HEIGHT)
        if deficit < 0.01:
            return
        fig.set_figheight(fig.get_figheight() + deficit)
        fig.draw_without_rendering()


def _finish(
    fig: Any,
    class_axes: dict[Any, list[tuple[str, int]]] | None = None,
    grow: bool = False,
) -> Any:
    """Paper font sizes, then lay out: no tick labels colliding, titles wrapped to their width.

    `class_axes` maps an axes to its (class name, training count) ticks: upright 'name\n(count)'
    first, rotated if those collide, then every k-th if even those do. With `grow` the figure may
    become taller so that no axes is squeezed under MIN_AXES_HEIGHT by its tick labels.
    """
    for ax in fig.axes:
        ax.tick_params(which="both", labelsize=TICK_FONTSIZE)  # log axes label minor ticks
        ax.xaxis.label.set_fontsize(LABEL_FONTSIZE)
        ax.yaxis.label.set_fontsize(LABEL_FONTSIZE)
        ax.title.set_fontsize(TITLE_FONTSIZE)
    for label in (fig._suptitle, fig._supxlabel, fig._supylabel):
        if label is not None:
            label.set_fontsize(SUPTITLE_FONTSIZE if label is fig._suptitle else LABEL_FONTSIZE)
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    class_xaxes = []
    for ax, classes in (class_axes or {}).items():
        class_xaxes.append(ax.xaxis)
        if labels_collide(ax.xaxis, renderer):
            _rotate_class_ticks(fig, ax, classes, renderer)
    if fig._suptitle is not None:
        _wrap_to(fig._suptitle, 0.97 * fig.bbox.width, renderer)
    for ax in fig.axes:
        if ax.get_visible():
            box = ax.get_window_extent(renderer)
            _wrap_to(ax.title, max(box.width, 40.0), renderer)
            _wrap_to(ax.xaxis.label, max(box.width, 40.0), renderer)
    fig.draw_without_rendering()
    if grow:
        _grow_short_axes(fig, renderer)
    for ax in fig.axes:
        if ax.get_visible():
            _wrap_to(ax.yaxis.label, max(ax.get_window_extent(renderer).height, 40.0), renderer)
    fig.draw_without_rendering()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis in (ax.xaxis, ax.yaxis):
            if axis not in class_xaxes:
                _uncollide(fig, axis, renderer)
    return fig


def _uncollide(fig: Any, axis: Any, renderer: Any) -> None:
    """Fewer tick labels on an axis whose labels collide (a small panel, many class names)."""
    for _ in range(4):
        if not labels_collide(axis, renderer):
            return
        n = len(_tick_labels(axis))
        if isinstance(axis.get_major_formatter(), FixedFormatter):  # confusion matrix classes
            _thin_fixed_labels(axis, [t.get_text() for t in axis.get_ticklabels()], renderer, fig)
        elif axis.get_scale() == "linear":
            axis.set_major_locator(MaxNLocator(nbins=max(n // 2, 1), steps=NICE_STEPS))
        else:
            axis.set_major_locator(LogLocator(numticks=max(n // 2, 2)))
            axis.set_minor_formatter(NullFormatter())
        fig.draw_without_rendering()


def save_figure(fig: Any, path: pathlib.Path, dpi: float) -> pathlib.Path:
    """Write `path` (PNG) and the same figure as PDF beside it; close the figure.

    The layout `_finish` settled is kept as it is: each save would otherwise run the constrained
    layout again (a tenth of a report's time, BENCHMARKS.md)."""
    fig.set_layout_engine("none")
    fig.savefig(path, dpi=dpi, format="png")
    with plt.rc_context({"pdf.fonttype": 42}):  # TrueType, not Type 3: what publishers accept
        fig.savefig(path.with_suffix(".pdf"), format="pdf")
    plt.close(fig)
    return path


def _no_data(ax: Any, what: str = "no data") -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes)


def class_tick_labels(run: Run, upright: bool = True) -> list[str]:
    """Class names by training frequency with the training count: 'dog\\n(500)' or 'dog (500)'."""
    sep = "\n" if upright else " "
    return [f"{run.class_names[c]}{sep}({run.counts[c]})" for c in run.class_order()]


def _class_axis(ax: Any, runs: Sequence[Run], n: int) -> list[tuple[str, int]] | None:
    """Class names and counts as ticks when every run has the same few classes in the same order.

    Returns the (name, count) of each tick for `_finish` to rotate if need be, or None for a
    rank axis.
    """
    first = runs[0]
    same = all(
        r.class_order() == first.class_order()
        and r.class_names == first.class_names
        and r.counts == first.counts
        for r in runs
    )
    if same and n <= MAX_TICK_LABELS:
        ax.set_xticks(range(n))
        ax.set_xticklabels(class_tick_labels(first, upright=True), rotation=0)
        ax.set_xlabel("class (training count), most → least frequent")
        return [(first.class_names[c], first.counts[c]) for c in first.class_order()]
    ax.xaxis.set_major_locator(MaxNLocator(steps=NICE_STEPS, integer=True))
    ax.set_xlabel("class rank by training count (0 = most frequent)")
    return None


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


def _panel_grid(panels: int, width: float) -> tuple[int, int]:
    """(rows, columns) for `panels` panels of at least MIN_PANEL_WIDTH, rows as even as can be."""
    fit = max(1, int(width // MIN_PANEL_WIDTH))
    nrows = math.ceil(panels / min(panels, fit))
    return nrows, math.ceil(panels / nrows)


def _class_title(run: Run, c: int) -> str:
    name = run.class_names[c]
    return f"{'class ' if name == str(c) else ''}{name} (n={run.counts[c]})"


def draw_feature_norm_over_epochs(
    runs: Sequence[Run], classes: Sequence[int] | None, figsize: Figsize
) -> Any:
    """Mean test feature norm of chosen head/tail classes per eval epoch, one line per run."""
    return _over_epochs(
        runs, classes, figsize, field="feature_norm_per_class", ylabel="mean feature norm (test)",
        title="Test feature norm: head vs tail classes", log_if_spread=True,
    )  # fmt: skip


def draw_accuracy_over_epochs(
    runs: Sequence[Run], classes: Sequence[int] | None, figsize: Figsize
) -> Any:
    """Test top-1 per eval epoch, over all classes, for the most frequent class and the two
    least frequent ones, one line per run: when a method's gains and losses appear (the α(t)
    curriculum's late epochs, the learning-rate decays), and where a best-epoch selection picks."""
    return _over_epochs(
        runs, classes, figsize, field="per_class_accuracy", ylabel="test top-1 (%)",
        title="Test accuracy over training: all, head and tail classes", scale=100.0,
        overall="top1",
    )  # fmt: skip


def _over_epochs(
    runs: Sequence[Run],
    classes: Sequence[int] | None,
    figsize: Figsize,
    *,
    field: str,
    ylabel: str,
    title: str,
    scale: float = 1.0,
    overall: str | None = None,
    log_if_spread: bool = False,
) -> Any:
    """One panel per chosen class (a first one for all classes where `overall` names the
    scalar), one line per run over its test evaluations: `field`[class] × `scale`."""
    # with the all-classes panel, one head class and two tail ones: four panels, as the norms'
    picks = [
        [("all classes", None), *select_classes(r, classes, n_head=1)]
        if overall
        else select_classes(r, classes)
        for r in runs
    ]
    labels = legend_labels(runs)
    panels = max(len(p) for p in picks)
    width = figsize if isinstance(figsize, int | float) else figsize[0]
    nrows, ncols = _panel_grid(panels, float(width))
    panel_w = (float(width) - 0.6) / ncols
    size, grow = _size(figsize, nrows * (0.72 * panel_w + 0.5) + 0.55)
    fig, axes = _new_figure(size, nrows, ncols, sharey=True)
    flat = axes.ravel()
    drawn = [False] * len(flat)
    for i in range(panels):
        # One class per panel for every run: its name and count go in the title, not the legend.
        at_i = [(r, p[i]) for r, p in zip(runs, picks) if i < len(p)]
        ids = {(c, _class_title(r, c)) for r, (_, c) in at_i if c is not None}
        title_i = at_i[0][1][0]
        if len(ids) == 1:
            title_i += "\n" + next(iter(ids))[1]
        flat[i].set_title(title_i)
    handles, lines_of = [], {}
    for k, (run, pick) in enumerate(zip(runs, picks)):
        evals = [e for e in run.test_evals if e.get(field) is not None]
        epochs = [e.get("epoch", e.get("step")) for e in evals]
        lines = []
        for i, (_, c) in enumerate(pick):
            values = [e.get(overall) if c is None else e[field][c] for e in evals]
            values = [np.nan if v is None else scale * v for v in values]
            lines += flat[i].plot(epochs, values, marker="o", markersize=3, color=f"C{k}")
            drawn[i] = drawn[i] or bool(evals)
        lines_of[k] = lines
        handles.append(lines[0] if lines else plt.Line2D([], [], color=f"C{k}", marker="o"))
    if log_if_spread:  # the panels share y; one series per run, over its classes and epochs
        _log_if_spread(
            flat[0], [[v for ln in lines_of[k] for v in ln.get_ydata()] for k in lines_of]
        )
    for i, ax in enumerate(flat):
        if i >= panels:
            ax.set_visible(False)
            continue
        if not drawn[i]:
            _no_data(ax)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=NICE_STEPS, integer=True))
        ax.grid(alpha=0.3)
        if i + ncols >= panels:  # nothing below it
            ax.set_xlabel("epoch")
    fig.supylabel(ylabel)
    fig.suptitle(title)
    if any(drawn):
        _legend_below(fig, handles, labels, grow)
    return _finish(fig, grow=grow)


def _per_class_figure(runs: Sequence[Run], figsize: Figsize, key: str, scale: float = 1):
    """(figure, axes, [(run index, label, values by class frequency, std over seeds or None)],
    grow) for a per-class quantity of each run's last test evaluation."""
    width = figsize if isinstance(figsize, int | float) else figsize[0]
    size, grow = _size(figsize, max(2.2, 0.4 * float(width)) + 0.3)
    fig, axes = _new_figure(size)
    series = []
    for k, (run, label) in enumerate(zip(runs, legend_labels(runs))):
        last = run.last_test()
        if last and last.get(key) is not None:
            order = run.class_order()
            std = last.get(f"{key}_std")  # a merged run's spread over its seeds
            std = None if std is None else scale * _values(std, order)
            series.append((k, label, scale * _values(last[key], order), std))
    return fig, axes[0, 0], series, grow


def _log_if_spread(ax: Any, series: Sequence[Sequence[Any]]) -> None:
    """A log y-axis where the series' medians differ by more than LOG_NORM_RATIO (one
    method's norms far above the others'), so the small ones are not flattened together."""
    medians = []
    for values in series:
        v = np.asarray([x for x in values if x is not None], dtype=float)
        v = v[np.isfinite(v) & (v > 0)]
        if v.size:
            medians.append(float(np.median(v)))
    if len(medians) > 1 and max(medians) / min(medians) > LOG_NORM_RATIO:
        ax.set_yscale("log")


def draw_feature_norm_distribution(runs: Sequence[Run], figsize: Figsize) -> Any:
    """Per-class mean feature norm at the last test eval: points per class, runs side by side;
    a merged run's points carry ±1 sample std over its seeds."""
    fig, ax, series, grow = _per_class_figure(runs, figsize, "feature_norm_per_class")
    n = max((len(y) for _, _, y, _ in series), default=0)
    small = n <= MAX_TICK_LABELS
    width_k = 0.6 / max(len(series), 1) if small else 0.0  # runs dodge within a class's slot
    handles = []
    for j, (k, _, y, std) in enumerate(series):
        x = np.arange(len(y)) + (j - (len(series) - 1) / 2) * width_k
        style = {"linestyle": "none", "marker": "o", "markersize": 4 if small else 2}
        if std is None:
            handles += ax.plot(x, y, color=f"C{k}", **style)
        else:  # ±1 std over the merged run's seeds
            kw = {**ERROR_BARS["error_kw"], "ecolor": None}  # the points' colour: they dodge
            handles.append(ax.errorbar(x, y, yerr=np.nan_to_num(std), color=f"C{k}", **style, **kw))
    _log_if_spread(ax, [y for _, _, y, _ in series])
    class_axes = {}
    if series:
        ticks = _class_axis(ax, runs, n)
        if ticks is not None:
            class_axes[ax] = ticks
        if small:
            ax.set_xlim(-0.5, n - 0.5)
        ax.grid(axis="y", alpha=0.3)
        _legend_below(fig, handles, [label for _, label, _, _ in series], grow)
    else:
        _no_data(ax)
    ax.set_ylabel("mean feature norm\n(test, last eval)")
    spread = any(std is not None for *_, std in series)
    ax.set_title("Per-class feature norm" + (" (mean ± std over seeds)" if spread else ""))
    return _finish(fig, class_axes, grow)


def draw_per_class_accuracy(runs: Sequence[Run], figsize: Figsize) -> Any:
    """Per-class top-1 (%) at the last test eval as bars, runs side by side, classes by frequency;
    a merged run's bars carry ±1 sample std over its seeds."""
    fig, ax, series, grow = _per_class_figure(runs, figsize, "per_class_accuracy", 100)
    bar_w = 0.8 / max(len(series), 1)
    handles = []
    for j, (k, _, y, std) in enumerate(series):
        x = np.arange(len(y)) - 0.4 + bar_w * (j + 0.5)
        yerr = None if std is None else np.nan_to_num(std)
        handles.append(
            ax.bar(x, np.nan_to_num(y), width=bar_w, color=f"C{k}", yerr=yerr, **ERROR_BARS)
        )
    top = -np.inf
    class_axes = {}
    if series:
        n = max(len(y) for _, _, y, _ in series)
        ticks = _class_axis(ax, runs, n)
        if ticks is not None:
            class_axes[ax] = ticks
        ax.set_xlim(-0.5, n - 0.5)
        tops = [y + (0 if std is None else np.nan_to_num(std)) for _, _, y, std in series]
        top = max((float(np.nanmax(t)) for t in tops if np.isfinite(t).any()), default=top)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        _legend_below(fig, handles, [label for _, label, _, _ in series], grow)
    else:
        _no_data(ax)
    ax.set_ylim(*accuracy_ylim(top))
    ax.set_ylabel("top-1 accuracy (%)")
    spread = any(std is not None for *_, std in series)
    ax.set_title(
        f"Per-class accuracy (test, last eval{'; mean ± std over seeds' if spread else ''})"
    )
    return _finish(fig, class_axes, grow)


def draw_confusion(run: Run, figsize: Figsize) -> Any | None:
    """Row-normalised confusion matrix of the last test eval (classes by frequency), if logged."""
    last = run.last_test()
    if not last or last.get("confusion") is None:
        return None
    order = run.class_order()
    cm = np.asarray(last["confusion"], dtype=np.float64)[np.ix_(order, order)]
    rows = cm.sum(axis=1, keepdims=True)
    cm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    width = figsize if isinstance(figsize, int | float) else figsize[0]
    size, _ = _size(figsize, min(0.95 * float(width), 5.0))
    fig, axes = _new_figure(size)
    ax = axes[0, 0]
    im = ax.imshow(cm, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="fraction of the true class", shrink=0.9)
    if len(order) <= MAX_TICK_LABELS:
        # Long class names cut to a quarter of the figure, so the matrix keeps most of it.
        ax.tick_params(labelsize=TICK_FONTSIZE)
        renderer, font = fig.canvas.get_renderer(), ax.xaxis.get_ticklabels()[0]
        cut_x, cut_y = 0.22 * fig.bbox.height, 0.25 * fig.bbox.width
        names = [run.class_names[c] for c in order]
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([_short_name(n, "", cut_x, font, renderer) for n in names], rotation=90)
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels(
            [
                _short_name(n, f" ({run.counts[c]})", cut_y, font, renderer)
                for n, c in zip(names, order)
            ]
        )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (training count)")
    # Over the whole figure, not the matrix: the colorbar beside it leaves the title no room.
    fig.suptitle(f"{run.name}: confusion, row-normalised (step {last.get('step')})")
    return _finish(fig)


# ----------------------------------------------------------------------------- schedules


def logged_schedule(run: Run, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(epoch, value) of the run's train records that log `key` ("lr" or "alpha"), by epoch.

    Each record is written at the end of a log interval and carries the value of the interval's
    last step (DESIGN.md, metrics.jsonl records); None when no record logs `key`.
    """
    points = sorted(
        (float(rec["epoch"]), float(rec[key]))
        for rec in run.train
        if isinstance(rec.get("epoch"), int | float) and isinstance(rec.get(key), int | float)
    )
    if not points:
        return None
    epochs, values = np.array(points).T
    return epochs, values


def held_over_intervals(epochs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points of a steps-pre line that holds each logged value over the interval it ends.

    A record at epoch e_k carries its interval's last step: drawn over (e_(k-1), e_k], the first
    from epoch 0, a value that stays the same within each log interval is drawn exactly (a step
    decay drops at its epoch when an interval starts there, as with logging every epoch).
    """
    return np.r_[0.0, epochs], np.r_[values[0], values]


def draw_schedules(runs: Sequence[Run], figsize: Figsize) -> Any:
    """Learning rate (log axis: its step drops span decades) and FBL α(t) against epoch, as the
    runs logged them (train records' `lr` and `alpha`): the report reads the run directory only.

    Each logged value is held over the log interval it ends (steps-pre), with a marker at the
    record; a run without those records is left out of the legend.
    """
    width = figsize if isinstance(figsize, int | float) else figsize[0]
    stacked = float(width) < 5.0
    size, grow = _size(figsize, 3.4 if stacked else 2.4)
    if stacked:
        fig, axes = _new_figure(size, 2, 1, sharex=True)
    else:
        fig, axes = _new_figure(size, 1, 2)
    ax_lr, ax_a = axes.ravel()
    handles, labels = [], []
    positive_lr = False
    for k, (run, label) in enumerate(zip(runs, legend_labels(runs))):
        style = {"color": f"C{k}", "linestyle": LINESTYLES[k % len(LINESTYLES)], "linewidth": 1.2}
        line = None
        for ax, key in ((ax_lr, "lr"), (ax_a, "alpha")):
            logged = logged_schedule(run, key)
            if logged is None:
                continue
            xs, ys = held_over_intervals(*logged)
            marks = {"marker": ".", "markersize": 3, "markevery": slice(1, None)}  # the records
            (drawn,) = ax.plot(xs, ys, drawstyle="steps-pre", **marks, **style)
            line = line or drawn
            positive_lr = positive_lr or (key == "lr" and bool(np.max(ys) > 0))
        if line is not None:
            handles.append(line)
            labels.append(label)
    if positive_lr:
        ax_lr.set_yscale("log", nonpositive="mask")
    for ax, title in ((ax_lr, "learning rate (log scale)"), (ax_a, "FBL α(t)")):
        if not stacked or ax is ax_a:
            ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=NICE_STEPS, integer=True))
        if not ax.lines:
            _no_data(ax)
    if not ax_lr.lines and not ax_a.lines:
        ax_a.set_yticks([])  # nothing drawn: no unit to show
    _legend_below(fig, handles, labels, grow)
    return _finish(fig, grow=grow)


def figure_size(figsize: Sequence[float] | None, width: float | None) -> Figsize:
    """What the draw functions take: a fixed (w, h), or a column width whose height they choose."""
    if figsize is not None:
        return (float(figsize[0]), float(figsize[1]))
    if width is None:
        raise ValueError("give a figsize or a width")
    return float(width)


def series_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """The runs split for figures: by dataset and imbalance factor, then into parts of at most
    MAX_SERIES in the order given (a plan lists each table's methods together)."""
    by_data: dict[tuple, list[Run]] = {}
    for run in runs:
        data = run.config.get("data") or {}
        key = (str(run.config.get("dataset_name") or data.get("root") or data.get("source")),
               str(data.get("imbalance_factor")))  # fmt: skip
        by_data.setdefault(key, []).append(run)
    groups = []
    for members in by_data.values():
        count = math.ceil(len(members) / MAX_SERIES)
        size = math.ceil(len(members) / count)  # parts of even size: 16 → 8 + 8, 9 → 5 + 4
        groups += [members[i : i + size] for i in range(0, len(members), size)]
    return groups


def plot_all(
    runs: Sequence[Run],
    out: pathlib.Path,
    *,
    classes: Sequence[int] | None,
    dpi: float,
    figsize: Sequence[float] | None = None,
    width: float | None = None,
) -> list[pathlib.Path]:
    """Write every figure into `out` as PNG + PDF; returns the PNG paths (confusion if logged).

    `figsize` fixes every figure's size; `width` (inches, e.g. COLUMN_WIDTHS["single"]) fixes
    only the width, each figure choosing its height.
    """
    size = figure_size(figsize, width)
    parts = series_groups(runs)
    paths = []
    for k, part in enumerate(parts, 1):
        suffix = "" if len(parts) == 1 else f"_part{k}"
        figures = [
            ("feature_norm_over_epochs", draw_feature_norm_over_epochs(part, classes, size)),
            ("accuracy_over_epochs", draw_accuracy_over_epochs(part, classes, size)),
            ("feature_norm_distribution", draw_feature_norm_distribution(part, size)),
            ("per_class_accuracy", draw_per_class_accuracy(part, size)),
            ("schedules", draw_schedules(part, size)),
        ]
        for stem, fig in figures:
            if len(parts) > 1:
                fig.text(0.995, 0.995, f"part {k} of {len(parts)}", ha="right", va="top",
                         fontsize=TICK_FONTSIZE)  # fmt: skip
            paths.append(save_figure(fig, out / f"{stem}{suffix}.png", dpi))
    for run in runs:
        fig = draw_confusion(run, size)
        if fig is not None:
            paths.append(save_figure(fig, out / f"confusion_{safe_filename(run.name)}.png", dpi))
    return paths
