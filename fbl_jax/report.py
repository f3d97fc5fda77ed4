"""fbl-report: turn training run directories into a Markdown summary, summary.json and figures.

    fbl-report runs/ce_s0 runs/ce_s1 runs/fbl_s0 --out report/

Runs whose config differs only in the seed (and run name / workdir) form one *setting*; the
results table shows each setting's mean ± sample std over its finished seeds, in the shape of
the paper's Tables 2/3. Anything that could not be read (missing files, unfinished runs,
corrupt lines) is listed by run name under "Problems" and on stderr, never dropped silently.
All accuracies in the run files are fractions; the Markdown prints percentages.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import pathlib
import re
import sys
from collections.abc import Sequence
from typing import Any

# Config keys that name a run rather than define its setting (dotted paths); a decoupled run's
# source run and checkpoint path differ from seed to seed like its workdir.
DEFAULT_IGNORE_KEYS = (
    "seed",
    "run_name",
    "workdir",
    "decouple.from_run",
    "decouple.checkpoint_path",
)
# How the method column names fbl-decouple's methods.
DECOUPLE_LABELS = {"tau_norm": "τ-norm", "la_posthoc": "post-hoc LA", "crt": "cRT", "lws": "LWS"}
# Shape of the figures: 8×5 inches at 100 dpi is 800×500 pixels.
DEFAULT_FIGSIZE = (8.0, 5.0)
DEFAULT_DPI = 100
# Per-class tables with more rows than this go to their own file.
DEFAULT_MAX_INLINE_CLASSES = 30
# Metrics aggregated over seeds: (summary key, record in the final line, field).
AGG_METRICS = (
    ("top1_last", "last", "top1"),
    ("top1_best_on_minival", "best_on_minival", "top1"),
    ("many_shot", "last", "many_shot"),
    ("medium_shot", "last", "medium_shot"),
    ("few_shot", "last", "few_shot"),
    ("top5_last", "last", "top5"),
    ("balanced_top1_last", "last", "balanced_top1"),
)
TABLE_METRICS = ("top1_last", "top1_best_on_minival", "many_shot", "medium_shot", "few_shot")
TABLE_HEADER = (
    "Method",
    "Dataset",
    "IF",
    "Model",
    "#Seeds",
    "Top-1 last",
    "Top-1 best-on-minival",
    "Many",
    "Medium",
    "Few",
)


class NoReadableRunError(ValueError):
    """Raised when none of the given run directories could be read."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = "\n".join(f"  {run}: {msg}" for run, msg in problems)
        super().__init__(
            "no run directory could be read; each needs config.json, class_counts.json and "
            f"metrics.jsonl (as written by fbl-train):\n{lines}"
        )


@dataclasses.dataclass
class Run:
    """One training run directory, parsed."""

    name: str
    path: pathlib.Path
    config: dict[str, Any]
    counts: list[int]
    class_names: list[str]
    train: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    final: dict[str, Any] | None

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def test_evals(self) -> list[dict[str, Any]]:
        return [e for e in self.evals if e.get("split") == "test"]

    def last_test(self) -> dict[str, Any] | None:
        """The final line's `last` record, else (unfinished run) the latest test eval."""
        if self.final is not None and self.final.get("last"):
            return self.final["last"]
        tests = self.test_evals
        return tests[-1] if tests else None

    def best_test(self) -> dict[str, Any] | None:
        return self.final.get("best_on_minival") if self.final is not None else None

    def class_order(self) -> list[int]:
        """Class ids by training count, most frequent first; ties by class id."""
        return sorted(range(self.num_classes), key=lambda c: (-self.counts[c], c))


@dataclasses.dataclass
class Report:
    """What make_report wrote and found."""

    out_dir: pathlib.Path
    runs: list[Run]
    summary: dict[str, Any]
    problems: list[tuple[str, str]]
    files: list[pathlib.Path]


def _read_json(path: pathlib.Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_run(path: str | pathlib.Path, name: str) -> tuple[Run | None, list[str]]:
    """Parse one run directory; returns (run or None if unreadable, problem messages)."""
    path = pathlib.Path(path)
    if not path.is_dir():
        return None, [f"{path} is not a directory"]
    needed = ("config.json", "class_counts.json", "metrics.jsonl")
    missing = [f for f in needed if not (path / f).is_file()]
    if missing:
        return None, [f"missing {', '.join(missing)} in {path}; run skipped"]
    problems: list[str] = []
    try:
        config = _read_json(path / "config.json")
        counts_file = _read_json(path / "class_counts.json")
    except (OSError, json.JSONDecodeError) as e:
        return None, [f"cannot parse JSON in {path}: {e}; run skipped"]
    counts = counts_file.get("counts") if isinstance(counts_file, dict) else None
    if not isinstance(counts, list) or not counts:
        return None, ["class_counts.json has no non-empty 'counts' list; run skipped"]
    counts = [int(c) for c in counts]
    names = counts_file.get("class_names")
    if not isinstance(names, list) or len(names) != len(counts):
        problems.append(
            f"class_counts.json 'class_names' missing or not {len(counts)} long; using class ids"
        )
        names = [str(c) for c in range(len(counts))]
    records = {"train": [], "eval": [], "final": []}
    with open(path / "metrics.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                problems.append(f"metrics.jsonl line {i} is not valid JSON (truncated?); skipped")
                continue
            kind = rec.get("type") if isinstance(rec, dict) else None
            if kind not in records:
                problems.append(f"metrics.jsonl line {i} has unknown type {kind!r}; skipped")
                continue
            records[kind].append(rec)
    final = records["final"][-1] if records["final"] else None
    run = Run(
        name,
        path,
        config,
        counts,
        [str(n) for n in names],
        records["train"],
        records["eval"],
        final,
    )
    if final is None:
        tests = run.test_evals
        where = f"latest test eval (step {tests[-1].get('step')})" if tests else "no test eval"
        problems.append(
            f"no 'final' line in metrics.jsonl (unfinished run): left out of the results table; "
            f"per-class table and figures use its {where}"
        )
    last = run.last_test()
    if last is None:
        problems.append("no test eval record: nothing to report for this run")
    else:
        for key in ("per_class_accuracy", "feature_norm_per_class"):
            if key in last and len(last[key]) != run.num_classes:
                return None, [
                    f"{key} has {len(last[key])} entries but class_counts.json has "
                    f"{run.num_classes} classes; run skipped"
                ]
    return run, problems


def _unique_names(paths: Sequence[pathlib.Path]) -> list[str]:
    """Directory base names, with '-2', '-3' … added where two runs share one."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        base = p.resolve().name or str(p)
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def method_name(config: dict[str, Any]) -> str:
    """Loss name; for FBL with its λ form and curriculum, e.g. 'fbl (paper, parabolic)'.

    A decoupled run (fbl-decouple) adds its method, e.g. 'fbl (paper, parabolic) + τ-norm (τ=0.8)'.
    """
    loss = config.get("loss", {}) or {}
    name = str(loss.get("name", "?"))
    if name == "fbl":
        extra = [str(loss[k]) for k in ("fbl_form", "curriculum") if loss.get(k) is not None]
        if extra:
            name += f" ({', '.join(extra)})"
    decouple = config.get("decouple") or {}
    if decouple.get("method"):
        label = DECOUPLE_LABELS.get(decouple["method"], str(decouple["method"]))
        if decouple.get("tau") is not None:
            label += f" (τ={float(decouple['tau']):g})"
        name += f" + {label}"
    return name


def dataset_name(config: dict[str, Any]) -> str:
    """`dataset_name`, else the tfds name, else the data root's base name, else the source."""
    data = config.get("data", {}) or {}
    for value in (config.get("dataset_name"), data.get("name")):
        if value:
            return str(value)
    if data.get("root"):
        return pathlib.PurePath(str(data["root"])).name or str(data["root"])
    return str(data.get("source", "?"))


def _fmt_if(value: Any) -> str:
    return "—" if value is None else f"{float(value):g}"


def _mean_std(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample std (ddof=1) over the non-null values; std is None for fewer than two."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    mean = sum(vals) / len(vals)
    std = None
    if len(vals) > 1:
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return {"mean": mean, "std": std, "n": len(vals), "values": list(values)}


def aggregate_settings(runs: Sequence[Run], ignore_keys: Sequence[str]) -> list[dict[str, Any]]:
    """Group finished runs by config minus `ignore_keys`; mean ± sample std per metric."""
    groups: dict[str, list[Run]] = {}
    flats: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run.final is None or not run.final.get("last"):
            continue
        flat = {k: v for k, v in _flatten(run.config).items() if k not in ignore_keys}
        key = json.dumps(flat, sort_keys=True, default=str)
        groups.setdefault(key, []).append(run)
        flats[key] = flat
    settings = []
    for key, members in groups.items():
        cfg = members[0].config
        loss = cfg.get("loss", {}) or {}
        metrics = {}
        for name, where, field in AGG_METRICS:
            values = [(r.final.get(where) or {}).get(field) for r in members]
            metrics[name] = _mean_std(values)
        settings.append(
            {
                "method": method_name(cfg),
                "loss": loss.get("name"),
                "fbl_form": loss.get("fbl_form"),
                "curriculum": loss.get("curriculum"),
                "dataset": dataset_name(cfg),
                "imbalance_factor": (cfg.get("data", {}) or {}).get("imbalance_factor"),
                "model": (cfg.get("model", {}) or {}).get("name"),
                "num_seeds": len(members),
                "runs": [r.name for r in members],
                "seeds": [r.config.get("seed") for r in members],
                "metrics": metrics,
                "differs_in": {},
                "_flat": flats[key],
            }
        )
    _mark_collisions(settings)
    for s in settings:
        del s["_flat"]
    return settings


def _mark_collisions(settings: list[dict[str, Any]]) -> None:
    """Settings whose table columns look alike get the config keys that tell them apart."""
    shown = ("method", "dataset", "imbalance_factor", "model")
    by_look: dict[tuple, list[dict[str, Any]]] = {}
    for s in settings:
        by_look.setdefault(tuple(str(s[k]) for k in shown), []).append(s)
    for same in by_look.values():
        if len(same) < 2:
            continue
        keys = set().union(*(s["_flat"] for s in same))
        differing = sorted(k for k in keys if len({str(s["_flat"].get(k)) for s in same}) > 1)
        for s in same:
            s["differs_in"] = {k: s["_flat"].get(k) for k in differing}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _fmt_stat(stat: dict[str, Any], num_seeds: int) -> str:
    if stat["mean"] is None:
        return "—"
    text = _pct(stat["mean"])
    if stat["std"] is not None:
        text += f" ± {_pct(stat['std'])}"
    if stat["n"] != num_seeds:
        text += f" (n={stat['n']})"
    return text


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def results_table(settings: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines of the paper-style table (percent, mean ± sample std over seeds)."""
    notes = any(s["differs_in"] for s in settings)
    header = list(TABLE_HEADER) + (["Differs in"] if notes else []) + ["Runs"]
    rows = []
    for s in settings:
        row = [
            s["method"],
            s["dataset"],
            _fmt_if(s["imbalance_factor"]),
            s["model"],
            s["num_seeds"],
        ]
        row += [_fmt_stat(s["metrics"][m], s["num_seeds"]) for m in TABLE_METRICS]
        if notes:
            row.append(", ".join(f"{k}={v}" for k, v in s["differs_in"].items()))
        row.append(", ".join(s["runs"]))
        rows.append(row)
    return _md_table(header, rows)


def per_class_rows(run: Run) -> list[list[Any]]:
    """Rows (rank, id, name, train count, acc last %, acc best %, feature norm) by frequency."""
    last = run.last_test() or {}
    best = run.best_test() or {}

    def at(rec: dict[str, Any], key: str, c: int) -> Any:
        values = rec.get(key)
        return values[c] if values is not None and c < len(values) else None

    rows = []
    for rank, c in enumerate(run.class_order(), 1):
        norm = at(last, "feature_norm_per_class", c)
        rows.append(
            [
                rank,
                c,
                run.class_names[c],
                run.counts[c],
                _pct(at(last, "per_class_accuracy", c)),
                _pct(at(best, "per_class_accuracy", c)),
                "—" if norm is None else f"{norm:.3f}",
            ]
        )
    return rows


PER_CLASS_HEADER = (
    "Rank",
    "Class id",
    "Class",
    "Train count",
    "Top-1 last (%)",
    "Top-1 best-on-minival (%)",
    "Feature norm (last)",
)


def safe_filename(name: str) -> str:
    """A run name usable in file names (per_class_<run>.md, confusion_<run>.png)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def per_class_section(run: Run, out_dir: pathlib.Path, max_inline: int) -> tuple[list[str], list]:
    """Markdown for one run's per-class table (inline, or linked file if long) + files written."""
    last = run.last_test()
    title = f"### {run.name}"
    if last is None:
        return [title, "", "No test evaluation recorded.", ""], []
    status = "final" if run.final is not None else "unfinished: latest test eval"
    lines = [
        title,
        "",
        f"Test split, step {last.get('step')} ({status}); classes ordered by "
        "training count (most frequent first).",
        "",
    ]
    rows = per_class_rows(run)
    csv_path = out_dir / f"per_class_{safe_filename(run.name)}.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([PER_CLASS_HEADER, *rows])
    files = [csv_path]
    table = _md_table(PER_CLASS_HEADER, rows)
    if len(rows) <= max_inline:
        lines += table + ["", f"CSV: [{csv_path.name}]({csv_path.name})", ""]
    else:
        md_path = out_dir / f"per_class_{safe_filename(run.name)}.md"
        md_path.write_text(
            "\n".join([f"# Per-class accuracy: {run.name}", "", *lines[2:], *table, ""]),
            encoding="utf-8",
        )
        files.append(md_path)
        lines += [
            f"{len(rows)} classes: see [{md_path.name}]({md_path.name}) "
            f"and [{csv_path.name}]({csv_path.name}).",
            "",
        ]
    return lines, files


def _run_summary(run: Run) -> dict[str, Any]:
    last = run.last_test() or {}
    keep = (
        "step",
        "epoch",
        "top1",
        "top5",
        "balanced_top1",
        "many_shot",
        "medium_shot",
        "few_shot",
        "mean_feature_norm",
    )
    best = run.best_test()
    return {
        "name": run.name,
        "path": str(run.path),
        "finished": run.final is not None,
        "seed": run.config.get("seed"),
        "method": method_name(run.config),
        "dataset": dataset_name(run.config),
        "last": {k: last.get(k) for k in keep} if last else None,
        "best_on_minival": {k: best.get(k) for k in keep} if best else None,
        "best_step": run.final.get("best_step") if run.final else None,
    }


def _check_args(
    run_dirs: Sequence[Any],
    dpi: float,
    figsize: Sequence[float],
    max_inline: int,
    classes: Sequence[int] | None,
) -> None:
    if isinstance(run_dirs, (str, pathlib.Path)) or not run_dirs:
        raise ValueError(f"run_dirs must be a non-empty list of directories, got {run_dirs!r}")
    if not dpi > 0:
        raise ValueError(f"dpi must be positive, got {dpi!r}; e.g. 100 (8×5 in → 800×500 px)")
    if len(figsize) != 2 or not all(v > 0 for v in figsize):
        raise ValueError(f"figsize must be two positive inches (width, height), got {figsize!r}")
    if max_inline < 0:
        raise ValueError(f"max_inline_classes must be >= 0, got {max_inline!r}")
    if classes is not None and (not classes or any(c < 0 for c in classes)):
        raise ValueError(f"classes must be non-empty non-negative class ids, got {classes!r}")


def make_report(
    run_dirs: Sequence[str | pathlib.Path],
    out_dir: str | pathlib.Path,
    *,
    classes: Sequence[int] | None = None,
    dpi: float = DEFAULT_DPI,
    figsize: Sequence[float] = DEFAULT_FIGSIZE,
    max_inline_classes: int = DEFAULT_MAX_INLINE_CLASSES,
    ignore_keys: Sequence[str] = DEFAULT_IGNORE_KEYS,
) -> Report:
    """Read the runs and write summary.md, summary.json, per-class files and PNG figures.

    `classes` picks the class ids for the feature-norm-over-epochs figure (default: the two
    most and two least frequent of each run). Raises NoReadableRunError if no run was read.
    """
    _check_args(run_dirs, dpi, figsize, max_inline_classes, classes)
    from fbl_jax import report_plots  # matplotlib only when there is something to plot

    paths = [pathlib.Path(p) for p in run_dirs]
    runs: list[Run] = []
    problems: list[tuple[str, str]] = []
    for path, name in zip(paths, _unique_names(paths)):
        run, msgs = load_run(path, name)
        problems += [(name, m) for m in msgs]
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
                    f"ids are 0..{run.num_classes - 1}"
                )
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    settings = aggregate_settings(runs, ignore_keys)
    for s in settings:
        seeds = [x for x in s["seeds"] if x is not None]
        if len(set(map(str, seeds))) != len(seeds):
            problems.append((", ".join(s["runs"]), f"same seed used twice in one setting: {seeds}"))
    figures = report_plots.plot_all(runs, out, classes=classes, dpi=dpi, figsize=tuple(figsize))
    files = list(figures)

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
    md += ["", "## Per-class accuracy", ""]
    for run in runs:
        lines, written = per_class_section(run, out, max_inline_classes)
        md += lines
        files += written
    md += ["## Figures", ""]
    md += [f"![{p.stem}]({p.name})" for p in figures] + [""]
    md += ["## Problems", ""]
    md += [f"- **{run}**: {msg}" for run, msg in problems] or ["None."]
    (out / "summary.md").write_text("\n".join(md) + "\n", encoding="utf-8")

    summary = {
        "units": "accuracies are fractions in [0, 1]; std is the sample std (ddof=1)",
        "settings": settings,
        "runs": [_run_summary(r) for r in runs],
        "problems": [{"run": r, "message": m} for r, m in problems],
        "figures": [p.name for p in figures],
    }
    (out / "summary.json").write_text(
        json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8"
    )
    files += [out / "summary.md", out / "summary.json"]
    return Report(out, runs, summary, problems, files)


def _parse_classes(text: str) -> list[int]:
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--classes={text!r}: give comma-separated class ids, e.g. 0,1,8,9"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fbl-report", description=__doc__.split("\n")[0])
    p.add_argument("run_dirs", nargs="+", help="training run directories (fbl-train workdirs)")
    p.add_argument("--out", required=True, help="output directory for summary.md and figures")
    p.add_argument("--dpi", type=float, default=DEFAULT_DPI, help="figure resolution")
    p.add_argument(
        "--figsize",
        type=float,
        nargs=2,
        default=DEFAULT_FIGSIZE,
        metavar=("W", "H"),
        help="figure size in inches",
    )
    p.add_argument(
        "--classes",
        type=_parse_classes,
        default=None,
        help="class ids for the feature-norm-over-epochs figure, e.g. 0,1,8,9 "
        "(default: the 2 most and 2 least frequent)",
    )
    p.add_argument(
        "--max-inline-classes",
        type=int,
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI body; returns the exit status (1 only when no run could be read)."""
    args = build_parser().parse_args(argv)
    ignore = tuple(args.ignore_key) if args.ignore_key else DEFAULT_IGNORE_KEYS
    try:
        report = make_report(
            args.run_dirs,
            args.out,
            classes=args.classes,
            dpi=args.dpi,
            figsize=args.figsize,
            max_inline_classes=args.max_inline_classes,
            ignore_keys=ignore,
        )
    except NoReadableRunError as e:
        print(f"fbl-report: error: {e}", file=sys.stderr)
        return 1
    for run, msg in report.problems:
        print(f"fbl-report: problem: {run}: {msg}", file=sys.stderr)
    print(f"fbl-report: wrote {report.out_dir / 'summary.md'} ({len(report.runs)} runs)")
    return 0


def run() -> None:
    """Console-script entry point (fbl-report)."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    run()
