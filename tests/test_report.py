"""fbl-report on small synthetic run directories.

Expected numbers are computed here from the values written into the runs (NumPy mean and sample
std, percent with 2 decimals), never by calling the report's own helpers.
"""

from __future__ import annotations

import json
import pathlib
import struct

import numpy as np
import pytest

from fbl_jax import report, report_plots, report_tables, run_dir

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
):
    """A run directory: 2 epochs of train records, test+minival evals, and a final line."""
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
    (d / "config.json").write_text(json.dumps(config))
    (d / "class_counts.json").write_text(json.dumps({"counts": COUNTS, "class_names": NAMES}))
    rng = np.random.default_rng(seed + 10 * len(loss))
    cm = rng.integers(0, 20, size=(4, 4)).tolist() if confusion else None
    lines = []
    tests = []
    for i, t1 in enumerate(top1):
        step, epoch = 10 * (i + 1), float(i + 1)
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
    assert set(rows) == {"ce", "fbl (paper, parabolic)"}  # the unfinished run is left out
    ce = rows["ce"]
    assert ce["#Seeds"] == "2" and ce["Dataset"] == "CIFAR-10-LT" and ce["IF"] == "100"
    assert ce["Model"] == "resnet32" and ce["Runs"] == "ce_s0, ce_s1"
    assert ce["Top-1 last"] == _mean_pm_std([0.6123, 0.6341]) == "62.32 ± 1.54"
    assert ce["Top-1 best-on-minival"] == _mean_pm_std([0.5871, 0.6017])
    lasts = [info[n][1][-1] for n in ("ce_s0", "ce_s1")]
    for col, key in (("Many", "many_shot"), ("Medium", "medium_shot"), ("Few", "few_shot")):
        assert ce[col] == _mean_pm_std([r[key] for r in lasts])
    fbl = rows["fbl (paper, parabolic)"]
    assert fbl["#Seeds"] == "1"
    assert fbl["Top-1 last"] == "70.11" and fbl["Top-1 best-on-minival"] == "69.88"
    assert fbl["Many"] == "90.00" and fbl["Medium"] == "50.00" and fbl["Few"] == "—"
    # summary.json carries the same numbers as fractions.
    summary = json.loads((out / "summary.json").read_text())
    s = {x["method"]: x for x in summary["settings"]}["ce"]["metrics"]["top1_last"]
    assert s["mean"] == pytest.approx(np.mean([0.6123, 0.6341]))
    assert s["std"] == pytest.approx(np.std([0.6123, 0.6341], ddof=1))


def test_per_class_table_ordered_by_training_count(made):
    out, rep, info = made
    md = (out / "summary.md").read_text()
    block = _section(md, "Per-class accuracy").split("### ce_s1\n", 1)[1]
    rows = _table(block)
    last = info["ce_s1"][1][-1]
    assert [int(r["Class id"]) for r in rows] == ORDER
    assert [r["Class"] for r in rows] == [NAMES[c] for c in ORDER]
    assert [int(r["Train count"]) for r in rows] == [COUNTS[c] for c in ORDER]
    expected = [f"{100 * last['per_class_accuracy'][c]:.2f}" for c in ORDER]
    assert [r["Top-1 last (%)"] for r in rows] == expected
    assert (out / "per_class_ce_s1.csv").read_text().splitlines()[1].startswith("1,1,dog,500,")


def test_long_per_class_table_goes_to_linked_file(runs, tmp_path):
    _, dirs, info = runs
    report.make_report(dirs[:1], tmp_path, max_inline_classes=3)
    md = (tmp_path / "summary.md").read_text()
    assert "](per_class_ce_s0.md)" in md
    rows = _table((tmp_path / "per_class_ce_s0.md").read_text())
    assert [int(r["Train count"]) for r in rows] == [500, 30, 30, 5]


def test_problems_named_in_markdown_and_stderr(runs, tmp_path, capsys):
    _, dirs, _ = runs
    assert report.main([str(d) for d in dirs] + ["--out", str(tmp_path), "--dpi", "20"]) == 0
    problems = _section((tmp_path / "summary.md").read_text(), "Problems")
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
        "feature_norm_distribution",
        "per_class_accuracy",
        "schedules",
        "confusion_ce_s0",
        "confusion_ce_s1",
        "confusion_broken",
    ]
    for name in figures:
        assert _png_size(out / f"{name}.png") == (800, 500), name
    assert not (out / "confusion_fbl_s0.png").exists()  # no confusion logged for this run
    _, dirs, _ = runs
    report.make_report(dirs[2:3], tmp_path, dpi=30, figsize=(4, 3), classes=[3, 1])
    assert _png_size(tmp_path / "feature_norm_over_epochs.png") == (120, 90)
    assert _png_size(tmp_path / "schedules.png") == (120, 90)


def test_default_head_and_tail_classes(made):
    _, rep, _ = made
    picked = [c for _, c in report_plots.select_classes(rep.runs[0], None)]
    assert picked == [1, 0, 2, 3]  # 2 most frequent, then 2 least frequent


def test_no_readable_run_raises_and_exits_nonzero(runs, tmp_path, capsys):
    root, _, _ = runs
    bad = [root / "missing", root / "does_not_exist"]
    with pytest.raises(report.NoReadableRunError, match="missing"):
        report.make_report(bad, tmp_path / "out")
    assert report.main([str(p) for p in bad] + ["--out", str(tmp_path / "out")]) == 1
    assert "does_not_exist" in capsys.readouterr().err


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
