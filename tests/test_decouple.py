"""Decoupling / post-hoc methods: the corrections against NumPy, and whole runs end to end.

The source run is hand-made (no trainer, to stay fast): a ResNet-8 trained for a few full-batch
Adam steps with plain CE on strongly long-tailed digits (IF 50), so its classifier favours the
head classes; its variables are written as an fbl-train run directory. Every "before/after"
number is computed here from the model's logits with NumPy, never by the code under test.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from fbl_jax import decouple, report
from fbl_jax.data import build_datasets
from fbl_jax.decouple import config as decouple_config
from fbl_jax.decouple import steps as decouple_steps
from fbl_jax.defaults import config_from_file
from fbl_jax.models import get_model
from fbl_jax.train import checkpoints as checkpointing

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCE_STEP = 30
TRAIN_STEPS = 25  # full-batch Adam steps of the hand-made source run
LR = 0.01
HEAD_BIAS_POWER = 0.3
EPOCHS = 5  # of cRT / LWS
LEARNING_RATES = {"crt": 0.2, "lws": 0.01}


def _source_config():
    config = config_from_file(REPO / "configs" / "demo.py")
    config.model.name = "resnet8"
    config.loss.name = "ce"
    config.num_epochs = 3
    config.data.imbalance_factor = 50.0
    return config


def _init_params(shapes, rng: np.random.Generator):
    """He-normal kernels, unit BN scales, zero biases (NumPy: no slow jitted model.init)."""
    flat = flax.traverse_util.flatten_dict(shapes)
    out = {}
    for path, leaf in flat.items():
        if path[-1] == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            out[path] = rng.normal(0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
        elif path[-1] in ("scale", "var"):
            out[path] = np.ones(leaf.shape, np.float32)
        else:
            out[path] = np.zeros(leaf.shape, np.float32)
    return flax.traverse_util.unflatten_dict(out)


def _stack_split(bundle, split):
    images, labels = [], []
    for batch in bundle.eval_iter(split):
        keep = np.asarray(batch["mask"]).reshape(-1) > 0
        images.append(np.asarray(batch["image"]).reshape(-1, *batch["image"].shape[2:])[keep])
        labels.append(np.asarray(batch["label"]).reshape(-1)[keep])
    return np.concatenate(images), np.concatenate(labels)


def balanced_top1(labels, preds, num_classes):
    return float(np.mean([np.mean(preds[labels == c] == c) for c in range(num_classes)]))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished-run directory with a head-biased classifier, and NumPy-side test data."""
    config = _source_config()
    bundle = build_datasets(config.data, global_batch_size=config.batch_size, seed=config.seed)
    counts = np.asarray(bundle.class_counts)
    assert counts[0] / counts[-1] >= 40  # strongly long-tailed
    pipe = bundle.train
    train_x = (pipe.images.astype(np.float32) / 255.0 - pipe.mean) / pipe.std
    train_y = pipe.labels
    model = get_model("resnet8", 10)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False)
    )
    variables = _init_params(flax.core.unfreeze(shapes), np.random.default_rng(0))
    tx = optax.adam(LR)

    @jax.jit
    def step(params, stats, opt_state):
        def loss_fn(p):
            (logits, _), upd = model.apply(
                {"params": p, "batch_stats": stats}, train_x, train=True, mutable=["batch_stats"]
            )
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean()
            return ce, upd["batch_stats"]

        (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state

    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    for _ in range(TRAIN_STEPS):
        params, stats, opt_state = step(params, stats, opt_state)
    params, stats = jax.device_get((params, stats))
    # Bias the classifier further towards the head: logit j scaled by (n_j / n_min)^power.
    inflate = ((counts / counts.min()) ** HEAD_BIAS_POWER).astype(np.float32)
    head = params["head"]
    params["head"] = {"kernel": head["kernel"] * inflate, "bias": head["bias"] * inflate}

    run = tmp_path_factory.mktemp("runs") / "ce_source"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_dict(), default=list))
    names = list(bundle.class_names)
    (run / "class_counts.json").write_text(
        json.dumps({"counts": counts.tolist(), "class_names": names})
    )
    ckpts = checkpointing.Checkpoints(run, 1)
    state = {"params": params, "batch_stats": stats, "step": np.asarray(SOURCE_STEP)}
    ckpts.save(state, {"step": SOURCE_STEP}, best=True)
    ckpts.save(state, {"step": SOURCE_STEP})
    ckpts.close()

    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    test_x, test_y = _stack_split(bundle, "test")
    logits = np.asarray(apply({"params": params, "batch_stats": stats}, test_x)[0])
    return {
        "run": run,
        "counts": counts,
        "params": params,
        "batch_stats": stats,
        "apply": apply,
        "test_x": test_x,
        "test_y": test_y,
        "logits": logits,
        "before": balanced_top1(test_y, logits.argmax(1), 10),
    }


def _config(method, source_run, **fields):
    config = decouple_config.default_config()
    config.method = method
    config.from_run = str(source_run)
    for key, value in fields.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _records(workdir):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# ----------------------------------------------------------------------------- pure corrections


def test_tau_normalize_matches_numpy():
    w = (np.random.default_rng(1).normal(size=(6, 4)) * [1, 3, 0.2, 7]).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(decouple_steps.tau_normalize(w, 0.0)), w)
    unit = np.asarray(decouple_steps.tau_normalize(w, 1.0))
    np.testing.assert_allclose(np.linalg.norm(unit, axis=0), np.ones(4), rtol=1e-6)
    np.testing.assert_allclose(unit, w / np.linalg.norm(w, axis=0), rtol=1e-6)
    half = np.asarray(decouple_steps.tau_normalize(w, 0.5))
    np.testing.assert_allclose(half, w / np.sqrt(np.linalg.norm(w, axis=0)), rtol=1e-6)


def test_tau_zero_leaves_predictions_unchanged(source):
    params = decouple_steps.tau_normalized_params(source["params"], 0.0)
    np.testing.assert_array_equal(params["head"]["bias"], source["params"]["head"]["bias"])
    v = {"params": params, "batch_stats": source["batch_stats"]}
    logits = np.asarray(source["apply"](v, source["test_x"])[0])
    np.testing.assert_array_equal(logits, source["logits"])


def test_tau_norm_needs_a_linear_head():
    with pytest.raises(ValueError, match="linear classifier 'head'"):
        decouple_steps.tau_normalized_params({"head": {"kernel": np.ones((3, 2))}}, 1.0)


def test_posthoc_bias_uniform_prior_changes_nothing_and_skewed_matches_numpy():
    z = np.random.default_rng(2).normal(size=(50, 5)).astype(np.float32)
    uniform = decouple_steps.posthoc_bias([7, 7, 7, 7, 7], 1.3)
    assert np.ptp(uniform) == 0  # the same shift for every class
    np.testing.assert_array_equal((z + uniform).argmax(1), z.argmax(1))
    counts = np.array([500, 100, 20, 5, 1])
    for tau in (0.5, 1.0, 2.0):
        want = z - tau * np.log(counts / counts.sum())
        np.testing.assert_allclose(z + decouple_steps.posthoc_bias(counts, tau), want, rtol=1e-5)


# ----------------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def tau_norm_run(source, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "tau_norm"
    result = decouple.run_decouple(_config("tau_norm", source["run"]), workdir)
    return workdir, result


def test_tau_norm_run_picks_tau_on_minival_and_records_it(source, tau_norm_run):
    workdir, result = tau_norm_run
    config = json.loads((workdir / "config.json").read_text())
    assert config["decouple"]["method"] == "tau_norm"
    assert config["decouple"]["tau"] == result.tau
    assert config["decouple"]["from_run"] == str(source["run"].resolve())
    assert config["model"] == json.loads((source["run"] / "config.json").read_text())["model"]
    records = _records(workdir)
    final = records[-1]
    assert final["type"] == "final" and final["tau"] == result.tau
    sweep = final["tau_sweep"]
    assert [s["tau"] for s in sweep] == list(decouple_config.TAU_GRID)
    best = max(s["minival_balanced_top1"] for s in sweep)
    assert result.tau == next(s["tau"] for s in sweep if s["minival_balanced_top1"] == best)
    # the test record is the model with w_j / ||w_j||^tau, predicted here with NumPy
    head = source["params"]["head"]
    kernel = head["kernel"] / np.linalg.norm(head["kernel"], axis=0) ** result.tau
    params = {**source["params"], "head": {"kernel": kernel, "bias": head["bias"]}}
    feats = source["apply"](
        {"params": params, "batch_stats": source["batch_stats"]}, source["test_x"]
    )
    preds = np.asarray(feats[0]).argmax(1)
    test = [r for r in records if r["type"] == "eval" and r["split"] == "test"]
    assert len(test) == 1 and final["last"] == test[0] == final["best_on_minival"]
    want = balanced_top1(source["test_y"], preds, 10)
    assert test[0]["balanced_top1"] == pytest.approx(want, abs=1e-9)
    assert test[0]["step"] == SOURCE_STEP and test[0]["num_examples"] == len(source["test_y"])


def test_tau_norm_with_only_tau_zero_reproduces_the_source(source, tmp_path):
    result = decouple.run_decouple(
        _config("tau_norm", source["run"], **{"tau_norm.taus": (0.0,)}), tmp_path / "t0"
    )
    last = result.final["last"]
    preds, y = source["logits"].argmax(1), source["test_y"]
    want = np.zeros((10, 10), int)
    np.add.at(want, (y, preds), 1)
    np.testing.assert_array_equal(np.array(last["confusion"]), want)
    assert last["top1"] == pytest.approx(np.mean(preds == y))


def test_la_posthoc_equals_numpy_logit_adjustment(source, tmp_path):
    tau = 1.5
    result = decouple.run_decouple(
        _config("la_posthoc", source["run"], **{"la_posthoc.taus": (tau,)}), tmp_path / "la"
    )
    prior = source["counts"] / source["counts"].sum()
    preds = (source["logits"] - tau * np.log(prior)).argmax(1)
    y = source["test_y"]
    per_class = [np.mean(preds[y == c] == c) for c in range(10)]
    np.testing.assert_allclose(result.final["last"]["per_class_accuracy"], per_class)
    assert result.final["tau"] == tau
    # the adjustment moves predictions away from the head classes here
    assert balanced_top1(y, preds, 10) > source["before"]


def _assert_backbone_untouched(source, result, method):
    # what the checkpoint holds, read back independently with orbax
    manager = ocp.CheckpointManager(source["run"] / "best")
    saved = manager.restore(
        SOURCE_STEP, args=ocp.args.Composite(state=ocp.args.StandardRestore(None))
    )["state"]
    manager.close()
    flat_new = flax.traverse_util.flatten_dict(result.params)
    flat_old = flax.traverse_util.flatten_dict(saved["params"])
    assert flat_new.keys() == flat_old.keys()
    for key in flat_old:
        if method == "crt" and key[0] == "head":
            assert not np.array_equal(flat_new[key], flat_old[key]), key
        else:
            np.testing.assert_array_equal(flat_new[key], flat_old[key], err_msg=str(key))
    stats_new = flax.traverse_util.flatten_dict(result.batch_stats)
    stats_old = flax.traverse_util.flatten_dict(saved["batch_stats"])
    assert stats_new.keys() == stats_old.keys()
    for key in stats_old:
        np.testing.assert_array_equal(stats_new[key], stats_old[key], err_msg=str(key))


@pytest.mark.parametrize("method", ["crt", "lws"])
def test_crt_and_lws_keep_the_backbone_and_rebalance(source, tmp_path_factory, method, caplog):
    workdir = tmp_path_factory.mktemp("runs") / method
    config = _config(
        method,
        source["run"],
        **{f"{method}.epochs": EPOCHS, f"{method}.optimizer.learning_rate": LEARNING_RATES[method]},
    )
    caplog.set_level(logging.INFO, logger="fbl_jax")
    result = decouple.run_decouple(config, workdir)
    _assert_console_in_percent(caplog, workdir, method)
    _assert_backbone_untouched(source, result, method)
    v = {"params": result.params, "batch_stats": result.batch_stats}
    logits = np.asarray(source["apply"](v, source["test_x"])[0])
    logits = logits * result.logit_scale + result.logit_bias
    after = balanced_top1(source["test_y"], logits.argmax(1), 10)
    assert after > source["before"] + 0.1, (source["before"], after)
    if method == "lws":
        assert np.ptp(result.logit_scale) > 0  # the scales did move apart
    # the run's best-on-minival record describes the returned model
    assert result.final["best_on_minival"]["balanced_top1"] == pytest.approx(after, abs=1e-9)
    # the trained part is in best/ at the chosen step
    manager = ocp.CheckpointManager(workdir / "best")
    step = manager.latest_step()
    saved = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(None)))
    manager.close()
    assert step == result.final["best_step"]
    if method == "crt":
        trained = saved["state"]["head"]["kernel"]
        np.testing.assert_array_equal(trained, result.params["head"]["kernel"])
    else:
        np.testing.assert_array_equal(saved["state"]["scale"], result.logit_scale)
    evals = [r for r in _records(workdir) if r["type"] == "eval"]
    assert [(r["step"], r["split"]) for r in evals][:2] == [(10, "test"), (10, "minival")]
    assert len(evals) == 2 * EPOCHS


def _assert_console_in_percent(caplog, workdir, method):
    """Console accuracies are percent (as fbl-train's), metrics.jsonl's stay fractions."""
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("fbl_jax")]
    records = _records(workdir)
    trains = [r for r in records if r["type"] == "train"]
    assert len(trains) == EPOCHS and all(0 <= r["train_top1"] <= 1 for r in trains)
    for r in trains:
        want = f"{method} epoch {int(r['epoch'])}/{EPOCHS} | loss {r['loss']:.4f} | "
        want += f"train top-1 {100 * r['train_top1']:.2f} |"
        assert any(line.startswith(want) for line in lines), (want, lines)
    final = records[-1]
    last, best = final["last"], final["best_on_minival"]
    assert 0 <= last["top1"] <= 1
    want = f"{method}: test top-1 last {100 * last['top1']:.2f}, best-on-minival "
    want += f"{100 * best['top1']:.2f} (step {final['best_step']})"
    assert want in lines
    test_evals = [r for r in records if r["type"] == "eval" and r["split"] == "test"]
    assert any(f"top1 {100 * test_evals[-1]['top1']:.2f}," in line for line in lines)


def test_tau_sweep_is_logged_in_percent(source, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fbl_jax")
    config = _config("la_posthoc", source["run"], **{"la_posthoc.taus": (0.0, 1.0)})
    result = decouple.run_decouple(config, tmp_path / "la")
    sweep = result.final["tau_sweep"]
    assert all(0 <= s["minival_balanced_top1"] <= 1 for s in sweep)  # the file: fractions
    a, b = (100 * s["minival_balanced_top1"] for s in sweep)
    lines = [r.getMessage() for r in caplog.records]
    want = f"minival balanced top-1 (%) by tau: 0: {a:.2f}, 1: {b:.2f}; best tau {result.tau:g}"
    assert want in lines, lines
    top1 = 100 * result.final["last"]["top1"]
    assert f"la_posthoc: tau {result.tau:g}, test top-1 {top1:.2f}" in lines


# ----------------------------------------------------------------------------- report, errors, CLI


def test_report_reads_decoupled_runs(tau_norm_run, tmp_path):
    workdir, result = tau_norm_run
    rep = report.make_report([workdir], tmp_path / "report", figures=False)
    (run_summary,) = rep.summary["runs"]
    assert result.tau in decouple_config.TAU_GRID  # one decimal: shown as e.g. 'τ=0.8', 'τ=1.0'
    assert run_summary["method"] == f"CE + τ-norm (τ={result.tau:.1f})"
    assert run_summary["finished"]
    assert run_summary["last"]["top1"] == result.final["last"]["top1"]
    assert run_summary["best_on_minival"]["balanced_top1"] == result.final["last"]["balanced_top1"]
    (setting,) = rep.summary["settings"]
    assert setting["metrics"]["top1_last"]["mean"] == result.final["last"]["top1"]
    assert (
        f"| CE + τ-norm (τ={result.tau:.1f}) |" in (tmp_path / "report" / "summary.md").read_text()
    )


def test_clear_errors(source, tau_norm_run, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        decouple.run_decouple(_config("la_posthoc", missing), tmp_path / "a")
    no_best = tmp_path / "no_best"
    shutil.copytree(source["run"], no_best)
    shutil.rmtree(no_best / "best")
    with pytest.raises(FileNotFoundError, match=str(no_best / "best")):
        decouple.run_decouple(_config("la_posthoc", no_best), tmp_path / "b")
    with pytest.raises(ValueError, match="itself a decoupled run"):
        decouple.run_decouple(_config("la_posthoc", tau_norm_run[0]), tmp_path / "c")
    with pytest.raises(ValueError, match=r"choose one of \('tau_norm'"):
        decouple.run_decouple(_config("tau", source["run"]), tmp_path / "d")
    with pytest.raises(ValueError, match="checkpoint='latest'"):
        decouple.run_decouple(_config("crt", source["run"], checkpoint="latest"), tmp_path / "e")
    config = _config("crt", source["run"])
    with config.unlocked():
        config.crt.epoch = 3
    with pytest.raises(ValueError, match=r"config.crt.epoch; did you mean \['epochs'\]"):
        decouple.run_decouple(config, tmp_path / "f")
    with pytest.raises(FileExistsError, match="already holds a run"):
        decouple.run_decouple(_config("la_posthoc", source["run"]), tau_norm_run[0])


def test_cli_flags_and_config_overrides_reach_the_run(source, tmp_path):
    no_last = tmp_path / "no_last"
    shutil.copytree(source["run"], no_last)
    shutil.rmtree(no_last / "checkpoints")
    args = [
        sys.executable,
        "-m",
        "fbl_jax.cli.decouple",
        "--method=crt",
        f"--from={no_last}",
        f"--workdir={tmp_path / 'out'}",
        "--config.checkpoint=last",
        "--config.crt.epochs=2",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode != 0
    # the override reached the run: it looked for the LAST checkpoint of the --from directory
    assert f"no 'last' checkpoint: {no_last / 'checkpoints'} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr  # a wrong path is reported, not dumped


def test_a_run_kept_with_only_its_final_parameters_decouples_the_same(source, tmp_path):
    """A run directory kept as a result (final_params.npz, no checkpoints): checkpoint='last'
    reproduces the source's predictions from the file; 'best' says what the run lacks."""
    from fbl_jax.train import params_file

    kept = tmp_path / "kept"
    kept.mkdir()
    for name in ("config.json", "class_counts.json"):
        (kept / name).write_text((source["run"] / name).read_text())
    params_file.save_params(kept / params_file.FILE_NAME, source["params"], source["batch_stats"])
    variables = params_file.load_params(kept / params_file.FILE_NAME)
    for key, value in flax.traverse_util.flatten_dict(source["params"]).items():
        np.testing.assert_array_equal(
            flax.traverse_util.flatten_dict(variables["params"])[key], value
        )
    result = decouple.run_decouple(
        _config("tau_norm", kept, checkpoint="last", **{"tau_norm.taus": (0.0,)}), tmp_path / "t0"
    )
    preds, y = source["logits"].argmax(1), source["test_y"]
    assert result.final["last"]["top1"] == pytest.approx(np.mean(preds == y))
    with pytest.raises(FileNotFoundError, match="keeps only its final parameters"):
        decouple.run_decouple(_config("tau_norm", kept), tmp_path / "best")


def test_a_stop_during_crt_removes_the_cut_short_run(source, tmp_path, monkeypatch):
    """SIGTERM (or a budget) mid-cRT: exit 143 after the epoch, its directory gone, so the same
    command redoes the minutes of work instead of refusing a half-written run."""
    from fbl_jax.decouple.context import DecoupleContext
    from fbl_jax.train import preemption

    original = DecoupleContext.evaluate_all

    def stop_after_first_eval(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        preemption.request_stop()
        return out

    monkeypatch.setattr(DecoupleContext, "evaluate_all", stop_after_first_eval)
    config = _config("crt", source["run"], **{"crt.epochs": 2})
    with preemption.stop_scope(), pytest.raises(preemption.Preempted):
        decouple.run_decouple(config, tmp_path / "crt")
    assert not (tmp_path / "crt").exists()


def _write_image_folder(root: pathlib.Path, per_class: int, seed: int) -> dict[str, list]:
    """ROOT/{train,test}/class<c>/*.webp, random 32x32 lossless images; the test arrays."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    test = {}
    for split, n in (("train", per_class), ("test", 6)):
        for c in range(3):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            arrays = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]
            for i, a in enumerate(arrays):
                Image.fromarray(a).save(folder / f"{i:02d}.webp", format="WEBP", lossless=True)
            if split == "test":
                test[f"class{c}"] = arrays
    return test


def test_a_kept_run_decouples_on_another_machine_from_its_data_there(tmp_path):
    """A run kept in results/ names the data folder of the machine it trained on: data.root
    points at this machine's copy, which must be the same pixels (data.json's fingerprints)."""
    from fbl_jax.train import params_file
    from fbl_jax.train.run_setup import write_run_files

    trained_at, here, other = (tmp_path / m / "tiny" for m in ("a", "b", "c"))
    test = _write_image_folder(trained_at, per_class=30, seed=0)
    config = config_from_file(REPO / "configs" / "cifar10_lt.py")
    config.data.root = str(trained_at)
    config.data.num_classes, config.data.imbalance_factor = 3, 3.0
    config.data.minival_per_class = 5
    config.model.name, config.batch_size = "resnet8", 8
    bundle = build_datasets(config.data, global_batch_size=8, seed=config.seed)
    run = tmp_path / "results" / "run"
    run.mkdir(parents=True)
    write_run_files(run, config, bundle)
    model = get_model("resnet8", 3)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )
    variables = _init_params(flax.core.unfreeze(shapes), np.random.default_rng(1))
    params_file.save_params(
        run / params_file.FILE_NAME, variables["params"], variables["batch_stats"]
    )
    shutil.copytree(trained_at, here)
    shutil.copytree(trained_at, other)
    shutil.rmtree(trained_at)  # the machine it trained on is not this one
    tau0 = {"checkpoint": "last", "tau_norm.taus": (0.0,)}

    with pytest.raises(FileNotFoundError, match=r"does not exist.*--config\.data\.root=DIR"):
        decouple.run_decouple(_config("tau_norm", run, **tau0), tmp_path / "nowhere")
    result = decouple.run_decouple(
        _config("tau_norm", run, **tau0, **{"data.root": str(here)}), tmp_path / "here"
    )
    x = np.stack([a for c in sorted(test) for a in test[c]]).astype(np.float32) / 255.0
    x = (x - np.asarray(config.data.mean)) / np.asarray(config.data.std)
    y = np.repeat(np.arange(3), 6)
    logits = np.asarray(model.apply(variables, jnp.asarray(x, jnp.float32), train=False)[0])
    assert result.final["last"]["top1"] == pytest.approx(np.mean(logits.argmax(1) == y))
    written = json.loads((tmp_path / "here" / "config.json").read_text())
    assert written["data"]["root"] == str(here)
    recorded = json.loads((run / "data.json").read_text())["splits"]
    evaluated = json.loads((tmp_path / "here" / "data.json").read_text())["splits"]
    assert evaluated["test"]["sha256"] == recorded["test"]["sha256"]

    from PIL import Image  # another copy: one test image's pixels differ

    changed = np.asarray(Image.open(other / "test/class1/03.webp")).copy()
    changed[0, 0, 0] ^= 1
    Image.fromarray(changed).save(other / "test/class1/03.webp", format="WEBP", lossless=True)
    with pytest.raises(ValueError, match=r"test split\(s\) differ.*--config\.data\.root"):
        decouple.run_decouple(
            _config("tau_norm", run, **tau0, **{"data.root": str(other)}), tmp_path / "other"
        )
