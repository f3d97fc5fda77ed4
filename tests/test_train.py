"""The training system in-process: outputs, restart, errors, 4-vs-1-device equivalence."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_helpers import (
    assert_trees_equal,
    final_params,
    read_records,
    tiny_config,
)

from fbl_jax import losses
from fbl_jax.models import get_model
from fbl_jax.train import checkpoints as checkpointing
from fbl_jax.train import replication, train_and_evaluate
from fbl_jax.train import steps as train_steps


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
    # which data: the digits' 1,797 images split 70/30 per class, the LT subset trained on
    data = json.loads((workdir / "data.json").read_text())
    assert data["source"] == "synthetic_digits"
    splits = data["splits"]
    assert splits["test"]["images"] == 539 and splits["train"]["images"] == sum(counts)
    assert splits["train_source"]["images"] == 1797 - 539
    minival = [r["num_examples"] for r in evals if r["split"] == "minival"]
    assert splits["minival"]["images"] == minival[0]
    assert splits["train"]["pixel_sum"] != splits["train_source"]["pixel_sum"]
    assert all(len(split["sha256"]) == 64 for split in splits.values())
    # the trained model in one file, the last checkpoint's parameters
    from fbl_jax.train import params_file

    kept = params_file.load_params(workdir / params_file.FILE_NAME)
    step, params = final_params(workdir)
    assert step == 30
    assert_trees_equal(kept["params"], params)
    assert kept["batch_stats"]  # ResNet-8's BatchNorm statistics travel with it


def test_eval_cadence_dense_from_an_epoch(tmp_path):
    """eval_every_epochs=5 over 3 epochs evaluates only the last; from epoch 2 every epoch."""
    from fbl_jax.train.loop import is_eval_epoch

    config = tiny_config(num_epochs=3, eval_every_epochs=5, eval_every_epoch_from=2)
    train_and_evaluate(config, tmp_path)
    evals = [r["epoch"] for r in read_records(tmp_path) if r["type"] == "eval"]
    assert evals == [2.0, 2.0, 3.0, 3.0]  # test and minival at epochs 2 and 3
    config.eval_every_epoch_from = 0  # off: the every-10 cadence alone
    config.eval_every_epochs = 10
    assert [e for e in range(1, 201) if is_eval_epoch(config, e)] == list(range(10, 201, 10))
    config.eval_every_epoch_from = 160  # the CIFAR configs: every 10, then every epoch
    want = [*range(10, 160, 10), *range(160, 201)]
    assert [e for e in range(1, 201) if is_eval_epoch(config, e)] == want


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
    new_state, metrics = p_step(replication.replicate(state, devices), batch)
    first = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], new_state)
    return first, float(metrics["loss"][0])


def test_pmap_on_four_devices_equals_one_device():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 16, 16, 3)).astype(np.float32)
    labels = rng.integers(0, 10, 16).astype(np.int32)
    model = get_model("resnet8", 10)
    variables = model.init(jax.random.key(1, impl="rbg"), jnp.zeros((1, 16, 16, 3)), train=False)
    params, stats = variables["params"], variables["batch_stats"]
    four, loss4 = _one_step(jax.devices()[:4], images, labels, params, stats)
    one, loss1 = _one_step(jax.devices()[:1], images, labels, params, stats)
    assert loss4 == pytest.approx(loss1, rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(four), jax.tree_util.tree_leaves(one)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # and the step did change the parameters (the comparison above is not vacuous)
    moved = jax.tree_util.tree_map(lambda a, b: np.abs(a - b).max(), four.params, params)
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-3


def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path):
    from fbl_jax.train.writers import NonFiniteError

    config = tiny_config(**{"optimizer.learning_rate": 1e12, "optimizer.warmup_epochs": 0.0})
    with pytest.raises(NonFiniteError, match=r"loss is (nan|inf) at step \d+"):
        train_and_evaluate(config, tmp_path)
    # nothing non-finite was checkpointed: the run stopped before its first epoch-end save
    assert not (tmp_path / "checkpoints" / "15").exists()
