"""fbl-report on small synthetic run directories.

Expected numbers are computed here from the values written into the runs (NumPy mean and sample
std, percent with 2 decimals), never by calling the report's own helpers.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import pathlib
import shutil
import struct
import subprocess
import sys
import warnings

import matplotlib.text
import numpy as np
import pytest

from fbl_jax import report
from fbl_jax.report import labels as run_labels
from fbl_jax.report import plots as report_plots
from fbl_jax.report import run_dir
from fbl_jax.report import tables as report_tables

REPO = pathlib.Path(__file__).resolve().parents[1]

# 4 classes; ties at 30 are broken by class id, so the frequency order is 1, 0, 2, 3.
COUNTS = [30, 500, 30, 5]
NAMES = ["cat", "dog", "eel", "fox"]
ORDER = [1, 0, 2, 3]


def _eval(step, epoch, split, acc, norms, confusion=None, many=0.9, medium=0.5, few=0.1):
    rec = {
        "type": "eval",
        "step": step,
        "epoch": epoch,
        "split": split,
        "top1": float(np.mean(acc)),
        "top5": 1.0,
        "balanced_top1": float(np.mean(acc)),
        "per_class_accuracy": list(acc),
        "many_shot": many,
        "medium_shot": medium,
        "few_shot": few,
        "feature_norm_per_class": list(norms),
        "mean_feature_norm": float(np.mean(norms)),
        "num_examples": 400,
    }
    if confusion is not None:
        rec["confusion"] = confusion
    return rec


def write_run(
    root,
    name,
    *,
    loss="ce",
    seed=0,
    top1=(0.5, 0.6),
    best=0.55,
    final=True,
    confusion=True,
    lr=0.1,
    few=0.1,
    truncated_tail=False,
    config_extra=None,
    train_records=None,
):
    """A run directory: 2 epochs of train records, test+minival evals, and a final line.

    `config_extra` replaces top-level config entries (num_epochs, optimizer, a loss section);
    `train_records` (a list of dicts) replaces the train records."""
    d = pathlib.Path(root) / name
    d.mkdir(parents=True)
    config = {
        "seed": seed,
        "run_name": name,
        "num_epochs": 2,
        "dataset_name": "CIFAR-10-LT",
        "model": {"name": "resnet32"},
        "loss": {"name": loss, "fbl_form": "paper", "curriculum": "parabolic"},
        "optimizer": {"learning_rate": lr},
        "data": {
            "source": "image_folder",
            "root": "/x/cifar10",
            "imbalance_factor": 100.0,
            "num_classes": 4,
        },
    }
    config.update(config_extra or {})
    (d / "config.json").write_text(json.dumps(config))
    (d / "class_counts.json").write_text(json.dumps({"counts": COUNTS, "class_names": NAMES}))
    rng = np.random.default_rng(seed + 10 * len(loss))
    cm = rng.integers(0, 20, size=(4, 4)).tolist() if confusion else None
    lines = [] if train_records is None else [{"type": "train", **r} for r in train_records]
    tests = []
    for i, t1 in enumerate(top1):
        step, epoch = 10 * (i + 1), float(i + 1)
        if train_records is None:
            lines.append(
                {
                    "type": "train",
                    "step": step,
                    "epoch": epoch,
                    "loss": 1.0 / (i + 1),
                    "lr": lr / (i + 1),
                    "alpha": (epoch / 2) ** 2,
                    "images_per_s": 1e3,
                }
            )
        acc = np.round(rng.uniform(0, 1, 4), 4)
        norms = np.round(rng.uniform(1, 10, 4), 4)
        rec = _eval(step, epoch, "test", acc, norms, cm, few=few)
        rec["top1"] = t1
        tests.append(rec)
        lines.append(rec)
        lines.append(_eval(step, epoch, "minival", acc, norms))
    if final:
        best_rec = dict(tests[0], top1=best)
        lines.append(
            {
                "type": "final",
                "last": tests[-1],
                "best_on_minival": best_rec,
                "best_step": best_rec["step"],
            }
        )
    text = "\n".join(json.dumps(r) for r in lines) + "\n"
    if truncated_tail:
        text += '{"type": "train", "step": 3'
    (d / "metrics.jsonl").write_text(text)
    return d, tests


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    info = {}
    info["ce_s0"] = write_run(root, "ce_s0", seed=0, top1=(0.40, 0.6123), best=0.5871)
    info["ce_s1"] = write_run(root, "ce_s1", seed=1, top1=(0.41, 0.6341), best=0.6017)
    info["fbl_s0"] = write_run(
        root, "fbl_s0", loss="fbl", top1=(0.45, 0.7011), best=0.6988, confusion=False, few=None
    )
    info["broken"] = write_run(root, "broken", seed=2, final=False, truncated_tail=True)
    (root / "missing").mkdir()
    (root / "missing" / "config.json").write_text("{}")
    order = ["ce_s0", "ce_s1", "fbl_s0", "broken", "missing"]
    return root, [root / n for n in order], info


@pytest.fixture(scope="module")
def made(runs, tmp_path_factory):
    _, dirs, info = runs
    out = tmp_path_factory.mktemp("report")
    rep = report.make_report(dirs, out)
    return out, rep, info


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _table(text: str) -> list[dict[str, str]]:
    """The first Markdown table in `text` as dicts keyed by header."""
    all_lines = text.splitlines()
    start = next(i for i, ln in enumerate(all_lines) if ln.startswith("|"))
    lines = []
    for ln in all_lines[start:]:
        if not ln.startswith("|"):
            break
        lines.append(ln)
    split = [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines]
    header, rows = split[0], split[2:]
    assert all(len(r) == len(header) for r in rows)
    return [dict(zip(header, r)) for r in rows]


def _mean_pm_std(values):
    v = np.array(values)
    return f"{100 * v.mean():.2f} ± {100 * v.std(ddof=1):.2f}"


def test_results_table_mean_and_sample_std(made):
    out, rep, info = made
    md = (out / "summary.md").read_text()
    rows = {r["Method"]: r for r in _table(_section(md, "Results"))}
    assert set(rows) == {"CE", "FBL (paper form)"}  # the unfinished run is left out
    ce = rows["CE"]
    assert ce["#Seeds"] == "2" and ce["Dataset"] == "CIFAR-10-LT" and ce["IF"] == "100"
    assert ce["Model"] == "resnet32" and ce["Runs"] == "ce_s0, ce_s1"
    assert ce["Top-1 last"] == _mean_pm_std([0.6123, 0.6341]) == "62.32 ± 1.54"
    assert ce["Top-1 best-on-minival"] == _mean_pm_std([0.5871, 0.6017])
    lasts = [info[n][1][-1] for n in ("ce_s0", "ce_s1")]
    for col, key in (("Many", "many_shot"), ("Medium", "medium_shot"), ("Few", "few_shot")):
        assert ce[col] == _mean_pm_std([r[key] for r in lasts])
    fbl = rows["FBL (paper form)"]
    assert fbl["#Seeds"] == "1"
    assert fbl["Top-1 last"] == "70.11" and fbl["Top-1 best-on-minival"] == "69.88"
    assert fbl["Many"] == "90.00" and fbl["Medium"] == "50.00" and fbl["Few"] == "—"
    # summary.json carries the same numbers as fractions.
    summary = json.loads((out / "summary.json").read_text())
    s = {x["method"]: x for x in summary["settings"]}["CE"]["metrics"]["top1_last"]
    assert s["mean"] == pytest.approx(np.mean([0.6123, 0.6341]))
    assert s["std"] == pytest.approx(np.std([0.6123, 0.6341], ddof=1))


def test_per_class_table_ordered_by_training_count(made):
    out, rep, info = made
    md = (out / "summary.md").read_text()
    # one table per method, named by it: CE's two seeds averaged class by class
    section = _section(md, "Per-class accuracy")
    assert "### ce_s" not in section and "### CE, seed 2 (unfinished)" in section
    rows = _table(section.split("### CE (2 seeds)\n", 1)[1])
    both = [info[n][1][-1]["per_class_accuracy"] for n in ("ce_s0", "ce_s1")]
    assert [int(r["Class id"]) for r in rows] == ORDER
    assert [r["Class"] for r in rows] == [NAMES[c] for c in ORDER]
    assert [int(r["Train count"]) for r in rows] == [COUNTS[c] for c in ORDER]
    expected = [f"{100 * (both[0][c] + both[1][c]) / 2:.2f}" for c in ORDER]
    assert [r["Top-1 last (%)"] for r in rows] == expected
    first = (out / "per_class_CE_2_seeds.csv").read_text().splitlines()[1]
    assert first.startswith(f"1,1,dog,500,{expected[0]},")


def test_long_per_class_table_goes_to_linked_file(runs, tmp_path):
    _, dirs, info = runs
    report.make_report(dirs[:1], tmp_path, max_inline_classes=3, figures=False)
    md = (tmp_path / "summary.md").read_text()
    assert "](per_class_CE.md)" in md  # one seed: the method's name alone
    rows = _table((tmp_path / "per_class_CE.md").read_text())
    assert [int(r["Train count"]) for r in rows] == [500, 30, 30, 5]


def test_problems_named_in_markdown_and_stderr(runs, made, tmp_path, capsys):
    _, dirs, _ = runs
    assert report.main([str(d) for d in dirs] + ["--out", str(tmp_path), "--no-figures"]) == 0
    md = (tmp_path / "summary.md").read_text()
    # --no-figures: the full report's tables (`made`: the same runs), no figure, no PDF
    full = (made[0] / "summary.md").read_text()
    for title in ("Results", "Per-class accuracy", "Problems"):
        assert _section(md, title) == _section(full, title), title
    assert "## Figures" in full and "## Figures" not in md
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.pdf"))
    assert json.loads((tmp_path / "summary.json").read_text())["figures"] == []
    problems = _section(md, "Problems")
    lines = problems.strip().splitlines()
    assert any(ln.startswith("- **broken**:") and "final" in ln for ln in lines)
    assert any(ln.startswith("- **broken**:") and "line 7" in ln for ln in lines)  # truncated
    assert any(ln.startswith("- **missing**:") and "metrics.jsonl" in ln for ln in lines)
    assert not any("ce_s0" in ln or "fbl_s0" in ln for ln in lines)
    err = capsys.readouterr().err
    assert "broken" in err and "missing" in err


def _png_size(path: pathlib.Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_figures_are_pngs_of_the_requested_size(made, runs, tmp_path):
    out, rep, _ = made
    figures = [
        "feature_norm_over_epochs",
        "accuracy_over_epochs",
        "feature_norm_distribution",
        "per_class_accuracy",
        "schedules",
        "confusion_CE_2_seeds",  # the two seeds' confusions summed
        "confusion_CE_seed_2_unfinished",
    ]
    for name in figures:
        assert _png_size(out / f"{name}.png") == (800, 500), name
    assert not list(out.glob("confusion_FBL*"))  # no confusion logged for this run
    _, dirs, _ = runs
    report.make_report(dirs[2:3], tmp_path, dpi=30, figsize=(4, 3), classes=[3, 1])
    assert _png_size(tmp_path / "feature_norm_over_epochs.png") == (120, 90)
    assert _png_size(tmp_path / "schedules.png") == (120, 90)


FIGURES = (
    "feature_norm_over_epochs",
    "accuracy_over_epochs",
    "feature_norm_distribution",
    "per_class_accuracy",
    "schedules",
    "confusion_CE_2_seeds",
    "confusion_CE_seed_2_unfinished",
)


def test_a_pdf_beside_every_png(made):
    out, rep, _ = made
    pngs = sorted(p.stem for p in out.glob("*.png"))
    assert pngs == sorted(FIGURES)
    for stem in pngs:
        pdf = (out / f"{stem}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-"), stem
        assert b"/Subtype /Type3" not in pdf and b"/FontFile2" in pdf, stem  # TrueType fonts
        assert out / f"{stem}.pdf" in rep.files
    md = (out / "summary.md").read_text()
    assert "![per_class_accuracy](per_class_accuracy.png) ([PDF](per_class_accuracy.pdf))" in md
    assert json.loads((out / "summary.json").read_text())["figures_pdf"] == [
        f"{stem}.pdf" for stem in FIGURES
    ]


# (config section "loss", optional "decouple") -> the label a reader of a paper expects.
LABELS = [
    ({"name": "ce"}, None, "CE"),
    ({"name": "ldam_drw", "drw_start_epoch": 160}, None, "LDAM-DRW"),
    ({"name": "ldam_drw", "drw_start_epoch": 40}, None, "LDAM-DRW (DRW from epoch 40)"),
    ({"name": "la", "la_tau": 1.0}, None, "LA (τ=1.0)"),
    ({"name": "la", "la_tau": 1.5}, None, "LA (τ=1.5)"),
    ({"name": "balanced_softmax"}, None, "Balanced softmax"),
    ({"name": "focal", "focal_gamma": 2.0}, None, "Focal (γ=2.0)"),
    (
        {
            "name": "fbl",
            "fbl_form": "authors_code",
            "fbl_scale": 60.0,
            "curriculum": "authors_code",
        },
        None,
        "FBL (authors' form)",
    ),
    (
        {
            "name": "fbl",
            "fbl_form": "authors_code",
            "fbl_scale": 150.0,
            "curriculum": "authors_code",
        },
        None,
        "FBL (authors' form, A=150)",
    ),
    (
        {"name": "fbl", "fbl_form": "authors_code", "fbl_scale": 60, "curriculum": "parabolic"},
        None,
        "FBL (authors' form, α(t) parabolic)",
    ),
    (
        {
            "name": "fbl",
            "fbl_form": "authors_code",
            "fbl_scale": 60.0,
            "curriculum": "authors_code",
            "curriculum_offset": 2.5,
        },
        None,
        "FBL (authors' form, α(t) offset 2.5)",
    ),
    (
        {"name": "fbl", "fbl_form": "paper", "fbl_scale": 1.0, "curriculum": "parabolic"},
        None,
        "FBL (paper form)",
    ),
    ({"name": "fbl"}, None, "FBL (paper form)"),  # an old config without the fields: defaults
    (
        {"name": "fbl", "fbl_form": "paper", "curriculum": "linear"},
        None,
        "FBL (paper form, α(t) linear)",
    ),
    ({"name": "fbl_drw", "fbl_form": "paper"}, None, "FBL-DRW (paper form)"),
    ({"name": "ce"}, {"method": "tau_norm", "tau": 0.8}, "CE + τ-norm (τ=0.8)"),
    ({"name": "ce"}, {"method": "la_posthoc", "tau": 1}, "CE + post-hoc LA (τ=1.0)"),
    ({"name": "ce"}, {"method": "crt", "epochs": 10, "checkpoint": "best"}, "CE + cRT"),
    (
        {"name": "ce"},
        {"method": "lws", "epochs": 5, "checkpoint": "last"},
        "CE + LWS (5 epochs, last checkpoint)",
    ),
]


@pytest.mark.parametrize("loss, decouple, expected", LABELS)
def test_method_labels_are_readable(loss, decouple, expected):
    config = {"seed": 0, "loss": loss, **({"decouple": decouple} if decouple else {})}
    assert run_labels.method_name(config) == expected


def _variants():
    """Every loss kind alone, the authors' FBL, and each of those with one field changed from
    its default (a bool flipped, every other choice, a number halved)."""
    from fbl_jax.losses import registry

    authors = {"fbl_form": "authors_code", "fbl_scale": 60.0, "curriculum": "authors_code"}
    bases = [{"name": k.name} for k in registry.kinds()]
    bases += [{"name": "fbl", **authors}, {"name": "fbl_drw", **authors}]
    out = []
    for base in bases:
        out.append(base)
        for field in registry.find_kind(base["name"]).fields:
            value = base.get(field.name, field.default)
            if isinstance(value, bool):
                changed = [not value]
            elif field.choices:
                changed = [c for c in field.choices if c != value]
            else:
                changed = [value / 2]
            out += [{**base, field.name: c} for c in changed]
    return out


def test_loss_settings_share_a_label_only_where_they_train_the_same_loss():
    """A label hides no difference that matters: settings whose losses differ (on one batch at
    epochs before, between and after the DRW starts, fractional for per-epoch α) never share a
    label. Every field of every kind is varied, and the hand-written table's settings are added
    (with their decoupling). The losses come from the shared program formula, all settings in
    one compiled call (tests/test_losses.py checks it against NumPy)."""
    import jax

    from fbl_jax import losses

    rng = np.random.default_rng(0)
    counts = np.array([500, 100, 30, 5])
    z = np.tanh(rng.normal(size=(12, 4))).astype(np.float32)  # cosine logits suit every kind
    f = rng.normal(size=(12, 6)).astype(np.float32)
    y = np.arange(12) % 4
    epochs = np.array([50.3, 120.2, 170.7, 198.4], np.float32)
    settings = [(loss, None) for loss in _variants()] + [(l_, d) for l_, d, _ in LABELS]
    coeffs = losses.stack_coefficients(
        [losses.program_coefficients(loss, counts, 200) for loss, _ in settings]
    )

    def loss_at(h, epoch):
        return losses.program_loss(z, f, y, epoch, h, 200)[0]

    values = jax.jit(jax.vmap(jax.vmap(loss_at, (None, 0)), (0, None)))(coeffs, epochs)
    values = np.round(np.asarray(values, np.float64), 5)
    seen: dict[str, tuple] = {}
    for (loss, decouple), row in zip(settings, values, strict=True):
        config = {"loss": loss, **({"decouple": decouple} if decouple else {})}
        label = run_labels.method_name(config)
        signature = (row.tolist(), json.dumps(decouple, sort_keys=True))
        if label in seen:
            other, other_signature = seen[label]
            assert signature == other_signature, f"{loss} and {other} share the label {label!r}"
        seen[label] = (loss, signature)
    assert len(seen) > 40


# A kind written with every field of the default config (fbl-train's config.json) or with its
# name alone: the label a reader expects, showing only what a paper names for that loss.
DEFAULT_LABELS = {
    "ce": "CE",
    "focal": "Focal (γ=1.0)",
    "cb": "CB (β=0.9999)",
    "ldam": "LDAM",
    "ldam_drw": "LDAM-DRW",
    "la": "LA (τ=1.0)",
    "balanced_softmax": "Balanced softmax",
    "fbl": "FBL (paper form)",
    "fbl_drw": "FBL-DRW (paper form)",
}


@pytest.mark.parametrize("name", sorted(DEFAULT_LABELS))
def test_the_default_configs_loss_fields_are_the_labels_defaults(name):
    from fbl_jax.defaults import get_default_config

    loss = get_default_config().loss.to_dict()
    assert {k for k in loss if k != "name"} >= {"fbl_scale", "curriculum", "cb_beta"}
    loss["name"] = name
    assert run_labels.method_name({"loss": loss}) == DEFAULT_LABELS[name]
    assert run_labels.method_name({"loss": {"name": name}}) == DEFAULT_LABELS[name]


def test_legend_labels_add_the_seed_only_where_methods_repeat(made):
    _, rep, _ = made
    assert [r.name for r in rep.runs] == ["ce_s0", "ce_s1", "fbl_s0", "broken"]
    assert run_labels.legend_labels(rep.runs) == [
        "CE, seed 0",
        "CE, seed 1",
        "FBL (paper form)",
        "CE, seed 2",
    ]
    twins = [dataclasses.replace(rep.runs[0], name=n) for n in ("a", "b")]  # same seed twice
    assert run_labels.legend_labels(twins) == ["CE [a]", "CE [b]"]


def _legends(fig):
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]


def _texts(fig):
    """Every tick label and legend entry of the figure, with its font size in points."""
    out = []
    for ax in fig.axes:
        ticks = [*ax.get_xticklabels(which="both"), *ax.get_yticklabels(which="both")]
        out += [(t.get_text(), t.get_fontsize()) for t in ticks]
    for legend in _legends(fig):
        out += [(t.get_text(), t.get_fontsize()) for t in legend.get_texts()]
    return out


@pytest.fixture(scope="module")
def figures(made):
    """The report's figures at the default size, drawn once for the tests that read them."""
    _, rep, _ = made
    figs = {
        "over_epochs": report_plots.draw_feature_norm_over_epochs(rep.runs, None, (8, 5)),
        "accuracy_over_epochs": report_plots.draw_accuracy_over_epochs(rep.runs, None, (8, 5)),
        "norms": report_plots.draw_feature_norm_distribution(rep.runs, (8, 5)),
        "accuracy": report_plots.draw_per_class_accuracy(rep.runs, (8, 5)),
        "schedules": report_plots.draw_schedules(rep.runs, (8, 5)),
        "confusion": report_plots.draw_confusion(rep.runs[0], (8, 5)),
    }
    yield rep.runs, figs
    for fig in figs.values():
        report_plots.plt.close(fig)


def test_accuracy_over_epochs_draws_the_test_records(runs):
    """Panel 1: every test evaluation's top-1; then the most frequent class and the two least
    frequent ones (counts 500 | 30, 5: dog | eel, fox), each its per-class accuracy, in %."""
    _, dirs, info = runs
    run = run_dir.load_run(dirs[2], "fbl_s0")[0]
    fig = report_plots.draw_accuracy_over_epochs([run], None, (8, 5))
    _, tests = info["fbl_s0"]
    epochs = [r["epoch"] for r in tests]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split("\n")[-1] for ax in axes] == [
        "all classes", "dog (n=500)", "eel (n=30)", "fox (n=5)",
    ]  # fmt: skip
    want = [[100 * r["top1"] for r in tests]]
    want += [[100 * r["per_class_accuracy"][c] for r in tests] for c in (1, 2, 3)]
    for ax, values in zip(axes, want):
        (line,) = ax.lines
        np.testing.assert_allclose(line.get_xdata(), epochs)
        np.testing.assert_allclose(line.get_ydata(), values)
    report_plots.plt.close(fig)


def test_fonts_are_at_least_8_points(figures):
    _, figs = figures
    for name, fig in figs.items():
        texts = _texts(fig)
        assert texts, name
        small = [(t, size) for t, size in texts if size < 8]
        assert not small, (name, small)


def test_learning_rate_on_a_log_axis(figures):
    runs, figs = figures
    ax_lr, ax_alpha = figs["schedules"].axes
    assert ax_lr.get_yscale() == "log"
    assert ax_alpha.get_yscale() == "linear"
    assert len(ax_lr.lines) == len(ax_alpha.lines) == len(runs)


def _value_at(line, x):
    """The value a steps-pre line shows at x: the y of the first point at or right of x."""
    assert line.get_drawstyle() == "steps-pre"
    xs, ys = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    assert xs[0] < x <= xs[-1]
    return ys[np.searchsorted(xs, x, side="left")]


# 6 epochs of 10 steps, logged every 5 steps as the loop logs them: a record at step s carries
# the lr and α of step s - 1, its interval's last. The lr: a per-step warm-up over the first
# epoch, then 0.1, ×0.1 from epoch 3 (step 30) and ×0.01 from epoch 5; α: the authors'
# curriculum with α per epoch, (floor(epoch) / (6 − 1.5))², for FBL, 0 for CE.
LOG_STEPS = np.arange(5, 61, 5)


def _lr_of_step(s):
    return 0.1 * (1 + s) / 10 if s < 10 else 0.1 if s < 30 else 0.01 if s < 50 else 0.001


def _schedule_records(fbl):
    return [
        {
            "step": int(s),
            "epoch": s / 10,
            "loss": 1.0,
            "lr": _lr_of_step(s - 1),
            "alpha": (((s - 1) // 10) / 4.5) ** 2 if fbl else 0.0,
            "images_per_s": 1e3,
        }
        for s in LOG_STEPS
    ]


@pytest.fixture
def schedule_runs(tmp_path):
    """Two 6-epoch runs (FBL in the authors' form, CE) with the records above."""
    fbl_loss = {
        "name": "fbl",
        "fbl_form": "authors_code",
        "fbl_scale": 60.0,
        "curriculum": "authors_code",
        "curriculum_offset": 1.5,
        "alpha_per_epoch": True,
    }
    dirs = [
        write_run(
            tmp_path,
            "fbl",
            config_extra={"num_epochs": 6, "loss": fbl_loss},
            train_records=_schedule_records(fbl=True),
        )[0],
        write_run(
            tmp_path,
            "ce",
            seed=1,
            config_extra={"num_epochs": 6},
            train_records=_schedule_records(fbl=False),
        )[0],
    ]
    return [run_dir.load_run(d, d.name)[0] for d in dirs]


def test_fbl_end_shift_is_alpha_lambda_over_the_class_norm(schedule_runs, tmp_path):
    """The authors' form, A = 60, counts 30, 500, 30, 5: λ_j = (log 500 − log n_j) /
    (log 500 − log 5) · 60, the last train record's α, the last test evaluation's norms."""
    fbl, ce = schedule_runs
    alpha = _schedule_records(fbl=True)[-1]["alpha"]
    norms = np.asarray(fbl.last_test()["feature_norm_per_class"])
    counts = np.asarray(COUNTS, float)
    lam = (np.log(500) - np.log(counts)) / (np.log(500) - np.log(5)) * 60
    want = alpha * lam / norms
    got_alpha, got = report_tables.fbl_end_shift(fbl)
    assert got_alpha == pytest.approx(alpha)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert report_tables.fbl_end_shift(ce) is None  # no α(t) shift in cross-entropy
    taus = [w / (np.log(500) - np.log(n)) for w, n in zip(want, counts) if n < 500]
    lines, _ = report_tables.per_class_section(fbl, tmp_path, max_inline=10)
    text = "\n".join(lines)
    assert f"{min(taus):.2f}–{max(taus):.2f}" in text
    table = _table(text)
    shown = {int(r["Class id"]): float(r["FBL shift at the end (logits)"]) for r in table}
    assert shown == {c: pytest.approx(round(w, 2), abs=1e-9) for c, w in enumerate(want)}
    ce_lines, _ = report_tables.per_class_section(ce, tmp_path, max_inline=10)
    assert "FBL shift" not in "\n".join(ce_lines)


def test_schedules_are_the_logged_values(schedule_runs):
    fig = report_plots.draw_schedules(schedule_runs, (8, 5))
    ax_lr, ax_alpha = fig.axes
    epochs = LOG_STEPS / 10
    for run, lr_line, alpha_line in zip(schedule_runs, ax_lr.lines, ax_alpha.lines):
        for line, key in ((lr_line, "lr"), (alpha_line, "alpha")):
            logged = [r[key] for r in run.train]
            # A point at every record (its marker), at the record's epoch, with its value...
            np.testing.assert_array_equal(line.get_xdata()[1:], epochs)
            np.testing.assert_array_equal(line.get_ydata()[1:], logged)
            assert line.get_xdata()[0] == 0  # ... the first interval from the start of training
            # ... each value held over the interval its record ends.
            for k, value in enumerate(logged):
                low = epochs[k - 1] if k else 0.0
                for x in (low + 0.01, (low + epochs[k]) / 2, epochs[k]):
                    assert _value_at(line, x) == value
    lr = ax_lr.lines[0]
    for e in (3, 5):  # a step decay drops at its epoch, where a log interval starts
        assert _value_at(lr, e + 0.01) == pytest.approx(_value_at(lr, e) / 10, rel=1e-6)
    fbl, ce = ax_alpha.lines
    assert _value_at(fbl, 2.0) < _value_at(fbl, 2.01) == _value_at(fbl, 3.0)  # a stair an epoch
    assert not np.any(ce.get_ydata())
    assert [t.get_text() for t in fig.legends[0].get_texts()][1] == "CE"
    report_plots.plt.close(fig)


def test_schedules_need_no_more_than_the_records(tmp_path):
    # A schedule no optimizer of this version knows, and no loss section: the records suffice.
    odd = {"num_epochs": 2, "optimizer": {"learning_rate": 0.1, "schedule": "exotic"}}
    d, _ = write_run(tmp_path, "odd", config_extra=odd)
    (d / "config.json").write_text(json.dumps({"num_epochs": 2}))
    run = run_dir.load_run(d, d.name)[0]
    fig = report_plots.draw_schedules([run], (8, 5))
    ax_lr, ax_alpha = fig.axes
    assert list(ax_lr.lines[0].get_ydata()[1:]) == [0.1, 0.05]  # lr / (i + 1) as logged
    assert list(ax_alpha.lines[0].get_ydata()[1:]) == [0.25, 1.0]  # (epoch / 2)² as logged
    report_plots.plt.close(fig)
    # A run without lr/α records: no line, no legend entry, "no data" on both panels.
    d, _ = write_run(tmp_path, "bare", train_records=[{"step": 10, "epoch": 1.0, "loss": 1.0}])
    fig = report_plots.draw_schedules([run_dir.load_run(d, d.name)[0]], (8, 5))
    assert not any(ax.lines for ax in fig.axes) and not fig.legends
    assert all("no data" in [t.get_text() for t in ax.texts] for ax in fig.axes)
    report_plots.plt.close(fig)


def test_plots_import_nothing_outside_the_report():
    """The figures are drawn from the run directory alone, not by rebuilding training's code."""
    tree = ast.parse((REPO / "fbl_jax" / "report" / "plots.py").read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    ours = [n for n in names if n.split(".")[0] == "fbl_jax"]
    assert ours and all(n.startswith("fbl_jax.report.") for n in ours), ours


def _drawn_tick_labels(axis):
    """Tick labels the axis draws: visible, non-empty, at a tick inside the view."""
    low, high = sorted(axis.get_view_interval())
    out = []
    for ticks, locs in (
        (axis.get_major_ticks(), axis.get_majorticklocs()),
        (axis.get_minor_ticks(), axis.get_minorticklocs()),
    ):
        for tick, loc in zip(ticks, locs):
            inside = low - 1e-9 * abs(low) <= loc <= high + 1e-9 * abs(high)
            if inside and tick.label1.get_visible() and tick.label1.get_text().strip():
                out.append(tick.label1)
    return out


def _owned_texts(fig):
    """(owner, text) for every text drawn: owner its axes, its legend or the figure."""
    out = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        own = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        own += [*ax.texts, *_drawn_tick_labels(ax.xaxis), *_drawn_tick_labels(ax.yaxis)]
        out += [(ax, t) for t in own]
    for legend in _legends(fig):
        out += [(legend, t) for t in legend.get_texts()]
    out += [(fig, t) for t in fig.findobj(matplotlib.text.Text) if t in fig.texts]
    out += [(fig, t) for t in (fig._suptitle, fig._supxlabel, fig._supylabel) if t is not None]
    unique = {id(t): (o, t) for o, t in out if t.get_visible() and t.get_text().strip()}
    return list(unique.values())


def _overlap(a, b, tol=0.5):
    return a.x0 + tol < b.x1 and b.x0 + tol < a.x1 and a.y0 + tol < b.y1 and b.y0 + tol < a.y1


def layout_problems(fig):
    """What a reader would see wrong: text cut off or under 8 pt, texts on top of each other,
    text of one axes or a legend over another axes' area."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    texts = [(o, t, t.get_window_extent(renderer)) for o, t in _owned_texts(fig)]
    areas = [(ax, ax.get_window_extent(renderer)) for ax in fig.axes if ax.get_visible()]
    problems = []
    for owner, t, box in texts:
        name = repr(t.get_text())
        if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1:
            problems.append(f"{name} outside the figure")
        if t.get_fontsize() < 8:
            problems.append(f"{name} under 8 pt")
        problems += [
            f"{name} over an axes" for ax, a in areas if ax is not owner and _overlap(box, a)
        ]
    for i, (_, t, box) in enumerate(texts):
        for _, u, other in texts[i + 1 :]:
            if _overlap(box, other):
                problems.append(f"{t.get_text()!r} on {u.get_text()!r}")
    for legend in _legends(fig):
        box = legend.get_window_extent(renderer)
        problems += ["legend over an axes" for _, a in areas if _overlap(box, a)]
    return problems


def _draw_all(runs, size):
    return {
        "over_epochs": report_plots.draw_feature_norm_over_epochs(runs, None, size),
        "accuracy_over_epochs": report_plots.draw_accuracy_over_epochs(runs, None, size),
        "norms": report_plots.draw_feature_norm_distribution(runs, size),
        "accuracy": report_plots.draw_per_class_accuracy(runs, size),
        "schedules": report_plots.draw_schedules(runs, size),
        "confusion": report_plots.draw_confusion(runs[0], size),
    }


# the narrowest width a paper prints (one column), the default size, a small and short one; a
# double column (6.9 in) lies between the first two
@pytest.mark.parametrize("size", [3.3, (8, 5), (4, 3)], ids=["single", "8x5", "4x3"])
def test_figures_are_readable_at_paper_widths(made, schedule_runs, size):
    _, rep, _ = made
    # The report's four runs, and a long method label next to a short one.
    for runs in (rep.runs, schedule_runs):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. matplotlib's "Tight layout not applied"
            figs = _draw_all(runs, size)
        for name, fig in figs.items():
            assert layout_problems(fig) == [], name
            want = size if isinstance(size, float) else size[0]
            assert fig.get_size_inches()[0] == pytest.approx(want), name
            if not isinstance(size, float):
                assert fig.get_size_inches()[1] == pytest.approx(size[1]), name
            for legend in _legends(fig):
                assert legend in fig.legends  # below the axes, not over them
            report_plots.plt.close(fig)


def test_long_legend_labels_are_wrapped_when_narrow(schedule_runs):
    fig = report_plots.draw_schedules(schedule_runs, 2.2)
    label = fig.legends[0].get_texts()[0].get_text()
    assert "\n" in label and label.replace("\n", " ") == run_labels.method_name(
        schedule_runs[0].config
    )
    report_plots.plt.close(fig)


def test_wrap_label_breaks_after_commas():
    label = "FBL (authors' form, α(t) offset 1.5, α per epoch)"
    assert run_labels.wrap_label(label, 60) == label
    assert run_labels.wrap_label(label, 30) == "FBL (authors' form,\nα(t) offset 1.5, α per epoch)"
    assert run_labels.wrap_label(label, 20) == "FBL (authors' form,\nα(t) offset 1.5,\nα per epoch)"
    assert all(len(ln) <= 12 for ln in run_labels.wrap_label(label, 12).split("\n"))


def test_crowded_class_ticks_are_rotated_not_overlapping(made):
    _, rep, _ = made
    fig = report_plots.draw_per_class_accuracy(rep.runs, 1.2)  # 4 classes in 1.2 in
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks[0] == "dog (500)" or ticks[0].endswith("… (500)")
    assert all(t.get_rotation() == 90 for t in fig.axes[0].get_xticklabels())
    assert not any(p.endswith("over an axes") or " on " in p for p in layout_problems(fig))
    report_plots.plt.close(fig)


def test_column_widths_in_inches():
    assert report.column_width("single") == 3.3 and report.column_width("double") == 6.9
    assert report.column_width("5") == report.column_width(5) == 5.0
    for bad in ("triple", "0", "-2", "nan", "inf"):
        with pytest.raises(ValueError, match="width must be 'single'"):
            report.column_width(bad)


# A named width is the 300-dpi test below (the CLI's path: every figure 990 pixels wide)
def test_width_option_sets_every_figure_width(runs, tmp_path):
    _, dirs, _ = runs
    report.make_report(dirs[:3], tmp_path, width="5", dpi=40)
    pngs = list(tmp_path.glob("*.png"))
    assert len(pngs) == 6  # 5 figures, CE's confusion (its 2 seeds in one); FBL logged none
    for png in pngs:
        w, h = _png_size(png)
        assert w == 5 * 40, png.name
        assert h > 1.5 * 40, png.name  # each figure its own height, none squeezed flat


def test_width_flag_prints_at_300_dpi(runs, tmp_path):
    _, dirs, _ = runs
    assert report.main([str(dirs[2]), "--out", str(tmp_path), "--width", "single"]) == 0
    pngs = list(tmp_path.glob("*.png"))
    assert "schedules.png" in {p.name for p in pngs}
    for png in pngs:
        w, h = _png_size(png)
        assert w == round(3.3 * report.PAPER_DPI) == 990, png.name
        assert h > 1.5 * report.PAPER_DPI, png.name  # each figure its own height


def test_width_and_figsize_exclude_each_other(runs, tmp_path, capsys):
    _, dirs, _ = runs
    args = [str(dirs[0]), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        report.main([*args, "--width", "single", "--figsize", "4", "3"])
    assert exc.value.code == 2
    _assert_clean_error(capsys.readouterr().err, "not allowed with argument")
    with pytest.raises(SystemExit):
        report.main([*args, "--width", "narrow"])
    _assert_clean_error(capsys.readouterr().err, "'narrow' is not a column width")
    with pytest.raises(ValueError, match="not both"):
        report.make_report(dirs[:1], tmp_path, figsize=(4, 3), width="single")


def test_per_class_accuracy_ticks_carry_training_counts(figures):
    runs, figs = figures
    ax = figs["accuracy"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "dog\n(500)",
        "cat\n(30)",
        "eel\n(30)",
        "fox\n(5)",
    ]
    legend = [t.get_text() for t in figs["accuracy"].legends[0].get_texts()]
    assert legend == ["CE, seed 0", "CE, seed 1", "FBL (paper form)", "CE, seed 2"]
    # Bars start at 0 and the top sits just above the tallest bar, not always at 100 %.
    tallest = max(100 * max(r.last_test()["per_class_accuracy"]) for r in runs)
    bottom, top = ax.get_ylim()
    assert bottom == 0 and tallest < top <= min(100, tallest + 15)
    confusion_rows = [t.get_text() for t in figs["confusion"].axes[0].get_yticklabels()]
    assert confusion_rows == ["dog (500)", "cat (30)", "eel (30)", "fox (5)"]


def test_feature_norms_are_points_per_class_not_a_line(figures):
    runs, figs = figures
    ax = figs["norms"].axes[0]
    assert len(ax.lines) == len(runs)
    for run, line in zip(runs, ax.lines):
        assert line.get_linestyle() == "None" and line.get_marker() == "o"
        x, y = line.get_xdata(), line.get_ydata()
        np.testing.assert_array_equal(np.round(x), np.arange(4))  # each point in its class slot
        norms = run.last_test()["feature_norm_per_class"]
        np.testing.assert_allclose(y, [norms[c] for c in ORDER])
    # The norms lie in [1, 10]: the axis follows the data rather than starting at 0.
    low = min(min(r.last_test()["feature_norm_per_class"]) for r in runs)
    assert 0 < ax.get_ylim()[0] < low


def test_default_head_and_tail_classes(made):
    _, rep, _ = made
    picked = [c for _, c in report_plots.select_classes(rep.runs[0], None)]
    assert picked == [1, 0, 2, 3]  # 2 most frequent, then 2 least frequent


def test_no_readable_run_raises_and_exits_nonzero(runs, tmp_path, capsys):
    root, _, _ = runs
    bad = [root / "missing", root / "does_not_exist"]
    with pytest.raises(report.NoReadableRunError, match="missing"):
        report.make_report(bad, tmp_path / "out")
    assert report.main([str(p) for p in bad] + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "does_not_exist" in err
    _assert_clean_error(err, "none of the 2 run directories could be read")
    assert not (tmp_path / "out").exists()  # nothing written for nothing read


def _assert_clean_error(err: str, problem: str) -> None:
    """stderr ends in `fbl-report: error: <problem>` (+ at most one indented fix line)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("fbl-report: error: ")]
    assert len(starts) == 1 and starts[0] >= len(lines) - 2, err
    assert problem in lines[starts[0]], err
    assert all(ln.startswith("  ") for ln in lines[starts[0] + 1 :]), err


def test_cli_on_a_missing_directory_exits_2_without_traceback(tmp_path):
    missing = tmp_path / "no_such_run"
    proc = subprocess.run(
        [sys.executable, "-m", "fbl_jax.report", str(missing), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"fbl-report: problem: no_such_run: {missing} is not a directory" in proc.stderr
    _assert_clean_error(proc.stderr, "could be read")
    assert "config.json, class_counts.json and metrics.jsonl" in proc.stderr  # the fix
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--dpi", "0"], "argument --dpi: '0' is not a positive number"),
        (["--figsize", "8", "-1"], "argument --figsize: '-1' is not a positive number"),
        (["--classes", "0,x"], "argument --classes: '0,x' is not a list of class ids"),
        (["--classes", "-1"], "argument --classes: '-1' is not a list of class ids"),
        (["--max-inline-classes", "-3"], "argument --max-inline-classes: '-3'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(runs, tmp_path, capsys, flags, named):
    _, dirs, _ = runs
    with pytest.raises(SystemExit) as exc:
        report.main([str(dirs[0]), "--out", str(tmp_path / "o"), *flags])
    assert exc.value.code == 2
    _assert_clean_error(capsys.readouterr().err, named)


def test_class_out_of_range_and_unwritable_out_exit_2(runs, tmp_path, capsys):
    _, dirs, _ = runs
    args = [str(dirs[0]), "--out", str(tmp_path / "o")]
    assert report.main([*args, "--classes", "0,7"]) == 2
    _assert_clean_error(capsys.readouterr().err, "classes [7] out of range for run 'ce_s0'")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert report.main([str(dirs[0]), "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    _assert_clean_error(err, f"cannot write the report to {blocker}")
    assert "give --out a directory you can write to" in err


def test_bad_arguments_are_named(runs, tmp_path):
    _, dirs, _ = runs
    with pytest.raises(ValueError, match="dpi"):
        report.make_report(dirs, tmp_path, dpi=0)
    with pytest.raises(ValueError, match=r"classes \[7\].*0\.\.3"):
        report.make_report(dirs, tmp_path, classes=[0, 7])


def test_settings_that_look_alike_show_what_differs(tmp_path):
    a, _ = write_run(tmp_path, "a", lr=0.1)
    b, _ = write_run(tmp_path, "b", lr=0.05)
    loaded = [run_dir.load_run(d, d.name)[0] for d in (a, b)]
    settings = report_tables.aggregate_settings(loaded, report_tables.DEFAULT_IGNORE_KEYS)
    assert [s["differs_in"] for s in settings] == [
        {"optimizer.learning_rate": 0.1},
        {"optimizer.learning_rate": 0.05},
    ]


def test_seeds_that_differ_in_bookkeeping_alone_are_one_setting(tmp_path):
    """Seed 0 written before checkpoint_every_minutes existed, seed 1 after, with other log and
    dispatch settings: one setting of two seeds. A learning rate apart stays apart."""
    extra = {"checkpoint_every_minutes": 30.0, "log_every_steps": 50, "steps_per_call": 4}
    data = {"source": "image_folder", "root": "/x/cifar10", "imbalance_factor": 100.0}
    a, _ = write_run(tmp_path, "s0", seed=0, top1=(0.4, 0.60))
    b, _ = write_run(
        tmp_path,
        "s1",
        seed=1,
        top1=(0.4, 0.70),
        config_extra={**extra, "data": {**data, "num_classes": 4, "cache_dir": "/c"}},
    )
    c, _ = write_run(tmp_path, "lr", seed=2, lr=0.05)
    loaded = [run_dir.load_run(d, d.name)[0] for d in (a, b, c)]
    settings = report_tables.aggregate_settings(loaded, report_tables.DEFAULT_IGNORE_KEYS)
    assert [s["runs"] for s in settings] == [["s0", "s1"], ["lr"]]
    top1 = settings[0]["metrics"]["top1_last"]
    assert (top1["n"], top1["mean"]) == (2, pytest.approx(0.65))


def _sweep_folder(root: pathlib.Path, seeds=(0, 1), not_started=()) -> pathlib.Path:
    """What fbl-sweep --set seed=... writes: sweep.json, timing files, one run per setting."""
    folder = root / "sweep"
    names = [f"seed={s}" for s in (*seeds, *not_started)]
    for seed in seeds:
        write_run(folder, f"seed={seed}", seed=seed, top1=(0.4, 0.5 + seed / 10))
    runs = [{"name": n, "settings": {"seed": int(n[5:])}} for n in names]
    spec = {"sets": [["seed", list(seeds)]], "runs": runs, "programs": [names]}
    (folder / "sweep.json").write_text(json.dumps(spec))
    (folder / "timing_program0.json").write_text("{}")
    (folder / "timing_program0_seed1.json").write_text("{}")
    (folder / "timing_program0_seed1.json.tmp").write_text("{")  # a write a kill cut short
    return folder


def _report(args, out: pathlib.Path, capsys) -> tuple[dict, str]:
    assert report.main([*map(str, args), "--out", str(out), "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return json.loads((out / "summary.json").read_text()), err


def test_a_sweep_folder_stands_for_its_runs(tmp_path, capsys):
    folder = _sweep_folder(tmp_path, not_started=(2,))
    summary, err = _report([folder], tmp_path / "out", capsys)
    assert [s["seeds"] for s in summary["settings"]] == [[0, 1]]
    assert [r["name"] for r in summary["runs"]] == ["seed=0", "seed=1"]
    # the run sweep.json lists but nobody started yet: named, one line
    assert err.splitlines() == [
        "fbl-report: problem: sweep/seed=2: listed in sweep.json, no run directory yet "
        "(not started)"
    ]


def test_a_sweeps_own_files_are_skipped_quietly(tmp_path, capsys):
    folder = _sweep_folder(tmp_path)
    summary, err = _report(sorted(folder.iterdir()), tmp_path / "out", capsys)  # runs/sweep/*
    assert err == ""
    assert [s["seeds"] for s in summary["settings"]] == [[0, 1]]
    assert "2 of 2 run directories read" in (tmp_path / "out" / "summary.md").read_text()


def test_a_run_given_twice_counts_once(tmp_path, capsys):
    folder = _sweep_folder(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(folder / "seed=0")
    again = [folder / "seed=0", folder / "seed=0", link, folder, folder / ".." / "sweep" / "seed=1"]
    summary, err = _report(again, tmp_path / "out", capsys)
    assert err == ""
    assert [s["seeds"] for s in summary["settings"]] == [[0, 1]]  # not [0, 0, 0, 0, 1]
    assert [r["name"] for r in summary["runs"]] == ["seed=0", "seed=1"]
    # a copy of a finished run (same config, seed included, and final line) is that run too
    copy = tmp_path / "copied" / "seed=0"
    shutil.copytree(folder / "seed=0", copy)
    summary, err = _report([folder, copy], tmp_path / "out2", capsys)
    assert [s["seeds"] for s in summary["settings"]] == [[0, 1]]
    assert err.splitlines() == [
        "fbl-report: problem: seed=0-2: the same run as seed=0 (same config.json, seed included, "
        "and final results): counted once"
    ]


def test_only_a_sweeps_own_files_is_one_clean_error(tmp_path, capsys):
    folder = _sweep_folder(tmp_path)
    args = [str(folder / "sweep.json"), str(folder / "timing_program0.json")]
    assert report.main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "fbl-report: problem: (arguments): only a sweep's own files" in err
    _assert_clean_error(err, "none of the 2 run directories could be read")
    assert not (tmp_path / "out").exists()


def test_time_table_sums_each_runs_stretches_by_machine(tmp_path, capsys):
    """Hand values: one run resumed twice on a second machine, in a process it shared with
    another run there; one run trained before stretches were recorded."""
    a, _ = write_run(tmp_path, "a", loss="ce", config_extra={"batch_size": 64})
    b, _ = write_run(tmp_path, "b", loss="fbl", config_extra={"batch_size": 64})
    stretch = {"host": "CPU A", "first_step": 0, "last_step": 1000, "cpu_s": 300.0,
               "seconds": {"compile": 10.0, "train": 320.0, "eval": 30.0, "checkpoint": 5.0}}  # fmt: skip
    later = {**stretch, "host": "CPU B", "first_step": 1000, "last_step": 3000, "cpu_s": 3000.0,
             "seconds": {"train": 3200.0, "eval": 400.0}, "runs_in_process": ["a", "c"]}  # fmt: skip
    (a / "timing.json").write_text(json.dumps({"stretches": [stretch, later, {**later}]}))
    (b / "timing.json").write_text(json.dumps({"total": {"train": 7000.0, "eval": 200.0}}))
    summary, _ = _report([a, b], tmp_path / "out", capsys)
    text = (tmp_path / "out" / "summary.md").read_text()
    rows = [line for line in text.split("## Time")[1].splitlines() if line.startswith("| ")][1:]
    expected = [
        "| CE | 0 | CPU A | 1 | 1000 | 6 min 05 s | 5 min 00 s | 200 |",  # 1000·64 / 320 s
        # 4000·64 / 6400 s; 7200 s of wall time and 6000 s of CPU time in all
        "| CE | 0 | CPU B | 2 | 4000 | 2 h 00 min (shared) | 1 h 40 min (shared) | 40 |",
        "| FBL (paper form) | 0 | not recorded | 1 | — | 2 h 00 min | — | — |",
    ]
    assert rows == expected, text
