"""The paper's numbers beside ours: each table row as paper | mean ± std over seeds (n) | Δ."""

from __future__ import annotations

import json
import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

from fbl_jax.decimals import fixed, signed
from fbl_jax.reproduce.plan import Stage, row_of
from fbl_jax.train.run_setup import read_final_record, read_records

PAPER_FILE = pathlib.Path(__file__).with_name("paper_numbers.json")
ROW_LABELS = {
    "ce": "CE",
    "fbl": "FBL (authors' form)",
    "fbl_paper_form": "FBL (paper form)",
    "la": "Logit adjustment",
    "balanced_softmax": "Balanced softmax",
    "ldam_drw": "LDAM-DRW",
    "ce_tau_norm": "CE + τ-norm",
    "ce_crt": "CE + cRT",
    "bbn": "BBN",
    "decoupling": "Decoupling (Kang et al.)",  # Table 3; the paper names no classifier
    "parabolic": "α(t) = (t/T)² (parabolic)",  # Table 4's curricula
    "linear": "α(t) = t/T (linear)",
    "sine": "α(t) = sin(π/2 · t/T) (sine)",
    "cosine": "α(t) = 1 − cos(π/2 · t/T) (cosine)",
    "linear_decrease": "α(t) = 1 − t/T (linear decrease)",
}
PAPER_ROW = {"fbl_paper_form": "fbl"}  # the paper's FBL number is compared with both forms
TABLE_TITLES = {"2": "Table 2", "4": "Table 4 (α(t) curricula)", "A": "Scale A (ablation)"}


def paper_numbers() -> dict[str, Any]:
    return json.loads(PAPER_FILE.read_text())


# Rows whose paper number comes from the method's own recipe, while ours runs FBL's protocol.
PROTOCOL_NOTES = {
    "la": "paper: LA's own recipe (1,241 epochs); ours: FBL's protocol",
    "ldam_drw": "paper: LDAM-DRW's recipe (batch 128); ours: FBL's protocol (batch 64)",
}
# The three numbers a run gives: our headline, our honest selection, the authors' protocol.
SELECTIONS = ("last", "best_on_minival", "best_test_epoch")


def run_selections(run_dir: pathlib.Path) -> dict[str, float] | None:
    """A finished run's test top-1 (%): at the last epoch, at the epoch best on the minival,
    and the best over every test evaluation (the authors' "Best Prec@1": a test-set selection);
    None for an unfinished or failed run."""
    final = read_final_record(run_dir)
    if not final or not final.get("last") or final.get("failed"):
        return None
    tests = [r["top1"] for r in read_records(run_dir, "eval") if r.get("split") == "test"]
    best = final.get("best_on_minival") or {}
    return {
        "last": 100 * final["last"]["top1"],
        "best_on_minival": 100 * best["top1"] if best else None,
        "best_test_epoch": 100 * max(tests) if tests else None,
    }


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def collect(stages: Sequence[Stage], runs_of) -> list[dict[str, Any]]:
    """One row per (dataset, IF, table, method): each selection's test top-1 over seeds."""
    paper = paper_numbers()["top1"]
    rows: dict[tuple, dict[str, Any]] = {}
    for stage in stages:
        for _, settings, run_dir in runs_of(stage):
            row = "ce_" + stage.decouple if stage.decouple else row_of(stage, settings)
            key = (stage.dataset, stage.imbalance, stage.table, row)
            entry = rows.setdefault(key, {"dataset": stage.dataset, "imbalance": stage.imbalance,
                                          "table": stage.table, "row": row, "ours": [],
                                          "runs": {k: [] for k in SELECTIONS}})  # fmt: skip
            picked = run_selections(run_dir)
            for k in SELECTIONS if picked else ():
                if picked[k] is not None:
                    entry["runs"][k].append(picked[k])
            if picked:
                entry["ours"].append(picked["last"])
    out = []
    for (dataset, imbalance, _, row), entry in rows.items():
        entry["paper"] = paper.get(dataset, {}).get(str(imbalance), {}).get(PAPER_ROW.get(row, row))
        entry.update(_summary(entry["ours"]))  # the headline: the last epoch
        entry["selections"] = {k: _summary(v) for k, v in entry.pop("runs").items()}
        has_both = entry["paper"] is not None and entry["mean"] is not None
        entry["delta"] = entry["mean"] - entry["paper"] if has_both else None
        entry["note"] = PROTOCOL_NOTES.get(row, "")
        out.append(entry)
    return out


def collect_per_class(stages: Sequence[Stage], runs_of) -> list[dict[str, Any]]:
    """Beside the paper's Tables 5/6: per class, the paper's CE and FBL test top-1 and ours at
    the last epoch (mean over the finished seeds), for each Table 2 stage the paper covers."""
    paper = paper_numbers().get("per_class", {})
    out = []
    for stage in stages:
        table = paper.get("top1", {}).get(stage.dataset, {}).get(str(stage.imbalance))
        if stage.table != "2" or stage.decouple or not table:
            continue
        classes = paper["classes"][stage.dataset]
        ours: dict[str, list[list[float]]] = {}
        for _, settings, run_dir in runs_of(stage):
            row = row_of(stage, settings)
            final = read_final_record(run_dir)
            if row in table and final and final.get("last") and not final.get("failed"):
                acc = final["last"]["per_class_accuracy"]
                ours.setdefault(row, []).append([100 * acc[c] for c in classes])
        out.append({
            "dataset": stage.dataset, "imbalance": stage.imbalance,
            "class_names": paper["class_names"][stage.dataset], "paper": table,
            "ours": {row: [statistics.fmean(col) for col in zip(*runs)]
                     for row, runs in ours.items()},
            "n": {row: len(runs) for row, runs in ours.items()},
        })  # fmt: skip
    return out


def _per_class_lines(tables: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for t in tables:
        rows = list(t["paper"])
        head = " | ".join(
            f"paper {ROW_LABELS.get(r, r)} | ours (n={t['n'].get(r, 0)})" for r in rows
        )
        lines += [f"## {t['dataset']}, IF {t['imbalance']}: per class (the paper's Table 5/6)", "",
                  "Test top-1 (%) at the last epoch, ours the mean over seeds; class 0 is the "
                  "most frequent.", "", f"| class | {head} |",
                  "|---|" + "---|---|" * len(rows)]  # fmt: skip
        for i, name in enumerate(t["class_names"]):
            cells = []
            for r in rows:
                mine = t["ours"].get(r)
                cells += [fixed(t["paper"][r][i], 1), "—" if mine is None else fixed(mine[i], 1)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _cell(summary: dict[str, Any], paper: float | None) -> str:
    if summary["mean"] is None:
        return "not run yet"
    std = "" if summary["std"] is None else f" ± {fixed(summary['std'], 2)}"
    delta = "" if paper is None else f" ({signed(summary['mean'] - paper, 2)})"
    return f"{fixed(summary['mean'], 2)}{std}{delta}"


def write(
    entries: list[dict[str, Any]],
    out_dir: pathlib.Path,
    stage_times: dict[str, dict[str, Any]] | None = None,
    notes: Sequence[str] = (),
    per_class: Sequence[dict[str, Any]] = (),
) -> pathlib.Path:
    """paper_comparison.md (a table per dataset, IF and table; each stage's time beside its
    estimate) and paper_comparison.json; `notes` (reproduce/notes.py) are paragraphs above the
    tables; `per_class` (collect_per_class) the per-class tables after them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# The paper's numbers beside ours", "",
             f"Paper: {paper_numbers()['source']}", "",
             "Ours: test top-1 (%), mean ± sample std over n seeds, (Δ to the paper). Three "
             "selections of a run's epoch: the **last** epoch (our headline); the epoch **best "
             "on the minival** (a balanced held-out set carved from unused training images: "
             "our honest selection); the **best test epoch** (the authors' code, like "
             "LDAM-DRW's and BBN's, evaluates the test set every epoch and reports the best: a "
             "selection on the test set, most likely what the paper's tables report).", ""]  # fmt: skip
    lines += [line for note in notes for line in (f"**Note.** {note}", "")]
    groups: dict[tuple, list] = {}
    for e in entries:
        groups.setdefault((e["dataset"], e["imbalance"], e["table"]), []).append(e)
    for (dataset, imbalance, table), group in groups.items():
        lines += [f"## {dataset}, IF {imbalance}: {TABLE_TITLES.get(table, table)}", "",
                  "| method | paper | n | last epoch | best on minival | best test epoch "
                  "(test-set selection) |", "|---|---|---|---|---|---|"]  # fmt: skip
        for e in group:
            paper = "—" if e["paper"] is None else f"{e['paper']:.2f}"
            if e["note"]:
                paper += f" ({e['note']})"
            cells = [_cell(e["selections"][k], e["paper"]) for k in SELECTIONS]
            label = ROW_LABELS.get(e["row"], e["row"])
            lines.append(f"| {label} | {paper} | {e['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _per_class_lines(per_class)
    if stage_times:
        lines += _time_lines(stage_times)
    path = out_dir / "paper_comparison.md"
    path.write_text("\n".join(lines))
    (out_dir / "paper_comparison.json").write_text(json.dumps(entries, indent=1) + "\n")
    return path


def _time_lines(stage_times: dict[str, dict[str, Any]]) -> list[str]:
    """Each stage's measured wall time by machine beside the dry run's estimate; 'at this pace'
    scales the time so far by the share of the stage's steps saved, 'CPU floor' the CPU time."""
    lines = ["## Time", "",
             "Wall time of fbl-reproduce's calls on each stage, by machine, beside the dry run's "
             "estimate for the whole stage (on the machine named). *At this pace*: the time so far "
             "÷ the share of the stage's training steps saved; comparable with the estimate where "
             "one machine did the work with nothing else running on it. *CPU floor*: the CPU "
             "seconds the runs' processes took per step so far, times the stage's steps, ÷ the "
             "machine's cores: the whole stage with the machine to itself and every core busy "
             "(pauses and other load are not in CPU time), a floor under the wall time; on a "
             "shared or paused machine, the figure to hold against the estimate.", "",
             "| stage | status | steps saved | estimated (dry run) | measured so far | at this "
             "pace | CPU floor | machines (calls) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, t in stage_times.items():
        est = "—" if t.get("estimate_s") is None else _hours(t["estimate_s"])
        if t.get("estimate_host"):
            est += f" ({t['estimate_host']})"
        seconds, progress = t.get("seconds", 0.0), t.get("progress")
        done = "—" if progress is None else f"{100 * progress:.1f} %"
        pace = _hours(seconds / progress) if progress else "—"
        floor = "—" if t.get("cpu_floor_s") is None else _hours(t["cpu_floor_s"])
        machines: dict[str, list[float]] = {}
        for stretch in t.get("stretches", []):
            machines.setdefault(stretch.get("host") or "not recorded", []).append(
                stretch["seconds"]
            )
        where = "; ".join(f"{m}: {_hours(sum(v))} ({len(v)})" for m, v in machines.items()) or "—"
        lines.append(f"| {name} | {t.get('status', 'not started')} | {done} | {est} | "
                     f"{_hours(seconds)} | {pace} | {floor} | {where} |")  # fmt: skip
    return [*lines, ""]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"
