"""A sweep wave shared over pinned child processes (config.sweep_processes): how runs and cores
are dealt out, and a two-process tiny sweep against the same sweep in one process."""

import json
import os
import re

import pytest
from train_helpers import read_records, tiny_config

from fbl_jax.train import train_sweep
from fbl_jax.train.processes import resolve_processes, share

# a child's log line: the one format (fbl_jax/cli/logs.py) with its runs' label
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[[^\]]+\] (WARNING: |ERROR: )?\S")


def test_share_deals_round_robin_and_never_makes_empty_parts():
    assert share([0, 1, 2, 3, 4], 2) == [[0, 2, 4], [1, 3]]
    assert share(["a", "b"], 4) == [["a"], ["b"]]
    assert share([0, 1], 1) == [[0, 1]]


def test_resolve_processes():
    cores = len(os.sched_getaffinity(0))
    assert resolve_processes(0, "cpu", "sequential", 6) == min(6, cores)  # auto: one per core
    assert resolve_processes(0, "cpu", "sequential", 1) == 1  # one run: in this process
    assert resolve_processes(0, "gpu", "sequential", 6) == 1  # accelerators: one process
    assert resolve_processes(0, "cpu", "vmap", 6) == 1  # vmapped runs share each call
    assert resolve_processes(3, "cpu", "sequential", 2) == 2  # never more than the runs
    assert resolve_processes(1, "cpu", "sequential", 6) == 1


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to pin to")
def test_two_processes_train_what_one_process_trains(tmp_path, capfd):
    sets = [("loss.name", ["ce", "fbl"])]
    one = train_sweep(tiny_config(), sets, tmp_path / "one")
    capfd.readouterr()
    two = train_sweep(tiny_config(sweep_processes=2), sets, tmp_path / "two")
    # each child logs in the one format, its lines labelled with its run, each fact once
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    for name in ("loss.name=ce", "loss.name=fbl"):
        own = [line for line in lines if f" [{name}] " in line]
        assert all(LOG_LINE.match(line) for line in own), own
        assert any("done: test top-1" in line for line in own), lines
        assert sum("convolutions:" in line for line in own) == 1, own  # once in each process
    assert sorted(two) == sorted(one) == ["loss.name=ce", "loss.name=fbl"]
    for name in one:  # same data and steps: the same records up to the threads' rounding
        a, b = read_records(tmp_path / "one" / name), read_records(tmp_path / "two" / name)
        assert [(r["type"], r["step"]) for r in a] == [(r["type"], r["step"]) for r in b]
        train = [(x, y) for x, y in zip(a, b) if x["type"] == "train"]
        # the first steps nearly bit for bit; later ones drift with the rounding (< 1 %)
        assert train[0][1]["loss"] == pytest.approx(train[0][0]["loss"], rel=1e-5)
        for x, y in train:
            assert y["loss"] == pytest.approx(x["loss"], rel=1e-2), (name, x["step"])
    # each child pinned to one core: its run's stretch says so (the machine's line ends so)
    total = os.cpu_count()
    for name in one:
        (alone,) = json.loads((tmp_path / "one" / name / "timing.json").read_text())["stretches"]
        (child,) = json.loads((tmp_path / "two" / name / "timing.json").read_text())["stretches"]
        cores = len(os.sched_getaffinity(0))
        assert alone["host"].endswith(f", {cores} of {total} cores"), alone["host"]
        assert alone["runs_in_process"] == ["loss.name=ce", "loss.name=fbl"]
        assert child["host"].endswith(f", 1 of {total} cores") and "runs_in_process" not in child
    assert sorted(p.name for p in (tmp_path / "two").glob("timing_*.json")) == [
        "timing_program0_process0.json",
        "timing_program0_process1.json",
    ]
