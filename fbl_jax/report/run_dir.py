"""The run directory that fbl-train and fbl-decouple write, as fbl-report reads it.

A run directory holds config.json, class_counts.json and metrics.jsonl (one JSON record a line,
`type` in train/eval/final). `load_run` parses one into a `Run` and says, in words, what it could
not read instead of raising, so a report over many runs lists the broken ones and goes on.
Standard library only: reading runs needs neither NumPy nor matplotlib.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

from fbl_jax.timing_file import read_stretches

RUN_FILES = ("config.json", "class_counts.json", "metrics.jsonl")
RECORD_TYPES = ("train", "eval", "final")
# What fbl-sweep writes beside its run directories (`fbl-report runs/sweep/*` names them too).
SWEEP_FILES = re.compile(r"sweep\.json|timing_.*\.json(\.tmp)?")  # .tmp: a write cut short


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
    stretches: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # timing.json
    # Set by merge_settings: the merged name is then the run's legend label, and this many seeds
    # were averaged into it.
    num_seeds: int | None = None

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


def _read_json(path: pathlib.Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_records(path: pathlib.Path) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """metrics.jsonl's records by type; unreadable lines become problem messages."""
    records: dict[str, list[dict[str, Any]]] = {k: [] for k in RECORD_TYPES}
    problems: list[str] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                problems.append(f"metrics.jsonl line {i} is not valid JSON (truncated?); skipped")
                continue
            kind = rec.get("type") if isinstance(rec, dict) else None
            if kind == "failed":  # fbl-sweep stopped this run (its loss went non-finite)
                problems.append(
                    f"the run was stopped at step {rec.get('step')}: {rec.get('reason')}"
                )
                continue
            if kind not in records:
                problems.append(f"metrics.jsonl line {i} has unknown type {kind!r}; skipped")
                continue
            records[kind].append(rec)
    return records, problems


def load_run(path: str | pathlib.Path, name: str) -> tuple[Run | None, list[str]]:
    """Parse one run directory; returns (run or None if unreadable, problem messages)."""
    path = pathlib.Path(path)
    if not path.is_dir():
        return None, [f"{path} is not a directory"]
    missing = [f for f in RUN_FILES if not (path / f).is_file()]
    if missing:
        return None, [f"missing {', '.join(missing)} in {path}; run skipped"]
    try:
        config = _read_json(path / "config.json")
        counts_file = _read_json(path / "class_counts.json")
        records, problems = _read_records(path / "metrics.jsonl")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, [f"cannot read {path}: {e}; run skipped"]
    if not isinstance(config, dict):
        return None, [f"config.json in {path} is not a JSON object; run skipped"]
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
        read_stretches(path / "timing.json"),
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


def expand_run_paths(
    paths: Sequence[str | pathlib.Path],
) -> tuple[list[pathlib.Path], list[tuple[str, str]]]:
    """The run directories `paths` name, each once, and (name, problem) pairs.

    A sweep folder (fbl-sweep's --workdir: sweep.json and a run directory per setting) stands
    for its runs, in sweep.json's order; a sweep's own files (sweep.json, timing_*.json, as
    `runs/sweep/*` lists them) are skipped. A directory named twice, or by two paths (a link,
    `a/../a`, a sweep folder and one of its runs), is one run: kept where it first appears."""
    out: list[pathlib.Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[object] = set()
    for path in map(pathlib.Path, paths):
        if SWEEP_FILES.fullmatch(path.name) and path.is_file():
            continue
        members = [path]
        if path.is_dir() and (path / "sweep.json").is_file() and not (path / RUN_FILES[0]).exists():
            members, missing = _sweep_members(path)
            problems += [(f"{path.name}/{name}", "listed in sweep.json, no run directory yet "
                          "(not started)") for name in missing]  # fmt: skip
        for member in members:
            key = _identity(member)
            if key not in seen:
                seen.add(key)
                out.append(member)
    if not out and not problems:
        problems.append(("(arguments)", "only a sweep's own files (sweep.json, timing_*.json): "
                         "give its folder or its run directories"))  # fmt: skip
    return out, problems


def _sweep_members(folder: pathlib.Path) -> tuple[list[pathlib.Path], list[str]]:
    """(run directories, names of runs not started) of a sweep folder."""
    try:
        names = [r["name"] for r in _read_json(folder / "sweep.json")["runs"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        names = []
    if not names:  # unreadable sweep.json: its subdirectories that hold a run
        return sorted(d for d in folder.iterdir() if (d / RUN_FILES[0]).is_file()), []
    found = [folder / n for n in names if (folder / n).is_dir()]
    return found, [n for n in names if not (folder / n).is_dir()]


def _identity(path: pathlib.Path) -> object:
    """The same directory whatever the path to it: (device, inode), else the resolved path."""
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return str(path.resolve())


def same_run_key(run: Run) -> str | None:
    """Equal for copies of one finished run (same config, seed included, and same final record):
    one run, not two seeds."""
    if run.final is None:
        return None
    return json.dumps([run.config, run.final], sort_keys=True, default=str)


def unique_names(paths: Sequence[pathlib.Path]) -> list[str]:
    """Directory base names, with '-2', '-3' … added where two runs share one."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        base = p.resolve().name or str(p)
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


# Greek letters of method labels (α(t), τ, γ …) spelled out in file names.
GREEK = {"α": "alpha", "β": "beta", "γ": "gamma", "λ": "lambda", "τ": "tau", "Δ": "delta"}


def safe_filename(name: str) -> str:
    """A run or method name usable in file names (per_class_<run>.md, confusion_<run>.png)."""
    for letter, word in GREEK.items():
        name = name.replace(letter, word)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as one dict keyed by dotted paths ('loss.name')."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
