"""Orbax checkpoints: round trip, fallback from a damaged latest checkpoint, identity mismatch."""

import logging
import pathlib

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
