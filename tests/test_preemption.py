"""SIGTERM at checkpoint boundaries and mid-run through the CLI, a finished run rerun, and a
short kill -9 campaign.

The reference is one uninterrupted run (the tests' tiny run); every interrupted-then-resumed
run must end with the same final record and parameters (bit-exact resume makes the metrics
equal, not just close).
"""

import importlib.util
import json
import logging
import signal
import subprocess

import pytest
from train_helpers import (
    REPO,
    TINY,
    assert_quiet_log,
    assert_trees_equal,
    cli_args,
    cpu_model_name,
    final_params,
    read_records,
    subprocess_env,
    tiny_config,
    user_env,
)

from fbl_jax.train import checkpoints as checkpointing
from fbl_jax.train import train_and_evaluate
from fbl_jax.train.loop import parameter_checksum
from fbl_jax.train.preemption import PREEMPTED_EXIT_CODE, Preempted
from fbl_jax.train.runners import ProgramRunner
from fbl_jax.train.timing import SpeedWindow

STEPS_PER_EPOCH = 15  # the tiny demo: 494 images / batch 32


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    final = train_and_evaluate(tiny_config(), workdir)
    return workdir, final


def _sigterm_after_save(monkeypatch, at_step, best):
    """SIGTERM the process right after the checkpoint of `at_step` (best/ or latest) is saved."""
    original = checkpointing.Checkpoints.save

    def save(self, state, meta, best_=False, **kw):
        best_flag = kw.pop("best", best_)
        original(self, state, meta, best=best_flag)
        if int(meta["step"]) == at_step and best_flag == best:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(checkpointing.Checkpoints, "save", save)


@pytest.mark.parametrize("best", [False, True], ids=["after_epoch_checkpoint", "after_best"])
def test_sigterm_at_a_checkpoint_boundary_resumes_to_the_same_final(
    tmp_path, monkeypatch, caplog, reference, best
):
    ref_dir, ref_final = reference
    workdir = tmp_path / "run"
    _sigterm_after_save(monkeypatch, STEPS_PER_EPOCH, best)
    with caplog.at_level(logging.INFO, logger="fbl_jax"):
        with pytest.raises(Preempted) as stopped:
            train_and_evaluate(tiny_config(), workdir)
    assert stopped.value.code == PREEMPTED_EXIT_CODE == 143
    assert f"checkpoint written at step {STEPS_PER_EPOCH}" in caplog.text
    assert (workdir / "checkpoints" / str(STEPS_PER_EPOCH)).is_dir()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was put back
    monkeypatch.undo()
    final = train_and_evaluate(tiny_config(), workdir)
    assert final == ref_final
    finals = [r for r in read_records(workdir) if r["type"] == "final"]
    assert finals == [ref_final]
    # the same eval history as the uninterrupted run, each eval once
    evals = [
        (r["step"], r["split"], r["top1"]) for r in read_records(workdir) if r["type"] == "eval"
    ]
    ref_evals = [
        (r["step"], r["split"], r["top1"]) for r in read_records(ref_dir) if r["type"] == "eval"
    ]
    assert evals == ref_evals
    # two stretches: the stopped one up to its checkpoint, the resumed one from there
    stretches = json.loads((workdir / "timing.json").read_text())["stretches"]
    total = ref_final["step"]
    assert [(s["first_step"], s["last_step"], s["status"]) for s in stretches] == [
        (0, STEPS_PER_EPOCH, "stopped"),
        (STEPS_PER_EPOCH, total, "finished"),
    ]
    assert all(s["total_steps"] == total and s["host"] == stretches[0]["host"] for s in stretches)
    assert cpu_model_name() in stretches[0]["host"]
    totals = json.loads((workdir / "timing.json").read_text())["total"]
    for phase in ("compile", "train", "eval", "checkpoint"):
        assert totals[phase] == pytest.approx(sum(s["seconds"][phase] for s in stretches), abs=2e-3)


def test_rerun_of_a_finished_run_does_nothing(tmp_path, caplog, reference):
    ref_dir, ref_final = reference
    before = (ref_dir / "metrics.jsonl").read_text()
    events = sorted(p.name for p in (ref_dir / "tensorboard").iterdir())
    with caplog.at_level(logging.INFO, logger="fbl_jax"):
        final = train_and_evaluate(tiny_config(), ref_dir)
    assert final == ref_final
    assert f"already finished at step {2 * STEPS_PER_EPOCH}" in caplog.text
    assert "resumed from step" not in caplog.text
    assert (ref_dir / "metrics.jsonl").read_text() == before
    assert sorted(p.name for p in (ref_dir / "tensorboard").iterdir()) == events


def test_train_records_once_per_log_interval_with_compile_apart(reference):
    ref_dir, _ = reference
    config = tiny_config()
    train = [r for r in read_records(ref_dir) if r["type"] == "train"]
    total = config.num_epochs * STEPS_PER_EPOCH
    expected = list(range(config.log_every_steps, total + 1, config.log_every_steps))
    assert [r["step"] for r in train] == expected
    timing = json.loads((ref_dir / "timing.json").read_text())
    assert all(timing["total"][phase] > 0 for phase in ("compile", "train", "eval"))
    (stretch,) = timing["stretches"]  # one process trained it
    assert (stretch["first_step"], stretch["last_step"], stretch["status"]) == (
        0,
        total,
        "finished",
    )
    assert stretch["cpu_s"] > 0  # the process's CPU seconds, beside the wall time
    trained_s = timing["total"]["train"]
    assert stretch["images_per_s"] == pytest.approx(total * config.batch_size / trained_s, rel=1e-3)


def test_speed_window_counts_only_its_own_steps(monkeypatch):
    clock = iter([100.0, 102.0, 102.0, 102.0, 103.0])
    monkeypatch.setattr("fbl_jax.train.timing.time.perf_counter", lambda: next(clock))
    window = SpeedWindow(step=10)  # t = 100
    assert window.rate(14, batch_size=64) == pytest.approx(4 * 64 / 2.0)  # t = 102
    window.restart(14)  # t = 102: e.g. after a compile or an eval
    assert window.rate(14, 64) is None  # no steps in the window (t = 102)
    assert window.rate(16, 64) == pytest.approx(2 * 64 / 1.0)  # t = 103


def test_kill_during_checkpoint_writes_resumes_to_the_same_final(tmp_path, reference):
    """The short version of benchmarks/kill_campaign.py: kill -9 inside orbax's temporary
    folder of an epoch checkpoint and right after one lands, restart, the same final record."""
    spec = importlib.util.spec_from_file_location(
        "kill_campaign", REPO / "benchmarks" / "kill_campaign.py"
    )
    kc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kc)
    # the tests' tiny run as it is (4 devices): the campaign's processes load its compiled
    # programs from the suite's cache, and the module's reference run is the campaign's
    ref_dir, ref_final = reference
    checksum = parameter_checksum(final_params(ref_dir)[1])
    # seconds: the kill deadline for a target that never shows (1.5x), ample for 30 tiny steps
    ref = {"final": ref_final, "checksum": f"{checksum:.12e}", "seconds": 60.0}
    result = kc.campaign(
        tmp_path,
        kills=2,
        targets=("latest_tmp", "after_checkpoint"),
        devices=4,
        reference=ref,
        **TINY,
    )
    assert kc.passed(result), json.dumps(result, indent=1)
    assert result["kills"] == 2
    assert result["final_equal"] and result["checksum_equal"]


# fbl-train as its console script runs it, with SIGTERM sent to itself once the run has
# trained the number of steps given as the first argument (its own flags follow).
SIGTERM_AT_STEP = """
import runpy, signal, sys
from fbl_jax.train.runners import ProgramRunner
at = int(sys.argv.pop(1))
advance = ProgramRunner.advance
def advance_then_sigterm(self, step, n, alive):
    out = advance(self, step, n, alive)
    if step + out[1] == at:
        signal.raise_signal(signal.SIGTERM)
    return out
ProgramRunner.advance = advance_then_sigterm
runpy.run_module("fbl_jax.cli.train", run_name="__main__", alter_sys=True)
"""


def test_sigterm_mid_run_through_the_cli_resumes_bit_for_bit(tmp_path, reference):
    """SIGTERM mid-epoch to fbl-train (here from inside it, after step 7: the same point every
    time), exit 143 with a checkpoint where it stopped; the same command again: the
    uninterrupted run's parameters, exactly. The processes load the tiny run's compiled
    programs from the suite's cache."""
    env = subprocess_env()
    ref_step, ref_params = final_params(reference[0])
    assert ref_step == 2 * STEPS_PER_EPOCH
    termed = tmp_path / "termed"
    args = cli_args(termed, log_every_steps=1)
    assert args[1:3] == ["-m", "fbl_jax.cli.train"]
    stopped = subprocess.run(
        [args[0], "-c", SIGTERM_AT_STEP, "7", *args[3:]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    out = stopped.stdout
    assert stopped.returncode == 143, out[-2000:]
    assert "SIGTERM: checkpoint written at step 7;" in out
    assert final_params(termed)[0] == 7
    # resumed as on a user's machine (every backend probed, no C++ log filter): its console is
    # the one log format without library chatter, and nothing on stdout
    resumed = subprocess.run(
        args, env=user_env(devices=4), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_trees_equal(final_params(termed)[1], ref_params)
    lines = assert_quiet_log(resumed.stderr)
    assert any("resumed" in line for line in lines) and resumed.stdout == ""
    assert any("done: test top-1" in line for line in lines)


class _Killed(BaseException):
    """A kill without warning (a lost node, the OOM killer): nothing after it runs, not even
    the loop's clean-up; only what was saved before it is there for the restart."""


def _kill_after_save(monkeypatch, at_step: int) -> None:
    original = checkpointing.Checkpoints.save

    def save(self, state, meta, best=False):
        original(self, state, meta, best=best)
        if int(meta["step"]) == at_step and not best:
            raise _Killed

    monkeypatch.setattr(checkpointing.Checkpoints, "save", save)


def _history(workdir) -> list[tuple]:
    """Every train and eval record's numbers, in order (timings and images/s aside)."""
    keys = (
        "type",
        "step",
        "split",
        "loss",
        "train_top1",
        "lr",
        "alpha",
        "top1",
        "mean_feature_norm",
    )
    return [
        tuple(str(r.get(k)) for k in keys)
        for r in read_records(workdir)
        if r["type"] in ("train", "eval")
    ]


def _saved_steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_checkpoint_every_minutes_saves_mid_epoch_and_a_kill_resumes_from_there(
    tmp_path, monkeypatch, reference
):
    """A fake clock that moves 15 s per log interval (5 steps) and checkpoint_every_minutes=1:
    the first log step a minute after the start is step 20, mid-epoch (epochs: 15 steps,
    saved every 2 epochs here), and without the minutes there would be no checkpoint before
    step 30. Killed right after that save, the restart resumes at step 20 and ends with the
    uninterrupted run's records and final record."""
    ref_dir, ref_final = reference
    now = [0.0]
    monkeypatch.setattr("fbl_jax.train.loop.time.monotonic", lambda: now[0])
    advance = ProgramRunner.advance

    def advance_15s_per_interval(self, step, n, alive):
        out = advance(self, step, n, alive)
        now[0] += 15.0 * out[1] / 5
        return out

    monkeypatch.setattr(ProgramRunner, "advance", advance_15s_per_interval)
    cadence = dict(checkpoint_every_epochs=2, keep_checkpoints=10, checkpoint_every_minutes=1.0)
    killed = tmp_path / "killed"
    _kill_after_save(monkeypatch, 20)
    with pytest.raises(_Killed):
        train_and_evaluate(tiny_config(**cadence), killed)
    assert _saved_steps(killed) == [20]  # only the minute's checkpoint: no epoch one before it
    monkeypatch.undo()  # the restart: the real clock, on which no minute passes here
    final = train_and_evaluate(tiny_config(**cadence), killed)
    assert final == ref_final
    assert _history(killed) == _history(ref_dir)
    assert _saved_steps(killed) == [20, 2 * STEPS_PER_EPOCH]


def test_a_kill_after_an_epoch_checkpoint_inside_a_log_interval_keeps_the_records_exact(
    tmp_path, monkeypatch
):
    """Logs every 4 steps, epochs of 15: the epoch-1 checkpoint (step 15) falls inside the
    interval 13-16. Killed right after it, the restart's record for step 16 must still be the
    mean over steps 13-16, as in the uninterrupted run (the steps 13-15 travel in the
    checkpoint), not over step 16 alone."""
    config = dict(log_every_steps=4)
    whole = tmp_path / "whole"
    ref_final = train_and_evaluate(tiny_config(**config), whole)
    killed = tmp_path / "killed"
    _kill_after_save(monkeypatch, STEPS_PER_EPOCH)
    with pytest.raises(_Killed):
        train_and_evaluate(tiny_config(**config), killed)
    monkeypatch.undo()
    assert train_and_evaluate(tiny_config(**config), killed) == ref_final
    steps = [int(h[1]) for h in _history(whole) if h[0] == "train"]
    assert 16 in steps and STEPS_PER_EPOCH not in steps
    assert _history(killed) == _history(whole)
