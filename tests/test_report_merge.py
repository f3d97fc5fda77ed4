"""fbl-report's one line per method: seeds merged (means, summed confusions), figures split
into parts of at most 8 series, and a log axis where one method's norms dwarf the others'."""

import dataclasses
import pathlib

import numpy as np
import pytest
from matplotlib.container import BarContainer

from fbl_jax.report import plots
from fbl_jax.report.merge import merge_settings, setting_label
from fbl_jax.report.run_dir import Run
from fbl_jax.report.tables import DEFAULT_IGNORE_KEYS, aggregate_settings

COUNTS = [50, 20, 5]


def _run(name, seed, loss="ce", acc=(0.9, 0.5, 0.1), norms=(3.0, 2.0, 1.0), confusion=None):
    config = {"seed": seed, "loss": {"name": loss}, "model": {"name": "resnet32"},
              "data": {"root": "/d", "imbalance_factor": 10.0}, "dataset_name": "D"}  # fmt: skip
    test = {"type": "eval", "split": "test", "step": 10, "epoch": 1.0, "top1": float(np.mean(acc)),
            "per_class_accuracy": list(acc), "feature_norm_per_class": list(norms),
            "confusion": confusion or [[5, 0, 0], [1, 3, 1], [0, 1, 1]]}  # fmt: skip
    final = {"type": "final", "last": test, "best_on_minival": test, "best_step": 10}
    return Run(name, pathlib.Path(name), config, COUNTS, ["a", "b", "c"], [], [test], final)


def test_seeds_merge_into_one_run_named_by_the_method():
    runs = [
        _run("x/seed=0", 0, acc=(0.8, 0.4, 0.0), confusion=[[4, 1, 0], [2, 2, 1], [0, 2, 0]]),
        _run("y/seed=1", 1, acc=(1.0, 0.6, 0.2), confusion=[[5, 0, 0], [0, 4, 1], [1, 0, 1]]),
        _run("z/seed=0", 0, loss="fbl"),
    ]
    settings = aggregate_settings(runs, DEFAULT_IGNORE_KEYS)
    merged = merge_settings(runs, settings)
    assert [r.name for r in merged] == ["CE (2 seeds)", "FBL (paper form)"]  # loss defaults
    last = merged[0].last_test()
    np.testing.assert_allclose(last["per_class_accuracy"], [0.9, 0.5, 0.1])
    assert last["confusion"] == [[9, 1, 0], [2, 6, 2], [1, 2, 1]]  # summed over the seeds
    assert last["top1"] == pytest.approx((0.4 + 0.6) / 2)
    assert setting_label({"method": "LA (τ=1.0)", "differs_in": {"optimizer.lr": 0.05},
                          "num_seeds": 3}) == "LA (τ=1.0) [optimizer.lr=0.05] (3 seeds)"  # fmt: skip


def test_figure_legends_say_how_many_seeds_a_line_averages():
    runs = [_run("x/seed=0", 0), _run("y/seed=1", 1), _run("z/seed=0", 0, loss="fbl")]
    settings = aggregate_settings(runs[:2], DEFAULT_IGNORE_KEYS)  # z unfinished: in no setting
    merged = merge_settings(runs, settings)
    for draw in (plots.draw_per_class_accuracy, plots.draw_feature_norm_distribution):
        fig = draw(merged, (8, 5))
        texts = [t.get_text() for t in fig.legends[0].get_texts()]
        assert texts == ["CE (2 seeds)", "FBL (paper form), seed 0 (unfinished)"]
        plots.plt.close(fig)


def test_per_class_figures_show_the_spread_over_seeds():
    accs = [(0.8, 0.4, 0.0), (1.0, 0.6, 0.2), (0.9, 0.3, 0.4)]
    norms = [(3.0, 2.0, 1.0), (5.0, 2.0, 1.5), (4.0, 5.0, 0.5)]
    runs = [_run(f"r/seed={i}", i, acc=a, norms=n) for i, (a, n) in enumerate(zip(accs, norms))]
    merged = merge_settings(runs, aggregate_settings(runs, DEFAULT_IGNORE_KEYS))
    acc_std = 100 * np.std(accs, axis=0, ddof=1)  # the classes' spread over the three seeds
    norm_std = np.std(norms, axis=0, ddof=1)
    last = merged[0].last_test()
    np.testing.assert_allclose(last["per_class_accuracy_std"], acc_std / 100)
    fig = plots.draw_per_class_accuracy(merged, (8, 5))
    (bars,) = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    segments = bars.errorbar.lines[2][0].get_segments()  # one vertical line per class
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segments], 2 * acc_std)
    np.testing.assert_allclose([s[:, 1].mean() for s in segments], 100 * np.mean(accs, axis=0))
    plots.plt.close(fig)
    fig = plots.draw_feature_norm_distribution(merged, (8, 5))
    (points,) = fig.axes[0].containers
    segments = points.lines[2][0].get_segments()
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segments], 2 * norm_std)
    plots.plt.close(fig)
    fig = plots.draw_per_class_accuracy(runs[:1], (8, 5))  # one run: no error bars
    (bars,) = fig.axes[0].containers
    assert bars.errorbar is None
    plots.plt.close(fig)


def test_figures_take_at_most_eight_series_in_even_parts():
    def named(n):
        return [dataclasses.replace(_run(f"r{i}", i), name=f"m{i}") for i in range(n)]

    assert [len(g) for g in plots.series_groups(named(16))] == [8, 8]
    assert [len(g) for g in plots.series_groups(named(9))] == [5, 4]
    assert [len(g) for g in plots.series_groups(named(8))] == [8]


def test_feature_norms_get_a_log_axis_only_when_one_method_dwarfs_the_others():
    close = [_run("a", 0), _run("b", 0, loss="fbl", norms=(4.0, 3.0, 2.0))]
    far = [_run("a", 0), _run("b", 0, loss="ldam", norms=(300.0, 200.0, 100.0))]
    for runs, scale in ((close, "linear"), (far, "log")):
        fig = plots.draw_feature_norm_distribution(runs, (8, 5))
        assert fig.axes[0].get_yscale() == scale
        plots.plt.close(fig)
