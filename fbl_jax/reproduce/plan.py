"""What reproducing the paper takes: stages of fbl-sweep programs and fbl-decouple runs.

A stage is one sweep (its `--set` product, which `train_sweep` groups into as few compiled
programs as the devices allow) or one decoupling method applied to every CE run of a Table 2
stage. Stages are listed in priority order: Table 2 at IF 100 first (the paper's headline),
then Table 4's curricula and the A ablation, then IF 50, dataset by dataset. Tables 5/6 (per
class) and Fig. 2 (feature norms) are read from the Table 2 runs by the report.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any

from fbl_jax.defaults import ConfigError, config_from_file
from fbl_jax.train.programs import set_field

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
PLANS = ("paper", "tiny")
DATASETS = {  # plan dataset → (config file, folder under --data-root, imbalance factors)
    "cifar10_lt": ("cifar10_lt.py", "cifar10", (100, 50)),
    "cifar100_lt": ("cifar100_lt.py", "cifar100", (100, 50)),
    "digits_lt": ("demo.py", None, (10,)),
}
TABLES = ("2", "4", "5")
CURRICULA = ("parabolic", "linear", "sine", "cosine", "linear_decrease")
A_VALUES = (15.0, 30.0, 120.0)  # 60 is the Table 2 FBL run
PAPER_FORM = {
    "loss.fbl_form": "paper",
    "loss.fbl_scale": 1.0,
    "loss.curriculum": "parabolic",
    "loss.alpha_per_epoch": False,
}
# The tiny plan: the demo's digits, ResNet-8, two short epochs (also the tests' tiny runs).
TINY = {
    "num_epochs": 2,
    "eval_every_epochs": 1,
    "checkpoint_every_epochs": 1,
    "log_every_steps": 5,
    # one compiled step per loss setting: compiling dominates tiny runs (the 4-step default
    # dispatch is compared with single steps in tests/test_steps_per_call.py)
    "steps_per_call": 1,
    "model.name": "resnet8",
    "optimizer.warmup_epochs": 0.5,
    "optimizer.decay_epochs": (1,),
    "optimizer.decay_multipliers": (0.1,),
    "loss.curriculum_offset": 0.5,
    "loss.drw_start_epoch": 1,
}


@dataclasses.dataclass
class Stage:
    name: str  # also its folder under OUT/runs/
    dataset: str
    imbalance: int
    table: str  # "2", "4" or "A" (the scale ablation)
    base: dict[str, Any]  # config file and overrides every run of the stage shares
    sets: list[tuple[str, list[Any]]] = dataclasses.field(default_factory=list)
    rows: dict[str, str] = dataclasses.field(default_factory=dict)  # run name → table row
    decouple: str = ""  # a decoupling method applied to `source`'s CE runs
    source: str = ""

    def config(self) -> Any:
        config = config_from_file(CONFIGS / self.base["file"])
        for key, value in self.base["overrides"].items():
            set_field(config, key, value)
        return config


def plan_record(plan: str, stages: list[Stage]) -> dict[str, Any]:
    """What OUT/plan.json keeps: the plan's name and every stage whole, so that the stages can be
    rebuilt from OUT alone (`fbl-reproduce export` writes the report of what it exports)."""
    return {"plan": plan, "stages": [dataclasses.asdict(s) for s in stages]}


def stages_from_record(record: dict[str, Any]) -> list[Stage] | None:
    """The stages of a plan.json; None for one written before stages were kept whole."""
    fields = {f.name for f in dataclasses.fields(Stage)}
    stages = record.get("stages") or []
    if not stages or any(set(s) != fields for s in stages):
        return None
    out = []
    for s in stages:  # JSON gave lists where the plan had tuples
        overrides = {k: tuple(v) if isinstance(v, list) else v
                     for k, v in s["base"]["overrides"].items()}  # fmt: skip
        base = {**s["base"], "overrides": overrides}
        sets = [(key, list(values)) for key, values in s["sets"]]
        out.append(Stage(**{**s, "base": base, "sets": sets}))
    return out


def parse_list(text: str, choices: Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in choices]
    if bad or not items:
        raise ConfigError(f"--{what}={text!r}: choose from {', '.join(choices)}")
    return items


def build_plan(
    plan: str,
    datasets: Sequence[str],
    tables: Sequence[str],
    seeds: int,
    data_overrides: dict[str, dict[str, Any]],
) -> list[Stage]:
    """The stages in priority order; `data_overrides[dataset]` points a config at its data."""
    if plan not in PLANS:
        raise ConfigError(f"--plan={plan!r}: choose from {', '.join(PLANS)}")
    if seeds < 1:
        raise ConfigError(f"--seeds={seeds}: give at least 1")
    seed_set = ("seed", list(range(seeds)))
    first, later = [], []
    for dataset in datasets:
        file, _, factors = DATASETS[dataset]
        for imbalance in factors:
            overrides = dict(TINY) if plan == "tiny" else {}
            overrides.update(data_overrides.get(dataset, {}))
            if plan != "tiny":
                overrides["data.imbalance_factor"] = imbalance
            base = {"file": file, "overrides": overrides}
            stages = _dataset_stages(dataset, imbalance, tables, base, seed_set, plan)
            (first if imbalance == factors[0] else later).extend(stages)
    return first + later


def _dataset_stages(dataset, imbalance, tables, base, seed_set, plan) -> list[Stage]:
    tag = f"{dataset}_if{imbalance}"

    def stage(name, table, sets, rows, extra=None, file=None) -> Stage:
        b = {"file": file or base["file"], "overrides": {**base["overrides"], **(extra or {})}}
        return Stage(f"{tag}_{name}", dataset, imbalance, table, b, [seed_set, *sets], rows)

    out: list[Stage] = []
    if "2" in tables or "5" in tables:
        names = ["ce", "fbl", "la", "balanced_softmax"]
        out.append(stage("table2", "2", [("loss.name", names)], {n: n for n in names}))
        out.append(stage("table2_paper_form", "2", [], {"": "fbl_paper_form"}, PAPER_FORM))
        out.append(
            stage(
                "table2_ldam_drw", "2", [], {"": "ldam_drw"},
                {"loss.name": "ldam_drw", "model.head": "cosine"},
            )
        )  # fmt: skip
        for method in ("tau_norm", "crt"):
            out.append(
                Stage(f"{tag}_table2_ce_{method}", dataset, imbalance, "2", base, [seed_set],
                      {"": f"ce_{method}"}, decouple=method, source=f"{tag}_table2")
            )  # fmt: skip
        if plan == "paper":
            bbn = base["file"].replace(".py", "_bbn.py")
            out.append(stage("table2_bbn", "2", [], {"": "bbn"}, file=bbn))
    if "4" in tables and imbalance in (100, 10):
        curricula = ("loss.curriculum", list(CURRICULA))
        rows = {c: c for c in CURRICULA}  # the authors' form (A, λ/max λ), α(t) varied
        out.append(stage("table4", "4", [curricula], rows, {"loss.alpha_per_epoch": False}))
        scales = ("loss.fbl_scale", list(A_VALUES))
        out.append(stage("a_ablation", "A", [scales], {f"A={a:g}": f"A={a:g}" for a in A_VALUES}))
    return out


def row_of(stage: Stage, settings: dict[str, Any]) -> str:
    """The table row a run of `stage` fills, from its --set values (seed aside)."""
    if stage.table == "A":
        return f"A={float(settings['loss.fbl_scale']):g}"
    for key in ("loss.name", "loss.curriculum"):
        if key in settings:
            return stage.rows[str(settings[key])]
    return stage.rows[""]


def stage_methods(stage: Stage) -> list[str]:
    """The table rows (methods, curricula, A values) a stage fills."""
    return list(stage.rows.values())


def select_methods(stages: Sequence[Stage], methods: Sequence[str]) -> list[Stage]:
    """The stages cut to the rows in `methods` (e.g. ce,fbl): a sweep stage keeps the values
    of its row-naming --set that give those rows; a stage with none of them is dropped."""
    known = list(dict.fromkeys(m for s in stages for m in stage_methods(s)))
    bad = [m for m in methods if m not in known]
    if bad:
        raise ConfigError(f"--methods: {', '.join(bad)} not in the plan; choose from "
                          f"{', '.join(known)}")  # fmt: skip
    out = []
    for stage in stages:
        keep = {key: row for key, row in stage.rows.items() if row in methods}
        if not keep:
            continue
        if len(keep) < len(stage.rows):
            stage = dataclasses.replace(stage, rows=keep, sets=_cut_sets(stage, keep))
        out.append(stage)
    return out


def _cut_sets(stage: Stage, rows: dict[str, str]) -> list[tuple[str, list[Any]]]:
    sets = []
    for key, values in stage.sets:
        if key in ("loss.name", "loss.curriculum"):
            values = [v for v in values if str(v) in rows]
        elif key == "loss.fbl_scale":
            values = [v for v in values if f"A={float(v):g}" in rows]
        sets.append((key, values))
    return sets
