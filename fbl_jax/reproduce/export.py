"""Keep a reproduction's finished runs as results: everything but the training checkpoints.

    fbl-reproduce export --out OUT --to results/cifar10_lt_lossless

copies, for every finished run under OUT/runs/ (a final record and, for trained runs, its
`final_params.npz`), every file but `checkpoints/` and `best/`: metrics.jsonl (every
evaluation, per class, feature norms), config.json, class_counts.json, data.json (which data,
fingerprinted), timing.json (each stretch and its machine), TensorBoard events and the final
parameters (a ResNet-32's are under 2 MB). The stage folders' sweep.json and timing files and
OUT's plan, probe and stage times come along, and the report (comparison with the paper, tables,
figures) is written afresh from the exported runs, so it holds the finished runs only (an OUT
from before plan.json kept its stages whole: its report is copied). `fbl-report` rebuilds every
table and figure from the copy, fbl-decouple corrects its CE runs, and the parameters load in
one line (`fbl_jax.train.params_file.load_params`). Runs not finished yet are named and left out; export
again later to add them (files already there are replaced).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil

from fbl_jax.defaults import ConfigError
from fbl_jax.train.params_file import FILE_NAME as PARAMS_FILE
from fbl_jax.train.run_setup import read_final_record

LEFT_OUT = ("checkpoints", "best")  # the training state: large, and only for resuming
OUT_FILES = ("plan.json", "probe.json", "stages.json")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="fbl-reproduce's output folder")
    parser.add_argument("--to", required=True, help="the results folder to write (or add to)")
    parser.add_argument(
        "--no-figures", dest="figures", action="store_false", help="the report's tables only"
    )


def export(args: argparse.Namespace) -> int:
    out, dest = pathlib.Path(args.out).resolve(), pathlib.Path(args.to).resolve()
    if not (out / "runs").is_dir():
        raise ConfigError(f"{out} has no runs/: give --out the folder fbl-reproduce trained in")
    if dest == out or out in dest.parents or dest in out.parents:
        raise ConfigError(f"--to {dest} must be outside --out {out} (and not contain it)")
    kept, waiting, modelless, size = [], [], [], 0
    for stage in sorted(p for p in (out / "runs").iterdir() if p.is_dir()):
        for path in sorted(stage.iterdir()):
            name = f"{stage.name}/{path.name}"
            if path.is_file():  # sweep.json, timing_program*.json
                size += _copy(path, dest / "runs" / stage.name / path.name)
            elif read_final_record(path) is None:
                waiting.append(name)
            else:
                size += _copy_tree(path, dest / "runs" / stage.name / path.name)
                kept.append(name)
                if _lacks_model(path):
                    modelless.append(name)
    for name in OUT_FILES:
        if (out / name).is_file():
            size += _copy(out / name, dest / name)
    plan = _plan(out)
    if plan is not None:
        from fbl_jax.reproduce.cli import write_report

        state = (
            json.loads((out / "stages.json").read_text()) if (out / "stages.json").is_file() else {}
        )
        estimates = {name: s.get("estimate_s") for name, s in state.items()}
        write_report(plan[1], dest, state, estimates, plan[0], args.figures)
    elif (out / "report").is_dir():
        size += _copy_tree(out / "report", dest / "report")
    print(f"exported {len(kept)} finished run(s), {size / 2**20:.1f} MiB, to {dest}", flush=True)
    if waiting:
        print(f"not finished yet (left out; export again later): {', '.join(waiting)}")
    if modelless:
        print(f"kept without a model ({PARAMS_FILE}: a run stopped by a non-finite loss, or "
              f"trained by an older version): {', '.join(modelless)}")  # fmt: skip
    if kept:
        print(f"tables and figures again: fbl-report {dest}/runs/<stage> --out REPORT_DIR")
    return 0


def _plan(out: pathlib.Path) -> tuple[str, list] | None:
    """(the plan's name, its stages) from OUT/plan.json, None where it does not keep them whole."""
    from fbl_jax.reproduce.plan import stages_from_record

    try:
        record = json.loads((out / "plan.json").read_text())
        stages = stages_from_record(record)
        return None if stages is None else (record["plan"], stages)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _lacks_model(run_dir: pathlib.Path) -> bool:
    """A trained run without its final parameters (a decoupling correction has none: it is
    its source run's model with a corrected head, named in its config)."""
    config = json.loads((run_dir / "config.json").read_text())
    return "from_run" not in config and not (run_dir / PARAMS_FILE).is_file()


def _copy_tree(src: pathlib.Path, dst: pathlib.Path) -> int:
    size = 0
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if rel.parts[0] in LEFT_OUT or not path.is_file() or path.name.endswith(".tmp"):
            continue
        size += _copy(path, dst / rel)
    return size


def _copy(src: pathlib.Path, dst: pathlib.Path) -> int:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return src.stat().st_size
