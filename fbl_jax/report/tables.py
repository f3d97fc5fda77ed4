"""fbl-report's numbers: seeds aggregated per setting, and the Markdown/CSV/JSON tables.

Runs whose config differs only in `ignore_keys` (seed, run name, workdir …) form one setting;
the results table shows each setting's mean ± sample std over its finished seeds, in the shape
of the paper's Tables 2/3. Run files hold fractions; the Markdown prints percentages.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import ml_collections

from fbl_jax import losses
from fbl_jax.decimals import fixed
from fbl_jax.defaults import BOOKKEEPING_KEYS
from fbl_jax.report.labels import dataset_name, method_name
from fbl_jax.report.run_dir import Run, flatten, safe_filename

# Config keys that name a run rather than define its setting (dotted paths); a decoupled run's
# source run and checkpoint path differ from seed to seed like its workdir. Bookkeeping fields
# (checkpoint and log cadence, dispatch …) change nothing a run computes.
DEFAULT_IGNORE_KEYS = (
    "seed",
    "run_name",
    "workdir",
    "decouple.from_run",
    "decouple.checkpoint_path",
    *BOOKKEEPING_KEYS,
)
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
PER_CLASS_HEADER = (
    "Rank",
    "Class id",
    "Class",
    "Train count",
    "Top-1 last (%)",
    "Top-1 best-on-minival (%)",
    "Feature norm (last)",
)
SHIFT_HEADER = "FBL shift at the end (logits)"


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
        flat = {k: v for k, v in flatten(run.config).items() if k not in ignore_keys}
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
    return "—" if x is None else fixed(100 * x, 2)


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


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table's lines; '|' in cells escaped, newlines flattened."""
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
    return md_table(header, rows)


def fbl_end_shift(run: Run) -> tuple[float, list[float | None]] | None:
    """(α at the last step, per class α·λ_j/‖f‖_j): the logits FBL's loss took from class j at
    the run's end, ‖f‖_j the class's mean test feature norm at the last evaluation. What sets
    FBL's head/tail balance; logit adjustment's loss shifts by τ·(log n_max − log n_j). None
    for a loss without an α(t) shift or a run without the records."""
    loss, alphas = run.config.get("loss"), [r["alpha"] for r in run.train if "alpha" in r]
    last = run.last_test() or {}
    norms = last.get("feature_norm_per_class")
    if not isinstance(loss, dict) or not alphas or norms is None:
        return None
    try:
        coefficients = losses.program_coefficients(
            ml_collections.ConfigDict(loss), run.counts, run.config["num_epochs"]
        )
    except (ValueError, KeyError, TypeError):  # a kind outside the shared formula, an old config
        return None
    if not coefficients["uses_alpha"]:
        return None
    alpha = float(alphas[-1])
    lam = coefficients["lam"]
    return alpha, [None if n is None else alpha * float(lam[c]) / n for c, n in enumerate(norms)]


def shift_as_tau(run: Run, shift: Sequence[float | None]) -> tuple[float, float] | None:
    """The range over classes of shift_j / (log n_max − log n_j): FBL's end shift read as logit
    adjustment's τ (the largest class, λ = 0, left out)."""
    top = math.log(max(run.counts))
    taus = [s / (top - math.log(n)) for s, n in zip(shift, run.counts)
            if s is not None and n < max(run.counts)]  # fmt: skip
    return (min(taus), max(taus)) if taus else None


def per_class_rows(run: Run) -> list[list[Any]]:
    """Rows (rank, id, name, train count, acc last %, acc best %, feature norm[, FBL shift]) by
    frequency."""
    last = run.last_test() or {}
    best = run.best_test() or {}
    end_shift = fbl_end_shift(run)

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
        if end_shift is not None:
            shift = end_shift[1][c]
            rows[-1].append("—" if shift is None else f"{shift:.2f}")
    return rows


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
    header = PER_CLASS_HEADER
    end_shift = fbl_end_shift(run)
    if end_shift is not None:
        header = (*header, SHIFT_HEADER)
        alpha, shift = end_shift
        line = (
            f"FBL shift at the end: α = {alpha:.4g} at the last step; class j's shift is "
            "α·λ_j/‖f‖_j, ‖f‖_j its mean test feature norm"
        )
        tau = shift_as_tau(run, shift)
        if tau is not None:
            line += (
                f"; read as logit adjustment's τ (shift / (log n_max − log n_j)): "
                f"{tau[0]:.2f}–{tau[1]:.2f}"
            )
        lines += [line + ".", ""]
    csv_path = out_dir / f"per_class_{safe_filename(run.name)}.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    files = [csv_path]
    table = md_table(header, rows)
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


def run_summary(run: Run) -> dict[str, Any]:
    """One run's entry in summary.json: identity, last and best-on-minival test metrics."""
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


def time_table(runs: Sequence[Run]) -> list[str]:
    """Markdown lines: each run's wall time by machine, from its timing.json stretches (a run
    stopped and resumed may have trained on several machines); empty if no run has any."""
    rows = []
    for run in runs:
        by_host: dict[str, list[dict[str, Any]]] = {}
        for stretch in run.stretches:
            by_host.setdefault(stretch.get("host") or "not recorded", []).append(stretch)
        batch = run.config.get("batch_size")
        for host, stretches in by_host.items():
            seconds = [s.get("seconds", {}) for s in stretches]
            wall = sum(sum(v.values()) for v in seconds)
            train = sum(v.get("train", 0.0) for v in seconds)
            steps = sum(s["last_step"] - s["first_step"] for s in stretches if "last_step" in s)
            rate = f"{steps * batch / train:.0f}" if batch and steps and train else "—"
            shared = " (shared)" if any(s.get("runs_in_process") for s in stretches) else ""
            cpu = [s["cpu_s"] for s in stretches if "cpu_s" in s]
            rows.append([method_name(run.config), run.config.get("seed"), host, len(stretches),
                         steps or "—", _duration(wall) + shared,
                         _duration(sum(cpu)) + shared if cpu else "—", rate])  # fmt: skip
    if not rows:
        return []
    header = ["Method", "Seed", "Machine", "Stretches", "Steps", "Wall time", "CPU time",
              "Train images/s"]  # fmt: skip
    return ["## Time", "",
            "Each run's wall time (compile, training, evaluation, checkpoints) by the machine it "
            "trained on, summed over its stretches (one per process that trained it: a run "
            "stopped and resumed may have run on several machines). *Shared*: the process "
            "trained other runs too, so they share these seconds. *CPU time*: the process's CPU "
            "seconds (all threads), which leave out pauses and, for a one-thread process, what "
            "other load on the machine took.", "",
            *md_table(header, rows), ""]  # fmt: skip


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"
