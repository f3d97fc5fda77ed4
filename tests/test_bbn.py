"""BBN (Zhou et al., CVPR 2020): reversed sampler, α(T), mixed loss, 0.5/0.5 evaluation, the
model's size, and a tiny fbl-train run that trains, evaluates and resumes exactly."""

import os
import signal

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats
from train_helpers import assert_trees_equal, final_params, read_records, tiny_config

from fbl_jax import defaults, losses
from fbl_jax.data.device_pipeline import DevicePipeline
from fbl_jax.data.samplers import make_sampler
from fbl_jax.models import get_model
from fbl_jax.report.labels import method_name
from fbl_jax.report.run_dir import load_run
from fbl_jax.train import bbn, replication, runners, train_and_evaluate
from fbl_jax.train import steps as train_steps
from fbl_jax.train.preemption import Preempted

COUNTS = np.array([200, 90, 40, 18, 8])


def _labels(counts=COUNTS):
    return np.repeat(np.arange(len(counts)), counts)


# ----------------------------------------------------------------------------- reversed sampler


def test_reversed_sampler_class_frequencies_match_formula():
    """p_i = (1/n_i) / Σ_j (1/n_j): chi-square (99.9 % quantile) and per-class 5-σ binomial bands."""
    labels = _labels()
    draws = 40_000
    s = make_sampler("reversed", labels, COUNTS, num_samples=draws)
    idx = np.asarray(jax.jit(s.indices)(jax.random.key(7), 3))
    observed = np.bincount(labels[idx], minlength=len(COUNTS))
    inv = 1.0 / COUNTS
    p = inv / inv.sum()  # [0.0252, 0.0560, 0.1260, 0.2800, 0.6301] for these counts
    expected = draws * p
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    assert chi2 < stats.chi2.ppf(0.999, len(COUNTS) - 1), (observed, expected)
    sigma = np.sqrt(draws * p * (1 - p))
    assert np.all(np.abs(observed - expected) < 5 * sigma), (observed, expected)
    # the test can fail: class-balanced draws are far from these frequencies
    cb = make_sampler("class_balanced", labels, COUNTS, num_samples=draws)
    cb_obs = np.bincount(labels[np.asarray(cb.indices(jax.random.key(7)))], minlength=len(COUNTS))
    assert np.sum((cb_obs - expected) ** 2 / expected) > 100 * stats.chi2.ppf(0.999, 4)
    # within a class every example is equally likely (class 4: 8 examples, 7 dof)
    in_tail = idx[labels[idx] == 4]
    per_example = np.bincount(in_tail, minlength=len(labels))[labels == 4]
    e = len(in_tail) / 8
    assert np.sum((per_example - e) ** 2 / e) < stats.chi2.ppf(0.999, 7)
    # a pure function of the key (resume replays it)
    np.testing.assert_array_equal(idx, np.asarray(s.indices(jax.random.key(7), 3)))


def test_second_stream_in_device_pipeline():
    """image_rb/label_rb: reversed-sampled, own augmentation, a function of (seed, step), and the
    device parts of a 4-device global batch are the 1-device batch."""
    rng = np.random.default_rng(0)
    labels = _labels()
    images = rng.integers(0, 256, (len(labels), 8, 8, 3), dtype=np.uint8)
    kw = dict(global_batch_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, pad=2, seed=3)

    def pipe(devices):
        main = make_sampler("instance", labels, COUNTS)
        second = make_sampler("reversed", labels, COUNTS, num_samples=main.num_samples)
        return DevicePipeline(
            images, labels, main, num_devices=devices, second_sampler=second, **kw
        )

    one, four = pipe(1), pipe(4)
    data = one.device_data()
    batch_one, batch_four = jax.jit(one.batch), jax.jit(four.batch)
    step = 13  # epoch 1 (spe = 356 // 32 = 11)
    b = batch_one(data, step, 0)
    assert set(b) == {"image", "label", "image_rb", "label_rb"}
    assert b["image_rb"].shape == b["image"].shape == (32, 8, 8, 3)
    assert not np.array_equal(b["image_rb"], b["image"])

    def same(x, y):  # labels exactly; images up to float rounding of differently compiled code
        for key in x:
            np.testing.assert_allclose(x[key], y[key], rtol=0, atol=1e-6, err_msg=key)

    same(
        jax.tree_util.tree_map(
            lambda *a: np.concatenate(a), *[batch_four(data, step, d) for d in range(4)]
        ),
        b,
    )
    same(jax.jit(pipe(1).batch)(data, step, 0), b)  # a fresh pipeline (a restart) replays it
    # the re-balancing stream is tail-heavy: over an epoch its tail class outnumbers its head
    rb = np.concatenate([np.asarray(batch_one(data, s, 0)["label_rb"]) for s in range(11)])
    assert np.sum(rb == 4) > 10 * np.sum(rb == 0)
    with pytest.raises(ValueError, match="mixup"):
        DevicePipeline(
            images,
            labels,
            make_sampler("instance", labels, COUNTS),
            second_sampler=make_sampler("reversed", labels, COUNTS),
            mixup_alpha=1.0,
            num_devices=1,
            **kw,
        )


# ----------------------------------------------------------------------------- α and the loss


def test_cumulative_alpha_by_hand():
    """α = 1 − (e / T)², e the 0-based epoch (BBN's epoch − 1), constant within an epoch."""
    a = bbn.make_alpha_fn(200)
    hand = {
        0.0: 1.0,
        0.99: 1.0,  # still epoch 0
        1.0: 1.0 - (1 / 200) ** 2,  # 0.999975
        100.0: 0.75,
        150.5: 1.0 - 0.75**2,  # 0.4375
        199.5: 1.0 - (199 / 200) ** 2,  # 0.009975
    }
    for epoch, value in hand.items():
        assert float(a(jnp.float32(epoch))) == pytest.approx(value, abs=1e-6), epoch
    # BBN's div_epoch: 100·(T // 100 + 1) for T in {90, 180}
    assert float(bbn.make_alpha_fn(180)(90.0)) == pytest.approx(1.0 - (90 / 200) ** 2)
    assert float(bbn.make_alpha_fn(90)(45.0)) == pytest.approx(1.0 - (45 / 100) ** 2)
    assert float(bbn.make_alpha_fn(10)(5.0)) == pytest.approx(0.75)


def _np_ce(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(labels)), labels].mean()


def test_mixed_loss_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(16, 5)).astype(np.float32) * 3
    y_c, y_r = rng.integers(0, 5, 16), rng.integers(0, 5, 16)
    loss_fn = losses.make_loss({"name": "ce"}, COUNTS, 10)
    for alpha in (1.0, 0.7, 0.25, 0.0):
        loss, aux = bbn.mixed_loss(
            loss_fn, jnp.asarray(logits), None, jnp.asarray(y_c), jnp.asarray(y_r), 0.0, alpha
        )
        want = alpha * _np_ce(logits, y_c) + (1 - alpha) * _np_ce(logits, y_r)
        assert float(loss) == pytest.approx(want, rel=1e-5)
        assert float(aux["alpha"]) == pytest.approx(alpha)


def test_train_step_feeds_both_streams_and_mixes_the_loss():
    """The step's loss is α·CE(z, y_c) + (1 − α)·CE(z, y_r) on the logits of the model given
    (x, x_rb, α), α of the step's epoch; train_top1 is BBN's α-weighted accuracy."""
    model = get_model("bbn_resnet8", 5)
    rng = np.random.default_rng(2)
    x, x_rb = (rng.normal(size=(8, 16, 16, 3)).astype(np.float32) for _ in range(2))
    y_c, y_r = rng.integers(0, 5, 8).astype(np.int32), rng.integers(0, 5, 8).astype(np.int32)
    variables = train_steps.init_variables(jax.random.key(0), model, (16, 16, 3))
    tx = optax.sgd(0.1)
    steps_per_epoch, num_epochs = 4, 4
    step_fn = train_steps.make_train_step(
        model,
        losses.make_loss({"name": "ce"}, COUNTS, num_epochs),
        tx,
        optax.constant_schedule(0.1),
        steps_per_epoch,
        bbn_alpha=bbn.make_alpha_fn(num_epochs),
    )
    state = train_steps.create_train_state(None, model, (16, 16, 3), tx, variables)
    state = state.replace(step=jnp.asarray(9, jnp.int32))  # epoch 2.25 → α = 1 − (2/4)² = 0.75
    batch = {"image": x, "label": y_c, "image_rb": x_rb, "label_rb": y_r}
    p_step = jax.pmap(step_fn, axis_name=train_steps.AXIS, devices=jax.devices()[:1])
    put = replication.replicate
    _, metrics = p_step(
        put(state, jax.devices()[:1]), jax.tree_util.tree_map(lambda a: a[None], batch)
    )
    (logits, _), _ = model.apply(
        variables, x, train=True, images_rb=x_rb, mix=0.75, mutable=["batch_stats"]
    )
    logits = np.asarray(logits)
    want = 0.75 * _np_ce(logits, y_c) + 0.25 * _np_ce(logits, y_r)
    assert float(metrics["loss"][0]) == pytest.approx(want, rel=1e-5)
    assert float(metrics["alpha"][0]) == 0.75
    pred = logits.argmax(1)
    acc = 0.75 * np.mean(pred == y_c) + 0.25 * np.mean(pred == y_r)
    assert float(metrics["train_top1"][0]) == pytest.approx(acc)


# ----------------------------------------------------------------------------- the model


def _plain_resnet_variables(bbn_vars, branch, n):
    """A plain ResNet-(6n+2)'s variables whose last block (stage3/block{n-1}) is BBN's `branch`."""
    out = {}
    for col, tree in bbn_vars.items():
        tree = dict(tree)
        stage3 = {**tree["stage3"], f"block{n - 1}": tree[branch]}
        out[col] = {"stem": tree["stem"], "stage1": tree["stage1"], "stage2": tree["stage2"]}
        out[col]["stage3"] = stage3
        if col == "params":
            out[col]["head"] = {"kernel": jnp.zeros((64, 10)), "bias": jnp.zeros(10)}
    return out


def test_layout_and_eval_weights_against_plain_resnet():
    """Each branch = the plain ResNet with its last block replaced by that branch's block
    (computed with the project's CifarResNet); evaluation logits = concat(f_cb, f_rb)·W + b, i.e.
    both branches at 0.5 (BBN's 2·concat(0.5 f_cb, 0.5 f_rb)); training: 2·concat(α f_cb,
    (1−α) f_rb). ResNet-20 (n = 3) runs the same code as ResNet-32 (n = 5) in half the time."""
    n = 3
    model = get_model("bbn_resnet20", 10)
    plain = get_model("resnet20", 10)
    rng = np.random.default_rng(3)
    # 8×8 images keep the test fast; the weights do not depend on the image size
    x, x_rb = (jnp.asarray(rng.normal(size=(4, 8, 8, 3)), jnp.float32) for _ in range(2))
    v = flax.core.unfreeze(model.init(jax.random.key(1), x, train=False))
    # non-trivial running statistics, so evaluation really uses them
    v["batch_stats"] = jax.tree_util.tree_map(
        lambda a: a + 0.1 * jnp.asarray(rng.random(a.shape), a.dtype), v["batch_stats"]
    )
    W, b = np.asarray(v["params"]["head"]["kernel"]), np.asarray(v["params"]["head"]["bias"])
    cb_vars = _plain_resnet_variables(v, "cb_block", n)
    rb_vars = _plain_resnet_variables(v, "rb_block", n)
    f_cb = np.asarray(plain.apply(cb_vars, x, train=False)[1]["features"])
    f_rb = np.asarray(plain.apply(rb_vars, x, train=False)[1]["features"])
    logits, out = model.apply(v, x, train=False)
    want = np.concatenate([f_cb, f_rb], 1)
    np.testing.assert_allclose(out["features"], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, want @ W + b, rtol=1e-4, atol=1e-4)
    # other weights would differ (the check can fail)
    skewed = np.concatenate([1.4 * f_cb, 0.6 * f_rb], 1) @ W + b
    assert np.abs(np.asarray(logits) - skewed).max() > 1e-2

    # training: each stream through the shared trunk with its own batch statistics
    mutable = ["batch_stats"]
    (logits_t, out_t), _ = model.apply(v, x, train=True, images_rb=x_rb, mix=0.3, mutable=mutable)
    (_, cb_t), _ = plain.apply(cb_vars, x, train=True, mutable=mutable)
    (_, rb_t), _ = plain.apply(rb_vars, x_rb, train=True, mutable=mutable)
    mixed = 2 * np.concatenate([0.3 * cb_t["features"], 0.7 * rb_t["features"]], 1)
    np.testing.assert_allclose(out_t["features"], mixed, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits_t, mixed @ W + b, rtol=1e-4, atol=1e-4)


def test_parameter_count_by_hand():
    """BBN ResNet-32 for 10 classes, counted conv by conv (3×3 kernels, no conv bias; BN: γ, β)."""

    def conv(cin, cout):
        return 3 * 3 * cin * cout

    def bn(c):
        return 2 * c

    def block(cin, cout):
        return conv(cin, cout) + bn(cout) + conv(cout, cout) + bn(cout)

    stem = conv(3, 16) + bn(16)  # 432 + 32 = 464
    stage1 = 5 * block(16, 16)  # 5 × 4,672 = 23,360
    stage2 = block(16, 32) + 4 * block(32, 32)  # 13,952 + 4 × 18,560 = 88,192
    stage3 = block(32, 64) + 3 * block(64, 64)  # 55,552 + 3 × 73,984 = 277,504 (n − 1 blocks)
    branches = 2 * block(64, 64)  # cb_block + rb_block = 147,968
    head = 128 * 10 + 10  # concat of two 64-d features → 10 classes, with bias
    hand = stem + stage1 + stage2 + stage3 + branches + head
    assert hand == 538_778
    variables = get_model("bbn_resnet32", 10).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
    )
    leaves = jax.tree_util.tree_leaves(variables["params"])
    assert sum(int(np.prod(a.shape)) for a in leaves) == hand
    assert sorted(variables["params"]) == sorted(
        ["stem", "stage1", "stage2", "stage3", "cb_block", "rb_block", "head"]
    )


# ----------------------------------------------------------------------------- configs, labels


def test_config_checks_and_label():
    c = tiny_config(**{"model.name": "bbn_resnet8", "loss.name": "ce"})
    with pytest.raises(defaults.ConfigError, match="second_sampler='reversed'"):
        defaults.validate_config(c)
    c = tiny_config(**{"data.second_sampler": "reversed"})
    with pytest.raises(defaults.ConfigError, match="BBN"):
        defaults.validate_config(c)
    c = tiny_config(**{"data.second_sampler": "reverse"})
    with pytest.raises(defaults.ConfigError, match="did you mean 'reversed'"):
        defaults.validate_config(c)
    assert method_name({"model": {"name": "bbn_resnet32"}, "loss": {"name": "ce"}}) == "BBN"
    focal = {"model": {"name": "bbn_resnet32"}, "loss": {"name": "focal", "focal_gamma": 2.0}}
    assert method_name(focal) == "BBN (Focal (γ=2.0))"
    assert method_name({"model": {"name": "resnet32"}, "loss": {"name": "ce"}}) == "CE"


# ----------------------------------------------------------------------------- a tiny run

BBN_TINY = {
    "model.name": "bbn_resnet8",
    "loss.name": "ce",
    "data.second_sampler": "reversed",
    "steps_per_call": 1,
}


@pytest.fixture(scope="module")
def bbn_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bbn")
    final = train_and_evaluate(tiny_config(**BBN_TINY), workdir)
    return workdir, final


def test_tiny_run_trains_and_evaluates(bbn_run):
    workdir, final = bbn_run
    records = read_records(workdir)
    trains = [r for r in records if r["type"] == "train"]
    # 2 epochs of 15 steps; α = 1 − (e / 2)²: 1 in epoch 0, 0.75 in epoch 1
    assert [(r["step"], r["alpha"]) for r in trains] == [
        (5, 1.0),
        (10, 1.0),
        (15, 1.0),
        (20, 0.75),
        (25, 0.75),
        (30, 0.75),
    ]
    assert all(np.isfinite(r["loss"]) for r in trains)
    evals = [r for r in records if r["type"] == "eval"]
    assert [(r["step"], r["split"]) for r in evals] == [
        (15, "test"),
        (15, "minival"),
        (30, "test"),
        (30, "minival"),
    ]
    assert evals[-2]["num_examples"] == 539 and evals[-2]["mean_feature_norm"] > 0
    assert final["last"]["top1"] > 0.15  # above chance (0.1) after 30 steps
    run, problems = load_run(workdir, "bbn")
    assert not problems and method_name(run.config) == "BBN"


def test_tiny_run_resumes_to_identical_params(bbn_run, tmp_path, monkeypatch):
    """SIGTERM at step 20 (mid-epoch 1, both streams mid-epoch), restart: identical parameters."""
    ref_dir, _ = bbn_run
    workdir = tmp_path / "interrupted"
    original = runners.ProgramRunner.advance

    def advance_then_sigterm(self, step, n, alive):
        out = original(self, step, n, alive)
        if step + out[1] == 20:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(runners.ProgramRunner, "advance", advance_then_sigterm)
    with pytest.raises(Preempted):
        train_and_evaluate(tiny_config(**BBN_TINY), workdir)
    monkeypatch.setattr(runners.ProgramRunner, "advance", original)
    assert final_params(workdir)[0] == 20
    train_and_evaluate(tiny_config(**BBN_TINY), workdir)
    step, params = final_params(workdir)
    ref_step, ref_params = final_params(ref_dir)
    assert step == ref_step == 30
    assert_trees_equal(params, ref_params)
