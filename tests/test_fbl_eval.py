"""fbl-eval: a run directory's model, a kept run's final_params.npz and PyTorch-named weights,
each evaluated on its data and compared with NumPy on the model's logits. The run is hand-made
(He-initialised ResNet-8 variables written as an fbl-train run directory, no trainer), so the
reference is not the trainer's evaluation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_decouple import _init_params, _source_config, _stack_split

from fbl_jax import evaluate_model
from fbl_jax.data import build_datasets
from fbl_jax.errors import ConfigError, DataError
from fbl_jax.models import get_model
from fbl_jax.models.pretrained import export_to_torch
from fbl_jax.train import checkpoints as checkpointing
from fbl_jax.train import params_file

STEP = 30


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A run directory (config, class counts, last and best checkpoints) and its test data."""
    config = _source_config()
    bundle = build_datasets(config.data, global_batch_size=config.batch_size, seed=config.seed)
    model = get_model("resnet8", 10)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False)
    )
    variables = _init_params(flax.core.unfreeze(shapes), np.random.default_rng(1))
    run = tmp_path_factory.mktemp("runs") / "source"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_dict(), default=list))
    counts = {"counts": np.asarray(bundle.class_counts).tolist(), "class_names": bundle.class_names}
    (run / "class_counts.json").write_text(json.dumps(counts, default=list))
    ckpts = checkpointing.Checkpoints(run, 1)
    state = {**variables, "step": np.asarray(STEP)}
    ckpts.save(state, {"step": STEP}, best=True)
    ckpts.save(state, {"step": STEP})
    ckpts.close()
    test_x, test_y = _stack_split(bundle, "test")
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    return {"run": run, **variables, "apply": apply, "test_x": test_x, "test_y": test_y}


def _numpy_metrics(src) -> dict:
    """Top-1, per-class accuracy and mean feature norm over the test images, from the logits."""
    variables = {"params": src["params"], "batch_stats": src["batch_stats"]}
    logits, out = src["apply"](variables, src["test_x"])
    pred, y = np.asarray(logits).argmax(1), src["test_y"]
    norms = np.linalg.norm(np.asarray(out["features"]), axis=1)
    return {
        "top1": float(np.mean(pred == y)),
        "per_class_accuracy": [float(np.mean(pred[y == c] == c)) for c in range(10)],
        "mean_feature_norm": float(norms.mean()),
        "num_examples": int(y.size),
    }


def _assert_matches(record: dict, want: dict) -> None:
    assert record["num_examples"] == want["num_examples"]  # every test image once
    assert record["top1"] == pytest.approx(want["top1"], abs=1e-6)
    np.testing.assert_allclose(record["per_class_accuracy"], want["per_class_accuracy"], atol=1e-6)
    assert record["mean_feature_norm"] == pytest.approx(want["mean_feature_norm"], rel=1e-4)


def test_a_run_directory_and_a_kept_run_evaluate_as_numpy(source, tmp_path):
    want = _numpy_metrics(source)
    for checkpoint in ("last", "best"):
        result = evaluate_model.evaluate_run(source["run"], checkpoint)
        assert set(result.records) == {"test", "minival"}
        _assert_matches(result.records["test"], want)
    kept = tmp_path / "kept"
    shutil.copytree(source["run"], kept)
    shutil.rmtree(kept / "checkpoints")
    shutil.rmtree(kept / "best")
    params_file.save_params(kept / params_file.FILE_NAME, source["params"], source["batch_stats"])
    result = evaluate_model.evaluate_run(kept, "last")
    assert result.weights.endswith(params_file.FILE_NAME)
    _assert_matches(result.records["test"], want)
    decoupled = tmp_path / "decoupled"
    decoupled.mkdir()
    config = {**json.loads((kept / "config.json").read_text()), "decouple": {"method": "crt"}}
    (decoupled / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="is a decoupled run"):
        evaluate_model.evaluate_run(decoupled)
    with pytest.raises(FileNotFoundError, match="source run directory .* does not exist"):
        evaluate_model.evaluate_run(tmp_path / "none")


def _eval_config():
    """The source run's model and data as a valid training config (its 3 epochs sit inside the
    demo's decay epochs; evaluation reads neither)."""
    config = _source_config()
    config.num_epochs = 30
    return config


def test_weights_with_a_config_final_params_and_pytorch_names(source, tmp_path):
    want = _numpy_metrics(source)
    ours = tmp_path / params_file.FILE_NAME
    params_file.save_params(ours, source["params"], source["batch_stats"])
    torch_named = tmp_path / "ckpt_torch.npz"
    variables = {"params": source["params"], "batch_stats": source["batch_stats"]}
    np.savez(torch_named, **export_to_torch(variables))
    for weights in (ours, torch_named):
        result = evaluate_model.evaluate_weights(_eval_config(), weights)
        _assert_matches(result.records["test"], want)
    other = _eval_config()
    other.model.name = "resnet20"
    with pytest.raises(DataError, match="does not fit the config's model"):
        evaluate_model.evaluate_weights(other, ours)
    with pytest.raises(DataError, match="state dict does not match the model"):
        evaluate_model.evaluate_weights(other, torch_named)


def test_the_cli_writes_the_records_and_names_bad_input(source, tmp_path):
    out = tmp_path / "eval.json"
    cmd = [sys.executable, "-m", "fbl_jax.cli.evaluate"]
    done = subprocess.run(
        [*cmd, f"--from={source['run']}", f"--out={out}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "eval test @" in done.stderr
    written = json.loads(out.read_text())
    _assert_matches(written["records"]["test"], _numpy_metrics(source))
    assert written["weights"].endswith(str(source["run"] / "checkpoints" / str(STEP)))
    for args, message in (
        ([], "give --from=RUN_DIR, or --config=FILE with --weights=FILE"),
        ([f"--from={source['run']}", "--weights=x.npz"], "--weights goes with --config"),
    ):
        bad = subprocess.run([*cmd, *args], capture_output=True, text=True)
        assert bad.returncode == 2, bad.stderr
        (line,) = [ln for ln in bad.stderr.splitlines() if ln.strip()]
        assert line.startswith("fbl-eval: error: ") and message in line, line
