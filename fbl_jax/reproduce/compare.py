"""The paper's numbers beside ours: each table row as paper | mean ± std over seeds (n) | Δ."""

from __future__ import annotations

import json
import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

from fbl_jax.reproduce.plan import Stage, row_of
from fbl_jax.train.run_setup import read_final_record

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
}
PAPER_ROW = {"fbl_paper_form": "fbl"}  # the paper's FBL number is compared with both forms
TABLE_TITLES = {"2": "Table 2", "4": "Table 4 (α(t) curricula)", "A": "Scale A (ablation)"}


def paper_numbers() -> dict[str, Any]:
    return json.loads(PAPER_FILE.read_text())


def collect(stages: Sequence[Stage], runs_of) -> list[dict[str, Any]]:
    """One row per (dataset, IF, table, method): our last-epoch test top-1 per seed."""
    paper = paper_numbers()["top1"]
    rows: dict[tuple, dict[str, Any]] = {}
    for stage in stages:
        for _, settings, run_dir in runs_of(stage):
            final = read_final_record(run_dir)
            row = "ce_" + stage.decouple if stage.decouple else row_of(stage, settings)
            key = (stage.dataset, stage.imbalance, stage.table, row)
            entry = rows.setdefault(key, {"dataset": stage.dataset, "imbalance": stage.imbalance,
                                          "table": stage.table, "row": row, "ours": []})  # fmt: skip
            if final and final.get("last") and not final.get("failed"):
                entry["ours"].append(100 * final["last"]["top1"])
    out = []
    for (dataset, imbalance, _, row), entry in rows.items():
        ours = entry["ours"]
        entry["paper"] = paper.get(dataset, {}).get(str(imbalance), {}).get(PAPER_ROW.get(row, row))
        entry["mean"] = statistics.fmean(ours) if ours else None
        entry["std"] = statistics.stdev(ours) if len(ours) > 1 else None
        entry["n"] = len(ours)
        has_both = entry["paper"] is not None and entry["mean"] is not None
        entry["delta"] = entry["mean"] - entry["paper"] if has_both else None
        out.append(entry)
    return out


def _fmt(entry: dict[str, Any]) -> tuple[str, str, str]:
    paper = "—" if entry["paper"] is None else f"{entry['paper']:.2f}"
    if entry["mean"] is None:
        return paper, "not run yet", "—"
    std = "" if entry["std"] is None else f" ± {entry['std']:.2f}"
    ours = f"{entry['mean']:.2f}{std} (n={entry['n']})"
    delta = "—" if entry["delta"] is None else f"{entry['delta']:+.2f}"
    return paper, ours, delta


def write(
    entries: list[dict[str, Any]], out_dir: pathlib.Path, notes: Sequence[str] = ()
) -> pathlib.Path:
    """paper_comparison.md (a table per dataset, IF and table) and paper_comparison.json;
    `notes` (reproduce/notes.py) are paragraphs above the tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# The paper's numbers beside ours", "",
             f"Paper: {paper_numbers()['source']}", "",
             "Ours: test top-1 (%) at the last epoch, mean ± sample std over seeds (n seeds).", ""]  # fmt: skip
    lines += [line for note in notes for line in (f"**Note.** {note}", "")]
    groups: dict[tuple, list] = {}
    for e in entries:
        groups.setdefault((e["dataset"], e["imbalance"], e["table"]), []).append(e)
    for (dataset, imbalance, table), group in groups.items():
        lines += [f"## {dataset}, IF {imbalance}: {TABLE_TITLES.get(table, table)}", "",
                  "| method | paper | ours | Δ |", "|---|---|---|---|"]  # fmt: skip
        for e in group:
            lines.append(f"| {ROW_LABELS.get(e['row'], e['row'])} | " + " | ".join(_fmt(e)) + " |")
        lines.append("")
    path = out_dir / "paper_comparison.md"
    path.write_text("\n".join(lines))
    (out_dir / "paper_comparison.json").write_text(json.dumps(entries, indent=1) + "\n")
    return path
