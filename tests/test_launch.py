"""launch/ scripts run with fake srun, scontrol, gcloud and fbl-train on PATH: what each passes on,
and the Slurm script's requeue after a stop with a checkpoint (exit 143)."""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"


def _fake_bin(tmp_path: pathlib.Path, exit_code: int = 0) -> tuple[dict, pathlib.Path]:
    """srun, scontrol, gcloud and fbl-train that append their arguments, one call a line, to
    calls.txt; srun and fbl-train exit with `exit_code`."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    for name, code in (("srun", exit_code), ("fbl-train", exit_code), ("scontrol", 0),
                       ("gcloud", 0)):  # fmt: skip
        script = bin_dir / name
        script.write_text(
            f'#!/usr/bin/env bash\nprintf "%s" "{name}" >> {calls}\n'
            f'for a in "$@"; do printf " [%s]" "$a" >> {calls}; done\n'
            f"echo >> {calls}\nexit {code}\n"
        )
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "42"}
    env.pop("FBL_REQUEUE", None)
    return env, calls


def _calls(calls: pathlib.Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize(
    "exit_code, requeue_env, requeued",
    [(143, None, True), (0, None, False), (1, None, False), (143, "0", False)],
    ids=["stopped", "finished", "failed", "stopped_no_requeue"],
)
def test_slurm_script_requeues_a_run_stopped_with_a_checkpoint(
    tmp_path, exit_code, requeue_env, requeued
):
    env, calls = _fake_bin(tmp_path, exit_code)
    if requeue_env is not None:
        env["FBL_REQUEUE"] = requeue_env
    args = ["--config=configs/cifar10_lt.py", "--workdir=/shared/runs/a b"]
    done = subprocess.run(
        ["bash", str(LAUNCH / "slurm.sbatch"), *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == exit_code, done.stderr
    want = ["srun [--kill-on-bad-exit=1] [fbl-train] [--config=configs/cifar10_lt.py] "
            "[--workdir=/shared/runs/a b]"]  # fmt: skip
    if requeued:
        want.append("scontrol [requeue] [42]")
    assert _calls(calls) == want


def test_local_script_passes_every_argument_to_fbl_train(tmp_path):
    env, calls = _fake_bin(tmp_path, 0)
    env.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    args = ["--config=configs/demo.py", "--workdir=runs/with space", "--config.seed=3"]
    subprocess.run(["bash", str(LAUNCH / "local.sh"), *args], env=env, check=True)
    assert _calls(calls) == ["fbl-train" + "".join(f" [{a}]" for a in args)]


def test_tpu_pod_script_runs_the_same_command_on_every_worker(tmp_path):
    env, calls = _fake_bin(tmp_path, 0)
    args = ["--config=configs/imagenet_lt.py", "--workdir=gs://b/runs/x y"]
    script = str(LAUNCH / "tpu_pod.sh")
    subprocess.run(["bash", script, "my-tpu", "us-central2-b", *args], env=env, check=True)
    (call,) = _calls(calls)
    assert call.startswith(
        "gcloud [compute] [tpus] [tpu-vm] [ssh] [my-tpu] [--zone=us-central2-b] [--worker=all] "
    )
    command = call.split("[--command=", 1)[1][:-1]
    assert command.startswith("cd $HOME/fbl-jax && fbl-train ")
    # the remote shell splits the command back into fbl-train's arguments, spaces kept
    assert shlex.split(command.split("&& ", 1)[1]) == ["fbl-train", *args]
    usage = subprocess.run(["bash", script, "my-tpu"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
