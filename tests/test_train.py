"""The training system end to end: outputs, multi-device equivalence, kill/resume, multi-process."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from fbl_jax import checkpointing, losses, train_steps
from fbl_jax.defaults import config_from_file
from fbl_jax.models import get_model
from fbl_jax.train import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.py"
# A tiny, fast version of the demo: 2 epochs of 15 steps on 16×16 digits, ResNet-8.
TINY = {
    "num_epochs": 2,
    "eval_every_epochs": 1,
    "checkpoint_every_epochs": 1,
    "log_every_steps": 5,
    "model.name": "resnet8",
    "optimizer.warmup_epochs": 0.5,
    "optimizer.decay_epochs": (1,),
    "optimizer.decay_multipliers": (0.1,),
    "loss.curriculum_offset": 0.5,
    "loss.drw_start_epoch": 1,
}


def tiny_config(**extra):
    config = config_from_file(DEMO)
    for key, value in {**TINY, **extra}.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def cli_args(workdir, **extra) -> list[str]:
    args = [sys.executable, "-m", "fbl_jax.main", f"--config={DEMO}", f"--workdir={workdir}"]
    for key, value in {**TINY, **extra}.items():
        if isinstance(value, tuple):
            value = "(" + ",".join(str(v) for v in value) + ",)"
        args.append(f"--config.{key}={value}")
    return args


def subprocess_env(devices: int = 4, cache: pathlib.Path | None = None) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    return env


def read_records(workdir) -> list[dict]:
    return [
        json.loads(line)
        for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    ]


def final_params(workdir) -> dict:
    manager = ocp.CheckpointManager(pathlib.Path(workdir) / "checkpoints")
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(None)))
    return step, jax.tree_util.tree_map(np.asarray, restored["state"]["params"])


def assert_trees_equal(a, b):
    flat_a = flax.traverse_util.flatten_dict(a)
    flat_b = flax.traverse_util.flatten_dict(b)
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=str(key))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    final = train_and_evaluate(tiny_config(), workdir)
    return workdir, final


def test_run_writes_every_output(finished_run):
    workdir, final = finished_run
    records = read_records(workdir)
    evals = [r for r in records if r["type"] == "eval"]
    train = [r for r in records if r["type"] == "train"]
    assert [(r["step"], r["split"]) for r in evals] == [
        (15, "test"),
        (15, "minival"),
        (30, "test"),
        (30, "minival"),
    ]
    counts = json.loads((workdir / "class_counts.json").read_text())["counts"]
    for r in evals:
        for key in ("top1", "top5", "per_class_accuracy", "many_shot", "medium_shot", "few_shot"):
            assert key in r
        assert len(r["per_class_accuracy"]) == len(r["feature_norm_per_class"]) == 10
        # the per-class accuracies and the test size agree with the overall top-1
        conf = np.array(r["confusion"])
        assert conf.sum() == r["num_examples"]
        assert r["top1"] == pytest.approx(np.trace(conf) / conf.sum())
    test_sizes = {r["num_examples"] for r in evals if r["split"] == "test"}
    assert test_sizes == {539}  # 30% of each digit class of the 1,797 bundled digits
    assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30]
    # the lr of the record's last step: warm-up over round(0.5·15) = 8 steps, step index 4
    assert train[0]["lr"] == pytest.approx(0.1 * 5 / 8) and train[-1]["lr"] == pytest.approx(0.01)
    assert all(np.isfinite(r["loss"]) for r in train)
    assert sorted(counts, reverse=True) == counts and counts[0] > counts[-1]
    last = [r for r in records if r["type"] == "final"][-1]
    assert last["last"]["step"] == 30 and last["last"]["split"] == "test"
    assert final["last"]["top1"] == last["last"]["top1"]
    best_minival_step = max(
        (r for r in evals if r["split"] == "minival"), key=lambda r: r["balanced_top1"]
    )["step"]
    assert last["best_step"] == best_minival_step
    assert (workdir / "checkpoints" / "30").is_dir() and any((workdir / "best").iterdir())
    assert any((workdir / "tensorboard").iterdir())
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["name"] == "resnet8"


def test_restart_of_finished_run_changes_nothing(finished_run):
    workdir, final = finished_run
    before = read_records(workdir)
    again = train_and_evaluate(tiny_config(), workdir)
    after = read_records(workdir)
    assert again["last"] == final["last"]
    assert [r for r in after if r["type"] != "final"] == [r for r in before if r["type"] != "final"]


def test_mismatched_checkpoint_is_an_error(finished_run):
    workdir, _ = finished_run
    with pytest.raises(checkpointing.CheckpointMismatchError, match="model"):
        train_and_evaluate(tiny_config(**{"model.name": "resnet20"}), workdir)


def test_batch_not_divisible_by_devices(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size=30 does not divide over 4 devices"):
        train_and_evaluate(tiny_config(batch_size=30), tmp_path)


def test_ldam_needs_cosine_head(tmp_path):
    with pytest.raises(ValueError, match="head='cosine'"):
        train_and_evaluate(tiny_config(**{"loss.name": "ldam_drw"}), tmp_path)


def _one_step(devices, images, labels, params, batch_stats):
    model = get_model("resnet8", 10, bn_axis_name=train_steps.AXIS)
    counts = np.array([40, 30, 20, 12, 9, 7, 5, 4, 3, 2])
    loss_cfg = {"name": "fbl", "fbl_form": "authors_code", "fbl_scale": 60.0}
    loss_fn = losses.make_loss(loss_cfg, counts, 10)
    tx = optax.sgd(0.1, momentum=0.9)
    step = train_steps.make_train_step(model, loss_fn, tx, optax.constant_schedule(0.1), 4)
    state = train_steps.TrainState(
        step=jnp.asarray(8, jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
    )
    n = len(devices)
    p_step = jax.pmap(step, axis_name=train_steps.AXIS, devices=devices)
    batch = {
        "image": images.reshape(n, -1, *images.shape[1:]),
        "label": labels.reshape(n, -1),
    }
    new_state, metrics = p_step(flax.jax_utils.replicate(state, devices), batch)
    first = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], new_state)
    return first, float(metrics["loss"][0])


def test_pmap_on_four_devices_equals_one_device():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 16, 16, 3)).astype(np.float32)
    labels = rng.integers(0, 10, 16).astype(np.int32)
    model = get_model("resnet8", 10)
    variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 3)), train=False)
    params, stats = variables["params"], variables["batch_stats"]
    four, loss4 = _one_step(jax.devices()[:4], images, labels, params, stats)
    one, loss1 = _one_step(jax.devices()[:1], images, labels, params, stats)
    assert loss4 == pytest.approx(loss1, rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(four), jax.tree_util.tree_leaves(one)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # and the step did change the parameters (the comparison above is not vacuous)
    moved = jax.tree_util.tree_map(lambda a, b: np.abs(a - b).max(), four.params, params)
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-3


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


def test_kill_and_sigterm_resume_bit_for_bit(tmp_path):
    """Uninterrupted vs SIGKILL-then-restart vs SIGTERM-then-restart: identical final parameters."""
    cache = tmp_path / "xla_cache"
    env = subprocess_env(cache=cache)
    extra = {"num_epochs": 3}
    ref = tmp_path / "ref"
    subprocess.run(cli_args(ref, **extra), env=env, check=True, capture_output=True, timeout=300)
    ref_step, ref_params = final_params(ref)
    assert ref_step == 45

    # SIGKILL somewhere in epoch 2, after the epoch-1 checkpoint exists
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        cli_args(killed, **extra),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for(lambda: (killed / "checkpoints" / "15").is_dir(), proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "45").exists()
    subprocess.run(cli_args(killed, **extra), env=env, check=True, capture_output=True, timeout=300)
    assert_trees_equal(final_params(killed)[1], ref_params)

    # SIGTERM mid-run writes a checkpoint where it stops; the restart finishes identically
    termed = tmp_path / "termed"
    proc = subprocess.Popen(
        cli_args(termed, **{**extra, "log_every_steps": 1}),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for(lambda: (termed / "checkpoints" / "15").is_dir(), proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out[-2000:]
    assert "SIGTERM: checkpoint written at step" in out
    manager = ocp.CheckpointManager(termed / "checkpoints")
    stopped_at = manager.latest_step()
    assert 15 < stopped_at < 45
    subprocess.run(
        cli_args(termed, **{**extra, "log_every_steps": 1}),
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert_trees_equal(final_params(termed)[1], ref_params)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost_agree(tmp_path):
    port = _free_port()
    env = subprocess_env(devices=2)
    workdir = tmp_path / "mp"
    procs = []
    for pid in range(2):
        args = cli_args(
            workdir,
            num_epochs=1,
            **{
                "distributed.initialize": "explicit",
                "distributed.coordinator_address": f"127.0.0.1:{port}",
                "distributed.num_processes": 2,
                "distributed.process_id": pid,
            },
        )
        procs.append(
            subprocess.Popen(
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    sums = [
        [
            line.split("checksum")[-1].strip()
            for line in out.splitlines()
            if "parameter checksum" in line
        ]
        for out in outs
    ]
    assert sums[0] and sums[0] == sums[1], sums
    assert "joined 2 processes" in outs[1]
    records = read_records(workdir)
    assert records[-1]["type"] == "final" and records[-1]["last"]["num_examples"] == 539
