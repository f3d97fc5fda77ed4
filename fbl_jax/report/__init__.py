"""fbl-report: turn training run directories into a Markdown summary, summary.json and figures.

    fbl-report runs/ce_s0 runs/ce_s1 runs/fbl_s0 --out report/
    fbl-report runs/c10_table4 --out report/     # a sweep folder: its runs

A sweep folder (fbl-sweep's --workdir) stands for its run directories, and its own files
(sweep.json, timing_*.json, as `runs/sweep/*` lists them) are skipped; a run named twice (the same
directory by any path, or a copy: same config and final line) counts once.
Runs whose config differs only in the seed (and run name / workdir) form one *setting*; the
results table shows each setting's mean ± sample std over its finished seeds, in the shape of
the paper's Tables 2/3. Anything that could not be read (missing files, unfinished runs,
corrupt lines) is listed by run name under "Problems" and on stderr, never dropped silently.
All accuracies in the run files are fractions; the Markdown prints percentages.

This module is the command line and `make_report`; reading runs is run_dir.py, the tables
report_tables.py, the figures report_plots.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from fbl_jax.report.merge import merge_settings
from fbl_jax.report.run_dir import (
    NoReadableRunError,
    Run,
    expand_run_paths,
    load_run,
    same_run_key,
    unique_names,
)
from fbl_jax.report.tables import (
    DEFAULT_IGNORE_KEYS,
    aggregate_settings,
    per_class_section,
    results_table,
    run_summary,
    time_table,
)

# Shape of the figures: 8×5 inches at 100 dpi is 800×500 pixels.
DEFAULT_FIGSIZE = (8.0, 5.0)
DEFAULT_DPI = 100
# With a paper column width (--width) the PNGs are for print: 3.3 in at 300 dpi is 990 pixels.
PAPER_DPI = 300
# --width's names, in inches (plots.COLUMN_WIDTHS; repeated so the CLI needs no matplotlib).
COLUMN_WIDTHS = {"single": 3.3, "double": 6.9}
# Per-class tables with more rows than this go to their own file.
DEFAULT_MAX_INLINE_CLASSES = 30
# Exit status for bad input, the same as argparse's own errors.
EXIT_USAGE = 2
__all__ = ["DEFAULT_IGNORE_KEYS", "NoReadableRunError", "Report", "main", "make_report"]


@dataclasses.dataclass
class Report:
    """What make_report wrote and found."""

    out_dir: pathlib.Path
    runs: list[Run]
    summary: dict[str, Any]
    problems: list[tuple[str, str]]
    files: list[pathlib.Path]


def column_width(width: float | str) -> float:
    """Inches of a --width value: 'single' (3.3), 'double' (6.9) or a positive number."""
    if isinstance(width, str) and width in COLUMN_WIDTHS:
        return COLUMN_WIDTHS[width]
    try:
        inches = float(width)
    except (TypeError, ValueError):
        inches = math.nan
    if not (math.isfinite(inches) and inches > 0):
        raise ValueError(
            f"width must be 'single' (3.3 in), 'double' (6.9 in) or positive inches, got {width!r}"
        )
    return inches


def _check_args(
    run_dirs: Sequence[Any],
    dpi: float,
    figsize: Sequence[float] | None,
    width: float | str | None,
    max_inline: int,
    classes: Sequence[int] | None,
) -> None:
    if isinstance(run_dirs, (str, pathlib.Path)) or not run_dirs:
        raise ValueError(f"run_dirs must be a non-empty list of directories, got {run_dirs!r}")
    if not dpi > 0:
        raise ValueError(f"dpi must be positive, got {dpi!r}; e.g. 100 (8×5 in → 800×500 px)")
    if figsize is not None and (len(figsize) != 2 or not all(v > 0 for v in figsize)):
        raise ValueError(f"figsize must be two positive inches (width, height), got {figsize!r}")
    if figsize is not None and width is not None:
        raise ValueError("give figsize or width, not both: width lets each figure pick its height")
    if width is not None:
        column_width(width)
    if max_inline < 0:
        raise ValueError(f"max_inline_classes must be >= 0, got {max_inline!r}")
    if classes is not None and (not classes or any(c < 0 for c in classes)):
        raise ValueError(f"classes must be non-empty non-negative class ids, got {classes!r}")


def make_report(
    run_dirs: Sequence[str | pathlib.Path],
    out_dir: str | pathlib.Path,
    *,
    classes: Sequence[int] | None = None,
    dpi: float | None = None,
    figsize: Sequence[float] | None = None,
    width: float | str | None = None,
    max_inline_classes: int = DEFAULT_MAX_INLINE_CLASSES,
    ignore_keys: Sequence[str] = DEFAULT_IGNORE_KEYS,
    figures: bool = True,
) -> Report:
    """Read the runs and write summary.md, summary.json, per-class files and the figures.

    Every figure is written as PNG (embedded in summary.md) and PDF (same stem). `classes`
    picks the class ids for the over-epochs figures (default: the two most and two least
    frequent of each run for the feature norms; the most and two least frequent, beside all
    classes, for the test accuracy). Figures are `figsize` (default 8×5 in) or, with `width`
    ('single' = 3.3 in, 'double' = 6.9 in, or inches), that wide with the height each needs;
    `dpi` defaults to DEFAULT_DPI, or PAPER_DPI with a width. Raises NoReadableRunError if no
    run was read, ValueError for a bad argument, OSError if `out_dir` cannot be written.
    `figures=False` writes the tables only: drawing takes most of a report's time (about a
    second a figure), too long for a look at runs in progress.
    """
    if dpi is None:
        dpi = DEFAULT_DPI if width is None else PAPER_DPI
    _check_args(run_dirs, dpi, figsize, width, max_inline_classes, classes)
    if figsize is None and width is None:
        figsize = DEFAULT_FIGSIZE
    paths, problems = expand_run_paths(run_dirs)
    runs: list[Run] = []
    copies: dict[str, str] = {}  # same_run_key → the name of the run kept
    for path, name in zip(paths, unique_names(paths)):
        run, msgs = load_run(path, name)
        problems += [(name, m) for m in msgs]
        key = None if run is None else same_run_key(run)
        if key is not None and key in copies:
            problems.append((name, f"the same run as {copies[key]} (same config.json, seed "
                             "included, and final results): counted once"))  # fmt: skip
            continue
        if key is not None:
            copies[key] = name
        if run is not None:
            runs.append(run)
    if not runs:
        raise NoReadableRunError(problems)
    if classes is not None:
        for run in runs:
            bad = [c for c in classes if c >= run.num_classes]
            if bad:
                raise ValueError(
                    f"classes {bad} out of range for run {run.name!r}: valid class "
                    f"ids are 0..{run.num_classes - 1} (--classes)"
                )
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = aggregate_settings(runs, ignore_keys)
    for s in settings:
        seeds = [x for x in s["seeds"] if x is not None]
        if len(set(map(str, seeds))) != len(seeds):
            problems.append((", ".join(s["runs"]), f"same seed used twice in one setting: {seeds}"))
    # figures and per-class tables: one line or row per method, its seeds merged
    shown = merge_settings(runs, settings)
    drawn: list[pathlib.Path] = []
    if figures:
        from fbl_jax.report import plots as report_plots  # matplotlib only when drawing

        drawn = report_plots.plot_all(
            shown,
            out,
            classes=classes,
            dpi=dpi,
            figsize=None if figsize is None else tuple(figsize),
            width=None if width is None else column_width(width),
        )
    pdfs = [p.with_suffix(".pdf") for p in drawn]
    files = drawn + pdfs

    md = [
        "# fbl-jax report",
        "",
        f"{len(runs)} of {len(paths)} run directories read. Accuracies in %; "
        "settings with several seeds show mean ± sample std (ddof=1). Many/medium/few: "
        "classes with >100 / 20–100 / <20 training images, from the last test evaluation.",
        "",
        "## Results",
        "",
    ]
    md += results_table(settings) if settings else ["No finished run (no `final` line)."]
    md += ["", "## Per-class accuracy", "", "Each method's seeds averaged class by class.", ""]
    for run in shown:
        lines, written = per_class_section(run, out, max_inline_classes)
        md += lines
        files += written
    if figures:
        md += ["## Figures", "", "Each figure is also a PDF of the same name, for papers.", ""]
        md += [f"![{p.stem}]({p.name}) ([PDF]({p.stem}.pdf))" for p in drawn] + [""]
    md += time_table(runs)
    md += ["## Problems", ""]
    md += [f"- **{run}**: {msg}" for run, msg in problems] or ["None."]
    (out / "summary.md").write_text("\n".join(md) + "\n", encoding="utf-8")

    summary = {
        "units": "accuracies are fractions in [0, 1]; std is the sample std (ddof=1)",
        "settings": settings,
        "runs": [run_summary(r) for r in runs],
        "problems": [{"run": r, "message": m} for r, m in problems],
        "figures": [p.name for p in drawn],
        "figures_pdf": [p.name for p in pdfs],
    }
    (out / "summary.json").write_text(
        json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8"
    )
    files += [out / "summary.md", out / "summary.json"]
    return Report(out, runs, summary, problems, files)


def _parse_classes(text: str) -> list[int]:
    try:
        classes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        classes = []
    if not classes or any(c < 0 for c in classes):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of class ids; give comma-separated ids >= 0, e.g. 0,1,8,9"
        )
    return classes


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number; e.g. 100")
    return value


def _width(text: str) -> float:
    try:
        return column_width(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a column width; give single (3.3 in), double (6.9 in) or inches"
        ) from None


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0; e.g. 30")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fbl-report", description=__doc__.split("\n")[0])
    p.add_argument(
        "run_dirs",
        nargs="+",
        help="run directories (fbl-train workdirs) or sweep folders (fbl-sweep workdirs)",
    )
    p.add_argument("--out", required=True, help="output directory for summary.md and figures")
    p.add_argument(
        "--dpi",
        type=_positive_float,
        default=None,
        help=f"PNG resolution (default {DEFAULT_DPI}: 8×5 in → 800×500 px; {PAPER_DPI} with "
        "--width)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--figsize",
        type=_positive_float,
        nargs=2,
        default=None,
        metavar=("W", "H"),
        help="every figure's size in inches (default: 8 5)",
    )
    size.add_argument(
        "--width",
        type=_width,
        default=None,
        help="paper column width: single (3.3 in), double (6.9 in) or inches; each figure "
        "takes the height it needs",
    )
    p.add_argument(
        "--classes",
        type=_parse_classes,
        default=None,
        help="class ids for the over-epochs figures, e.g. 0,1,8,9 (default: the 2 most and 2 "
        "least frequent for the feature norms, the most and 2 least frequent for accuracy)",
    )
    p.add_argument(
        "--max-inline-classes",
        type=_non_negative_int,
        default=DEFAULT_MAX_INLINE_CLASSES,
        help="per-class tables longer than this go to per_class_<run>.md",
    )
    p.add_argument(
        "--ignore-key",
        action="append",
        default=None,
        help="config key (dotted) that does not define a setting; repeatable "
        f"(default: {', '.join(DEFAULT_IGNORE_KEYS)})",
    )
    p.add_argument(
        "--no-figures",
        dest="figures",
        action="store_false",
        help="tables only (summary.md, summary.json, per-class files): seconds, not a second "
        "per figure; for a look at runs in progress",
    )
    return p


def _error(problem: str, fix: str | None = None) -> int:
    """The CLI's error report: `fbl-report: error: <problem>`, the fix indented below; exit 2."""
    print(f"fbl-report: error: {problem}", file=sys.stderr)
    if fix:
        print(f"  {fix}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """CLI body; returns the exit status: 0, or 2 (as argparse's own errors) for bad input.

    Bad input never shows a traceback: each problem with a run is one `fbl-report: problem:`
    line, and a failure ends in `fbl-report: error: ...` plus the fix.
    """
    from fbl_jax.cli.logs import setup_logging

    setup_logging()  # figures: matplotlib's and fontTools' INFO lines stay quiet
    args = build_parser().parse_args(argv)
    ignore = tuple(args.ignore_key) if args.ignore_key else DEFAULT_IGNORE_KEYS
    try:
        report = make_report(
            args.run_dirs,
            args.out,
            classes=args.classes,
            dpi=args.dpi,
            figsize=args.figsize,
            width=args.width,
            max_inline_classes=args.max_inline_classes,
            ignore_keys=ignore,
            figures=args.figures,
        )
    except NoReadableRunError as e:
        for run, msg in e.problems:
            print(f"fbl-report: problem: {run}: {msg}", file=sys.stderr)
        return _error(
            f"none of the {len(args.run_dirs)} run directories could be read (problems above)",
            "give fbl-train --workdir directories, each with config.json, class_counts.json "
            "and metrics.jsonl",
        )
    except ValueError as e:
        return _error(str(e))
    except OSError as e:
        where = e.filename if e.filename is not None else args.out
        return _error(
            f"cannot write the report to {where}: {e.strerror or e}",
            "give --out a directory you can write to (it is created if missing)",
        )
    for run, msg in report.problems:
        print(f"fbl-report: problem: {run}: {msg}", file=sys.stderr)
    print(f"fbl-report: wrote {report.out_dir / 'summary.md'} ({len(report.runs)} runs)")
    return 0


def run() -> None:
    """Console-script entry point (fbl-report)."""
    sys.exit(main(sys.argv[1:]))
