"""fbl-reproduce: the paper's tables from one command, on the hardware this machine has.

    fbl-reproduce --plan paper --data-root $HOME/data --out OUT [--datasets cifar10_lt,cifar100_lt]
                  [--tables 2,4,5] [--methods ce,fbl] [--seeds 3] [--budget 15m] [--dry-run]
    fbl-reproduce --plan tiny --out OUT          # the same machinery on demo-sized work
    fbl-reproduce pack ...                       # data as split lists for an offline host
    fbl-reproduce export --out OUT --to DEST     # finished runs without checkpoints, as results

--data-root holds the lossless image folders as cifar10/ and cifar100/ ($HOME/data/cifar10 from
`mkdir -p $HOME/data/cifar10 && tar -xzf cifar10-lossless.tar.gz -C $HOME/data/cifar10`, both
CIFAR-100 parts extracted into $HOME/data/cifar100) or their packed split lists
(`fbl-reproduce pack`). The plan is printed with the runs of each stage and
an estimate from a short timing probe on this machine; stages then run in priority order until
the budget is used (or a SIGTERM comes), leaving checkpoints: the same command resumes. The report
(OUT/report/: paper_comparison.md, fbl-report's tables and figures) is written at the end of
every call. docs/reproducing.md has the details.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import pathlib
import re
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

from fbl_jax.defaults import ConfigError

PROG = "fbl-reproduce"


def parse_budget(text: str) -> float:
    """'15m', '2h', '90s', '900' → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"--budget={text!r}: give a duration such as 15m, 2h, 90s or 900")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Subcommands: `fbl-reproduce pack --help` packs data for an offline host; "
        "`fbl-reproduce export --help` keeps the finished runs without their checkpoints.",
    )
    p.add_argument("--plan", default="paper", help="paper (CIFAR-LT, the paper's protocol) | tiny")
    p.add_argument("--out", required=True, help="output folder; the same one resumes")
    p.add_argument(
        "--data-root",
        default="",
        help="folder with cifar10/ and cifar100/, e.g. $HOME/data (plan paper)",
    )
    p.add_argument("--datasets", default="", help="comma-separated; default: the plan's all")
    p.add_argument(
        "--tables", default="2,4,5", help="2 (methods), 4 (curricula + A), 5 (per class)"
    )
    p.add_argument("--seeds", type=int, default=None, help="seeds per setting (paper 3, tiny 1)")
    p.add_argument("--budget", default="", help="stop (resumably) after this long: 15m, 2h, 900")
    p.add_argument("--only", default="", help="comma-separated stage names (see --dry-run)")
    p.add_argument(
        "--methods",
        default="",
        help="comma-separated table rows to train, e.g. ce,fbl (default: all of the tables')",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and its estimate, exit")
    p.add_argument(
        "--no-figures",
        dest="figures",
        action="store_false",
        help="the report's tables only (figures take most of its time); a later call without "
        "it draws them",
    )
    return p


# the archives of the project's shared data folder that fill each --data-root folder
_ARCHIVES = {
    "cifar10": "CIFAR-10 (cifar10-lossless.tar.gz)",
    "cifar100": "CIFAR-100, both parts (cifar100-lossless-part1.tar.gz, -part2.tar.gz)",
}


def _data_overrides(plan: str, datasets: Sequence[str], data_root: str, out: pathlib.Path):
    from fbl_jax.reproduce.plan import DATASETS

    if plan == "tiny":
        return {}
    if not data_root:
        raise ConfigError(
            "--plan paper needs --data-root DIR with cifar10/ and cifar100/ (e.g. $HOME/data)"
        )
    overrides = {}
    for dataset in datasets:
        folder = pathlib.Path(data_root) / DATASETS[dataset][1]
        if not folder.is_dir():
            archives = _ARCHIVES[DATASETS[dataset][1]]
            raise ConfigError(
                f"{folder} does not exist: extract the lossless {archives} into it (mkdir -p "
                f"{folder} && tar -xzf ARCHIVE -C {folder}; README, 'Training on CIFAR-LT'), or "
                "give --data-root a folder that `fbl-reproduce pack` wrote"
            )
        if _is_packed(folder):
            overrides[dataset] = {"packed": str(folder)}
        else:
            overrides[dataset] = {"data.root": str(folder), "data.cache_dir": str(out / "cache")}
    return overrides


def _is_packed(folder: pathlib.Path) -> bool:
    return any(folder.glob("*manifest*.json"))


def _packed_overrides(folder: str, imbalance: int) -> dict[str, Any]:
    from fbl_jax.reproduce.pack import data_flags

    out = {}
    for flag in data_flags(folder, imbalance):
        key, _, value = flag.removeprefix("--config.").partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _resolve_packed(stages) -> None:
    for stage in stages:
        packed = stage.base["overrides"].pop("packed", None)
        if packed:
            stage.base["overrides"].update(_packed_overrides(packed, stage.imbalance))


def _describe(stages, out: pathlib.Path) -> dict[str, float]:
    """Print the plan: runs, programs and an estimate per stage; returns the estimates."""
    from fbl_jax.reproduce.execute import count_programs, stage_runs
    from fbl_jax.reproduce.probe import estimate_stage

    total, lines, estimates = 0.0, [], {}
    for stage in stages:
        config = stage.config()
        spe, eval_images = _epoch_sizes(config)
        steps = config.num_epochs * spe
        if stage.decouple:
            runs, programs = len(stage_runs(stage, out)), 1
            seconds = runs * 10.0 if stage.decouple == "tau_norm" else runs * steps * 0.02
            estimate = seconds
        else:
            runs, programs = count_programs(stage)
            seeds = len(dict(stage.sets).get("seed", [config.seed]))
            estimate = estimate_stage(config, runs, seeds, programs, steps, eval_images, out)
        estimates[stage.name] = estimate
        total += estimate
        what = f"{stage.decouple} on the CE runs" if stage.decouple else f"{programs} program(s)"
        lines.append(f"  {stage.name:<42} {runs:>3} run(s)  {what:<24} ~{_human(estimate)}")
    print(f"plan: {len(stages)} stage(s), estimated {_human(total)} on this machine", flush=True)
    print("\n".join(lines), flush=True)
    return estimates


CIFAR_TEST_IMAGES = 10_000  # CIFAR-10 and CIFAR-100 alike


def _epoch_sizes(config: Any) -> tuple[int, int]:
    """(train steps per epoch, images one evaluation reads: test + minival)."""
    from fbl_jax.data.long_tail import long_tail_counts
    from fbl_jax.train.run_setup import load_data

    if config.data.source == "synthetic_digits":
        bundle = load_data(config)
        return bundle.steps_per_epoch, sum(bundle.eval_sizes.values())
    classes = config.data.num_classes
    n_max = config.data.get("n_max") or (5000 if classes == 10 else 500)
    train = sum(long_tail_counts(classes, n_max, config.data.imbalance_factor))
    minival = config.data.minival_per_class * classes
    return train // config.batch_size, CIFAR_TEST_IMAGES + minival


def _human(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def reproduce(args: argparse.Namespace) -> int:
    from fbl_jax.reproduce.execute import run_stages, stage_done
    from fbl_jax.reproduce.plan import (
        PLANS,
        TABLES,
        build_plan,
        parse_list,
        plan_record,
        select_methods,
    )

    out = pathlib.Path(args.out).absolute()
    parse_list(args.plan, PLANS, "plan")
    plan_datasets = ["digits_lt"] if args.plan == "tiny" else ["cifar10_lt", "cifar100_lt"]
    datasets = (
        parse_list(args.datasets, plan_datasets, "datasets") if args.datasets else plan_datasets
    )
    tables = parse_list(args.tables, TABLES, "tables")
    seeds = args.seeds if args.seeds is not None else (1 if args.plan == "tiny" else 3)
    budget = parse_budget(args.budget) if args.budget else float("inf")
    overrides = _data_overrides(args.plan, datasets, args.data_root, out)
    stages = build_plan(args.plan, datasets, tables, seeds, overrides)
    _resolve_packed(stages)
    if args.only:
        names = parse_list(args.only, [s.name for s in stages], "only")
        stages = [s for s in stages if s.name in names]
    if args.methods:
        stages = select_methods(stages, [m.strip() for m in args.methods.split(",") if m.strip()])
    out.mkdir(parents=True, exist_ok=True)
    record = plan_record(args.plan, stages)
    (out / "plan.json").write_text(json.dumps(record, indent=1, default=list) + "\n")
    estimates = _describe(stages, out)
    if args.dry_run:
        return 0
    state = run_stages(stages, out, time.time() + budget, estimates)
    done = sum(stage_done(s, out, state) for s in stages)
    path, notes = write_report(stages, out, state, estimates, args.plan, args.figures)
    for note in notes:
        print(textwrap.fill(f"note: {note}", 100, subsequent_indent="  "), flush=True)
    print(f"{done}/{len(stages)} stage(s) done; report: {path}", flush=True)
    if done < len(stages):
        print("rerun the same command to go on from the checkpoints", flush=True)
    return 0


def write_report(
    stages: list, out: pathlib.Path, state: dict, estimates: dict, plan: str, figures: bool
) -> tuple[pathlib.Path, list[str]]:
    """OUT/report afresh: fbl-report's tables (and figures) of the stages' runs, the comparison
    with the paper and the time table. Written beside it and swapped in, so no file of an
    earlier call (a figure of a run then unfinished) outlives it; returns (comparison, notes)."""
    from fbl_jax.reproduce import compare
    from fbl_jax.reproduce.execute import stage_cpu_floor, stage_progress, stage_runs
    from fbl_jax.reproduce.notes import same_formula_notes, tiny_plan_note

    report_dir, fresh = out / "report", out / "report.new"
    shutil.rmtree(fresh, ignore_errors=True)  # a call killed while writing it
    fresh.mkdir()
    run_dirs = [
        d for s in stages for _, _, d in stage_runs(s, out) if (d / "metrics.jsonl").exists()
    ]
    if run_dirs:
        from fbl_jax.report import make_report

        make_report(run_dirs, fresh, figures=figures)
    runs_of = functools.partial(stage_runs, out=out)
    notes = [tiny_plan_note()] if plan == "tiny" else []
    notes += same_formula_notes(stages, runs_of, compare.ROW_LABELS)
    times = {s.name: state.get(s.name, {"estimate_s": estimates.get(s.name)}) for s in stages}
    for s in stages:
        times[s.name]["progress"] = stage_progress(s, out)
        times[s.name]["cpu_floor_s"] = stage_cpu_floor(s, out)
    per_class = compare.collect_per_class(stages, runs_of)
    compare.write(compare.collect(stages, runs_of), fresh, times, notes, per_class)
    shutil.rmtree(report_dir, ignore_errors=True)
    fresh.rename(report_dir)
    return report_dir / "paper_comparison.md", notes


def _subcommand(name: str, argv: list[str]) -> tuple[argparse.ArgumentParser, Any, Any]:
    """`fbl-reproduce pack|export ...`: (parser, parsed arguments, the function to run)."""
    import importlib

    module = importlib.import_module(f"fbl_jax.reproduce.{name}")
    parser = argparse.ArgumentParser(
        prog=f"{PROG} {name}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    getattr(module, f"add_{name}_arguments")(parser)
    return parser, parser.parse_args(argv), getattr(module, name)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from fbl_jax.cli import cpu_flags, xla_cache
    from fbl_jax.cli.logs import setup_logging

    setup_logging()
    cpu_flags.apply_fast_cpu_flags()
    xla_cache.enable()
    if argv[:1] in (["pack"], ["export"]):
        parser, args, run = _subcommand(argv[0], argv[1:])
    else:
        parser = build_parser()
        args, run = parser.parse_args(argv), reproduce
    from fbl_jax.train.preemption import stop_scope

    try:
        with stop_scope():  # a SIGTERM in any phase: the stages stop, the report is written
            return run(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2


def run() -> None:
    """Console-script entry point."""
    from fbl_jax import hugepages

    hugepages.reexec()
    sys.exit(main())


if __name__ == "__main__":
    run()
