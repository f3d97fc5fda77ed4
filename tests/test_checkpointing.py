"""Orbax checkpoints: round trip, fallback from a damaged latest checkpoint, identity mismatch."""

import logging
import pathlib
from typing import Any

import flax
import numpy as np
import pytest

from fbl_jax.train import checkpoints as checkpointing

IDENTITY = {"model": "resnet32", "head": "linear", "num_classes": 3, "class_counts": [5, 3, 1]}


def make_state(value: float) -> dict:
    return {"step": np.int32(value), "params": {"w": np.full((4, 2), value, np.float32)}}


def save_steps(workdir, steps):
    ck = checkpointing.Checkpoints(workdir, keep=3)
    for s in steps:
        ck.save(make_state(s), {**IDENTITY, "step": s, "note": f"at {s}"})
    ck.close()


def test_round_trip_and_keep(tmp_path):
    save_steps(tmp_path, [1, 2, 3, 4])
    ck = checkpointing.Checkpoints(tmp_path, keep=3)
    state, meta = ck.restore_latest(make_state(0), IDENTITY)
    assert int(state["step"]) == 4 and meta["note"] == "at 4"
    np.testing.assert_array_equal(state["params"]["w"], np.full((4, 2), 4.0))
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == [2, 3, 4]


def test_damaged_latest_falls_back_to_previous(tmp_path, caplog):
    save_steps(tmp_path, [1, 2])
    latest = tmp_path / "checkpoints" / "2"
    for f in latest.rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    ck = checkpointing.Checkpoints(tmp_path, keep=3)
    with caplog.at_level(logging.ERROR):
        state, meta = ck.restore_latest(make_state(0), IDENTITY)
    assert int(state["step"]) == 1
    assert "step 2" in caplog.text and "unreadable" in caplog.text
    assert not latest.exists() and any((tmp_path / "corrupt_checkpoints").iterdir())


def test_all_damaged_is_an_error(tmp_path):
    save_steps(tmp_path, [1])
    for f in (tmp_path / "checkpoints" / "1").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    with pytest.raises(RuntimeError, match="could be read"):
        checkpointing.Checkpoints(tmp_path, keep=3).restore_latest(make_state(0), IDENTITY)


def test_mismatched_run_is_an_error(tmp_path: pathlib.Path):
    save_steps(tmp_path, [1])
    other = {**IDENTITY, "num_classes": 100, "model": "resnet56"}
    with pytest.raises(
        checkpointing.CheckpointMismatchError, match="num_classes.*new --workdir|model"
    ):
        checkpointing.Checkpoints(tmp_path, keep=3).restore_latest(make_state(0), other)


def test_empty_workdir_gives_none(tmp_path):
    assert (
        checkpointing.Checkpoints(tmp_path, keep=2).restore_latest(make_state(0), IDENTITY) is None
    )


def test_relative_workdir_saves_latest_and_best(tmp_path, monkeypatch):
    """`fbl-train --workdir=runs/demo` (the README's command) gives orbax a relative path."""
    monkeypatch.chdir(tmp_path)
    ck = checkpointing.Checkpoints("runs/demo", keep=2)
    ck.save(make_state(7), {**IDENTITY, "step": 7})
    ck.save(make_state(5), {**IDENTITY, "step": 5}, best=True)
    ck.close()
    ck = checkpointing.Checkpoints(pathlib.Path("runs") / "demo", keep=2)
    state, meta = ck.restore_latest(make_state(0), IDENTITY)
    assert int(state["step"]) == 7 and meta["step"] == 7
    best, best_meta = ck.restore_best(make_state(0))
    assert int(best["step"]) == 5 and best_meta["step"] == 5
    assert (tmp_path / "runs" / "demo" / "best").is_dir()
    ck.close()


@flax.struct.dataclass
class RunState:  # the part of a TrainState the program's restore reads: .step, and leaves
    step: Any
    params: Any


def run_state(value: float) -> RunState:
    return RunState(**make_state(value))


@pytest.mark.parametrize(
    "saved, want",
    [([[15, 30], [15]], 15), ([[15], []], 0), ([[15, 30], [15, 30]], 30)],
    ids=["a_round_ahead", "one_run_never_saved", "in_step"],
)
def test_a_sweep_program_resumes_at_the_round_every_run_saved(tmp_path, saved, want):
    """A kill between two runs' saves of one round leaves run 0 a round ahead: every run resumes
    at the newest step all of them saved; a run with no checkpoint sends every run to step 0."""
    for r, steps in enumerate(saved):
        ck = checkpointing.Checkpoints(tmp_path / f"run{r}", keep=3)
        for s in steps:
            ck.save(run_state(s), {**IDENTITY, "step": s, "note": f"at {s}"})
        ck.close()
    ckpts = [checkpointing.Checkpoints(tmp_path / f"run{r}", keep=3) for r in range(len(saved))]
    fresh = run_state(-1).replace(step=np.int32(0))  # a new run's state: step 0, own weights
    states = [fresh for _ in saved]
    step, metas = checkpointing.restore_together(ckpts, states, IDENTITY)
    assert step == want
    for state, meta in zip(states, metas):
        assert int(state.step) == want
        w = want if want else -1  # step 0: every run starts afresh from its own state
        np.testing.assert_array_equal(state.params["w"], np.full((4, 2), w))
        assert (meta is None) == (want == 0)
        if meta is not None:
            assert meta["note"] == f"at {want}"
    for ck in ckpts:
        ck.close()
