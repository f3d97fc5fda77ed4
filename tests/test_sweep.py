"""fbl-sweep: the --set product and its programs, and that a sweep's runs are the single runs:
same steps (on 4 devices vs 1), same data, exact resume, a diverged run stopped alone. The shared
loss formula is tested in tests/test_loss_kinds.py."""

import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_helpers import final_params, read_records, tiny_config

from fbl_jax import losses
from fbl_jax.data import build_datasets
from fbl_jax.data.device_pipeline import DevicePipeline
from fbl_jax.defaults import ConfigError
from fbl_jax.report.run_dir import load_run
from fbl_jax.train import checkpoints as checkpointing
from fbl_jax.train import optimizer as optim
from fbl_jax.train import programs as sweep_spec
from fbl_jax.train import replication, train_and_evaluate, train_sweep
from fbl_jax.train import steps as train_steps
from fbl_jax.train.run_setup import build_model, init_train_state, load_data
from fbl_jax.train.runners import ProgramRunner

# ----------------------------------------------------------------------------- the product


def test_parse_set_values():
    assert sweep_spec.parse_set("seed=0,1,2") == ("seed", [0, 1, 2])
    assert sweep_spec.parse_set("loss.name=ce,fbl") == ("loss.name", ["ce", "fbl"])
    assert sweep_spec.parse_set("config.loss.fbl_scale=15,30.5") == ("loss.fbl_scale", [15, 30.5])
    key, values = sweep_spec.parse_set("optimizer.decay_epochs=(160,180),(120,160)")
    assert key == "optimizer.decay_epochs" and values == [(160, 180), (120, 160)]
    for bad in ("seed", "seed=", "=1,2", "seed=1,,2"):
        with pytest.raises(ConfigError, match="KEY=V1,V2|give a key"):
            sweep_spec.parse_set(bad)


def test_expand_is_the_cartesian_product_with_named_runs():
    runs = sweep_spec.expand(tiny_config(), [("seed", [0, 1]), ("loss.name", ["ce", "fbl", "la"])])
    assert [r.name for r in runs] == [
        f"seed={s},loss.name={n}" for s in (0, 1) for n in ("ce", "fbl", "la")
    ]
    assert [(r.config.seed, r.config.loss.name) for r in runs] == [
        (s, n) for s in (0, 1) for n in ("ce", "fbl", "la")
    ]
    assert isinstance(runs[0].config.loss.fbl_scale, float)


@pytest.mark.parametrize(
    "sets, match",
    [
        ([("loss.nmae", ["ce"])], "did you mean name"),
        ([("loss.name", ["nonsense"])], "config.loss.name='nonsense'"),
        ([("seed", [0]), ("seed", [1])], "more than once"),
        ([("num_epochs", [0])], "num_epochs=0"),
        ([("optimizer.learning_rate", [True])], "takes a float, not a bool"),
    ],
)
def test_expand_rejects_bad_sets(sets, match):
    with pytest.raises(ConfigError, match=match):
        sweep_spec.expand(tiny_config(), sets)


def test_programs_split_only_where_runs_cannot_share_one():
    runs = sweep_spec.expand(
        tiny_config(),
        [
            ("seed", [0, 1]),
            ("loss.name", ["ce", "fbl", "focal", "balanced_softmax"]),
            ("loss.curriculum", ["parabolic", "sine"]),
        ],
    )
    assert len(sweep_spec.group_programs(runs)) == 1
    runs = sweep_spec.expand(
        tiny_config(), [("seed", [0, 1]), ("model.name", ["resnet8", "resnet20"])]
    )
    programs = sweep_spec.group_programs(runs)
    assert [len(p.runs) for p in programs] == [2, 2]
    assert sweep_spec.differences(programs) == ["model.name"]


# ----------------------------------------------------------------------------- the steps

RUNS = [(0, {"name": "fbl"}), (1, {"name": "la", "la_tau": 1.0})]  # other seeds, other losses


def _single_run_params(config, seed, loss_kw, steps):
    """One run made as fbl-train makes it, on ONE device, pipeline built with `seed`."""
    config = tiny_config(seed=seed, **{f"loss.{k}": v for k, v in loss_kw.items()})
    bundle = build_datasets(
        config.data, global_batch_size=config.batch_size, seed=seed,
        eval_batch_size=config.eval_batch_size, num_epochs=config.num_epochs,
    )  # fmt: skip
    model = build_model(config, bundle.num_classes)
    spe = bundle.steps_per_epoch
    lr = optim.make_lr_schedule(config.optimizer, spe, config.num_epochs)
    rng = jax.random.key(seed, impl="rbg")
    variables = train_steps.init_variables(rng, model, bundle.image_shape)
    tx = optim.make_optimizer(config.optimizer, lr, variables["params"], config.model.freeze)
    state = train_steps.create_train_state(rng, model, bundle.image_shape, tx, variables)
    loss_fn = losses.make_loss(config.loss, bundle.class_counts, config.num_epochs)
    p4 = bundle.train  # built for the 4 devices: the same global batch, on one device
    pipeline = DevicePipeline(
        p4.images, p4.labels, p4.sampler, global_batch_size=p4.global_batch_size,
        mean=p4.mean, std=p4.std, num_devices=1, pad=p4.pad, crop_size=p4.crop_size,
        flip=p4.flip, seed=p4.seed, mixup_alpha=p4.mixup_alpha,
    )  # fmt: skip

    def make_batch(d, step):
        return pipeline.batch(d, step, jax.lax.axis_index(train_steps.AXIS))

    step_fn = train_steps.make_train_step(model, loss_fn, tx, lr, spe, make_batch)
    device = jax.devices()[:1]
    p_step = jax.pmap(step_fn, axis_name=train_steps.AXIS, devices=device)
    p_state = replication.replicate(state, device)
    data = replication.replicate(pipeline.device_data(), device)
    for _ in range(steps):
        p_state, _ = p_step(p_state, data)
    return replication.first_replica(p_state)


def test_vmapped_program_steps_on_four_devices_equal_single_runs_on_one():
    """The accelerators' run axis: two runs vmapped in one program. The CPU's sequential axis is
    the bit-for-bit test below (a sweep's run is its fbl-train run), and 4 devices against 1 for
    a plain run is tests/test_train.py's."""
    run_axis = "vmap"
    steps = 3
    assert jax.device_count() == 4
    configs = [
        tiny_config(seed=s, sweep_run_axis=run_axis, **{f"loss.{k}": v for k, v in kw.items()})
        for s, kw in RUNS
    ]
    bundle = load_data(tiny_config(seed=123))  # each run brings its own data seed
    model = build_model(configs[0], bundle.num_classes)
    lr = optim.make_lr_schedule(configs[0].optimizer, bundle.steps_per_epoch, 2)
    states, txs = zip(*[init_train_state(c, model, bundle.image_shape, lr) for c in configs])
    program = ProgramRunner(configs, bundle, model, txs[0], lr, list(states))
    assert program.axis == run_axis
    for step in range(steps):
        metrics, done, _ = program.advance(step, 1, [True] * len(RUNS))
        assert done == 1
    assert [int(m["step"][0, -1]) for m in metrics] == [steps - 1] * len(RUNS)
    swept = [program.host_state(r) for r in range(len(RUNS))]
    for r, (seed, kw) in enumerate(RUNS):
        single = _single_run_params(configs[0], seed, kw, steps)
        for part in ("params", "batch_stats"):
            flat_s = flax.traverse_util.flatten_dict(getattr(single, part))
            flat_w = flax.traverse_util.flatten_dict(getattr(swept[r], part))
            assert flat_s.keys() == flat_w.keys()
            for name in flat_s:
                want = np.asarray(flat_s[name]).reshape(flat_w[name].shape)
                np.testing.assert_allclose(
                    flat_w[name], want, rtol=2e-4, atol=2e-5, err_msg=f"run {r} {name}"
                )
    # the runs really differ (different seeds and losses moved them apart)
    name = next(iter(flax.traverse_util.flatten_dict(swept[0].params)))
    w = [flax.traverse_util.flatten_dict(s.params)[name] for s in swept]
    assert np.abs(w[0] - w[1]).max() > 1e-3


def test_a_sweep_run_sees_the_data_of_the_single_run_with_its_seed():
    config = tiny_config()
    kw = dict(
        global_batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        num_epochs=config.num_epochs,
    )
    shared = build_datasets(config.data, seed=99, **kw).train
    data = shared.device_data()
    for seed in (0, 5):
        own = build_datasets(config.data, seed=seed, **kw).train
        for step in (0, 14, 15, 31):  # within, at the end of, and across epochs
            for dev in (0, 3):
                want = own.batch(data, step, dev)
                got = shared.batch(data, step, dev, seed=jnp.int32(seed))
                np.testing.assert_array_equal(got["label"], want["label"])
                np.testing.assert_array_equal(got["image"], want["image"])


# ----------------------------------------------------------------------------- whole sweeps

SETS = [("seed", [1]), ("loss.name", ["fbl", "la"])]  # two runs, two compiled programs


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    return workdir, train_sweep(tiny_config(), SETS, workdir)


def test_sweep_writes_ordinary_run_directories(finished_sweep):
    workdir, finals = finished_sweep
    names = [f"seed=1,loss.name={n}" for n in ("fbl", "la")]
    assert sorted(finals) == sorted(names)
    spec = json.loads((workdir / "sweep.json").read_text())
    assert spec["programs"] == [names]
    for name in names:
        run_dir = workdir / name
        config = json.loads((run_dir / "config.json").read_text())
        seed, loss = name.split(",")
        assert config["seed"] == int(seed.split("=")[1])
        assert config["loss"]["name"] == loss.split("=")[1]
        for part in ("metrics.jsonl", "class_counts.json", "tensorboard", "checkpoints", "best"):
            assert (run_dir / part).exists(), (name, part)
        run, problems = load_run(run_dir, name)
        assert run is not None and problems == [], problems
        assert run.final == finals[name]
        assert 0.0 <= finals[name]["last"]["top1"] <= 1.0


def _without_timing(records):
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


def test_sweep_runs_equal_their_single_runs_bit_for_bit(finished_sweep, tmp_path):
    """On the CPU every run of a sweep, and a sweep of one run, is the fbl-train run of its
    config: the same metrics.jsonl records (timing aside) and the same parameters, exactly."""
    workdir, finals = finished_sweep
    single = tmp_path / "single"
    final = train_and_evaluate(tiny_config(seed=1, **{"loss.name": "la"}), single)
    assert final == finals["seed=1,loss.name=la"]
    one = tmp_path / "one_run_sweep"
    train_sweep(tiny_config(**{"loss.name": "la"}), [("seed", [1])], one)
    want = _without_timing(read_records(single))
    for run_dir in (workdir / "seed=1,loss.name=la", one / "seed=1"):
        assert _without_timing(read_records(run_dir)) == want, run_dir
        step, params = final_params(run_dir)
        ref_step, ref_params = final_params(single)
        assert step == ref_step == 30
        for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref_params)):
            np.testing.assert_array_equal(a, b)
    assert finals["seed=1,loss.name=fbl"] != final  # another loss is another run


def test_another_sweep_in_the_same_workdir_is_an_error(finished_sweep):
    workdir, _ = finished_sweep
    with pytest.raises(ConfigError, match="another sweep"):
        train_sweep(tiny_config(), [("seed", [3])], workdir)


def test_a_diverging_run_stops_alone(tmp_path):
    config = tiny_config(  # the accelerators' path: runs vmapped, one-call (scanned) evaluation
        **{"num_epochs": 1, "loss.alpha_per_epoch": False, "loss.curriculum": "linear"},
        eval_in_one_call="always",
        sweep_run_axis="vmap",
    )
    finals = train_sweep(config, [("loss.fbl_scale", [60.0, 1e38])], tmp_path)
    good, bad = finals["loss.fbl_scale=60.0"], finals["loss.fbl_scale=1e+38"]
    assert "failed" not in good and good["last"]["top1"] > 0
    assert good["last"]["num_examples"] == 539  # the demo's test split, every image once
    assert bad["failed"].startswith("loss is") and "at step" in bad["failed"]
    records = [
        json.loads(line)
        for line in (tmp_path / "loss.fbl_scale=1e+38" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["type"] for r in records].count("failed") == 1
    failed_at = next(r["step"] for r in records if r["type"] == "failed")
    ckpt_dir = tmp_path / "loss.fbl_scale=1e+38" / "checkpoints"
    saved = [int(p.name) for p in ckpt_dir.iterdir()] if ckpt_dir.exists() else []
    assert all(s < failed_at for s in saved)  # nothing after the failure was checkpointed
    assert (tmp_path / "loss.fbl_scale=60.0" / "checkpoints" / "15").is_dir()
    _, problems = load_run(tmp_path / "loss.fbl_scale=1e+38", "bad")
    assert any("stopped at step" in p for p in problems)


def test_a_preempted_then_killed_sweep_resumes_to_the_same_finals(
    tmp_path, monkeypatch, finished_sweep
):
    """One sweep stopped twice, each time restarted by running it again, ends with the
    uninterrupted finals:
    1. SIGTERM right after the last run's epoch-1 save: the sweep stops with exit code 143 and
       every run has its step-15 checkpoint;
    2. a crash in the middle of the step-30 checkpoint round (the first run saved step 30, the
       other not): the restart resumes every run from the round before (step 15).
    Which round is chosen in every case (none complete: step 0) is tests/test_checkpointing.py's
    restore_together test."""
    import signal

    from fbl_jax.train.preemption import PREEMPTED_EXIT_CODE, Preempted

    _, ref_finals = finished_sweep
    first, last = (tmp_path / name / "checkpoints" for name in sorted(ref_finals))
    assert last.parent.name == "seed=1,loss.name=la"
    original = checkpointing.Checkpoints.save

    def save_then_sigterm(self, state, meta, best=False):
        original(self, state, meta, best=best)
        if int(meta["step"]) == 15 and not best and self.workdir.name == last.parent.name:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(checkpointing.Checkpoints, "save", save_then_sigterm)
    with pytest.raises(Preempted) as stopped:
        train_sweep(tiny_config(), SETS, tmp_path)
    assert stopped.value.code == PREEMPTED_EXIT_CODE
    for ckpt_dir in (first, last):
        assert sorted(int(p.name) for p in ckpt_dir.iterdir()) == [15], ckpt_dir

    saves_at_30 = []

    def save_then_crash(self, state, meta, best=False):
        if int(meta["step"]) == 30 and not best:
            saves_at_30.append(self.workdir.name)
            if len(saves_at_30) == 2:
                raise KeyboardInterrupt("simulated kill")
        original(self, state, meta, best=best)

    monkeypatch.setattr(checkpointing.Checkpoints, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_sweep(tiny_config(), SETS, tmp_path)
    monkeypatch.undo()
    assert (first / "30").is_dir() and not (last / "30").exists()
    assert train_sweep(tiny_config(), SETS, tmp_path) == ref_finals
