"""Preemption: SIGKILL or SIGTERM mid-run, then the same command, gives bit-identical parameters."""

import signal
import subprocess
import time

import orbax.checkpoint as ocp
from train_helpers import (
    assert_trees_equal,
    cli_args,
    final_params,
    subprocess_env,
)


def _wait_for(predicate, proc, timeout=240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"process ended early with {proc.returncode}: {proc.stdout.read()}"
            )
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out waiting")


def test_sigterm_resume_bit_for_bit(tmp_path):
    """Uninterrupted vs SIGTERM-then-restart through the CLI (exit 143): identical parameters."""
    env = subprocess_env()
    # the tests' tiny run as it is (2 epochs of 15 steps, 4 devices): its compiled programs are
    # already in the suite's compilation cache, the subprocesses load them
    ref = tmp_path / "ref"
    subprocess.run(cli_args(ref), env=env, check=True, capture_output=True, timeout=300)
    ref_step, ref_params = final_params(ref)
    assert ref_step == 30

    # (SIGKILL at and between checkpoint writes: tests/test_preemption.py's kill campaign)

    # SIGTERM mid-run writes a checkpoint where it stops; the restart finishes identically
    termed = tmp_path / "termed"
    proc = subprocess.Popen(
        cli_args(termed, log_every_steps=1),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for(lambda: (termed / "metrics.jsonl").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out[-2000:]
    assert "SIGTERM: checkpoint written at step" in out
    manager = ocp.CheckpointManager(termed / "checkpoints")
    stopped_at = manager.latest_step()
    assert 0 < stopped_at < 30
    subprocess.run(
        cli_args(termed, log_every_steps=1),
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert_trees_equal(final_params(termed)[1], ref_params)
