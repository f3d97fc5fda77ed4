"""A stop (SIGTERM, or fbl-reproduce's budget) in every phase of a call ends it cleanly.

Each stop is raised at a known point by a hook (never by wall time): during data loading, the
model set-up, the first compiled call, the first evaluation, and fbl-reproduce's report. A run
stopped after it began resumes to the uninterrupted run's final record; one stopped before has
written nothing.
"""

import json
import logging
import signal

import pytest
from train_helpers import read_records, tiny_config

from fbl_jax.reproduce import cli as reproduce_cli
from fbl_jax.train import run_setup, runners, train_and_evaluate
from fbl_jax.train.preemption import PREEMPTED_EXIT_CODE, Preempted, stop_requested

STEPS = 30  # the tiny run: 2 epochs of 15 steps


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    return train_and_evaluate(tiny_config(), workdir)


def _sigterm_after(monkeypatch, owner, name, calls=1):
    """SIGTERM this process when owner.name returns for the `calls`-th time."""
    original = getattr(owner, name)
    seen = []

    def hooked(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(1)
        if len(seen) == calls:
            signal.raise_signal(signal.SIGTERM)
        return out

    monkeypatch.setattr(owner, name, hooked)


@pytest.mark.parametrize(
    "owner, name, phase",
    [(run_setup, "load_data", "data loading"), (run_setup, "init_train_state", "model set-up")],
    ids=["data", "model"],
)
def test_stop_before_training_writes_nothing(tmp_path, monkeypatch, caplog, owner, name, phase):
    workdir = tmp_path / "run"
    _sigterm_after(monkeypatch, owner, name)
    with caplog.at_level(logging.WARNING, logger="fbl_jax"):
        with pytest.raises(Preempted) as stopped:
            train_and_evaluate(tiny_config(), workdir)
    assert stopped.value.code == PREEMPTED_EXIT_CODE
    assert f"SIGTERM during {phase}: nothing trained in this call" in caplog.text
    assert not workdir.exists()  # no half-made run directory
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and not stop_requested()


@pytest.mark.parametrize(
    "name, stopped_at",
    [("advance", 1), ("evaluate", 15)],  # the tiny run compiles one step per call
    ids=["compile", "eval"],
)
def test_stop_mid_training_checkpoints_and_resumes_to_the_same_final(
    tmp_path, monkeypatch, caplog, reference, name, stopped_at
):
    workdir = tmp_path / "run"
    _sigterm_after(monkeypatch, runners.ProgramRunner, name)
    with caplog.at_level(logging.WARNING, logger="fbl_jax"):
        with pytest.raises(Preempted):
            train_and_evaluate(tiny_config(), workdir)
    assert f"checkpoint written at step {stopped_at}" in caplog.text
    assert (workdir / "checkpoints" / str(stopped_at)).is_dir()
    monkeypatch.undo()
    assert train_and_evaluate(tiny_config(), workdir) == reference
    assert [r for r in read_records(workdir) if r["type"] == "final"] == [reference]


def test_reproduce_stopped_in_set_up_and_in_its_report_ends_with_a_report(
    tmp_path, monkeypatch, capsys
):
    """The budget's stop while the stage is still loading its data (the 0.3 s case), then a
    SIGTERM while the report is written: each call exits 0 with the report on disk."""
    from fbl_jax.train import preemption

    stage = "digits_lt_if10_table2_paper_form"
    args = ["--plan", "tiny", "--out", str(tmp_path), "--tables", "2", "--only", stage]
    original, calls = run_setup.load_data, []

    def budget_ends_while_the_stage_loads(config):
        out = original(config)
        calls.append(config)
        if len(calls) == 2:  # the plan's description reads the digits first, then the stage
            preemption.request_stop()  # what the budget's deadline does
        return out

    monkeypatch.setattr(run_setup, "load_data", budget_ends_while_the_stage_loads)
    assert reproduce_cli.main([*args, "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "0/1 stage(s) done" in printed and "rerun the same command" in printed
    assert json.loads((tmp_path / "stages.json").read_text())[stage]["status"] == "stopped"
    assert (tmp_path / "report" / "paper_comparison.md").exists()
    assert not (tmp_path / "runs" / stage / "seed=0").exists()  # nothing had started
    monkeypatch.undo()

    from fbl_jax.reproduce import compare

    _sigterm_after(monkeypatch, compare, "collect")  # SIGTERM inside the report phase
    (tmp_path / "report" / "paper_comparison.md").unlink()
    assert reproduce_cli.main([*args, "--no-figures"]) == 0
    assert json.loads((tmp_path / "stages.json").read_text())[stage]["status"] == "done"
    assert (tmp_path / "report" / "paper_comparison.md").exists()
