"""Metrics from sufficient statistics vs a direct NumPy computation over the unpadded examples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fbl_jax.train import evaluation as evaluate
from fbl_jax.train import replication


def direct_metrics(logits, features, labels, counts):
    pred = logits.argmax(1)
    top5 = np.argsort(-logits, 1)[:, :5]
    c = logits.shape[1]
    per_class = np.array([(pred[labels == k] == k).mean() for k in range(c)])
    norms = np.linalg.norm(features, axis=1)
    out = {
        "top1": (pred == labels).mean(),
        "top5": np.mean([labels[i] in top5[i] for i in range(len(labels))]),
        "per_class": per_class,
        "norm": np.array([norms[labels == k].mean() for k in range(c)]),
        "many": per_class[counts > 100].mean(),
        "medium": per_class[(counts <= 100) & (counts >= 20)].mean(),
        "few": per_class[counts < 20].mean(),
    }
    return out


def test_padded_batches_summed_equal_direct_metrics():
    rng = np.random.default_rng(0)
    n, c, d = 53, 7, 5
    logits = rng.normal(size=(n, c)).astype(np.float32)
    feats = rng.normal(size=(n, d)).astype(np.float32)
    labels = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    counts = np.array([500, 300, 101, 100, 20, 19, 3])
    ref = direct_metrics(logits, feats, labels, counts)
    # batches of 16 with the last padded by garbage rows that carry mask 0
    totals = None
    for start in range(0, n, 16):
        sl = slice(start, start + 16)
        k = len(labels[sl])
        pad = 16 - k
        lg = np.concatenate([logits[sl], rng.normal(size=(pad, c))]).astype(np.float32)
        ft = np.concatenate([feats[sl], rng.normal(size=(pad, d))]).astype(np.float32)
        lb = np.concatenate([labels[sl], np.zeros(pad, int)])
        mask = np.concatenate([np.ones(k), np.zeros(pad)])
        s = evaluate.eval_stats(
            jnp.asarray(lg), jnp.asarray(ft), jnp.asarray(lb), jnp.asarray(mask), c, True
        )
        totals = s if totals is None else jax.tree_util.tree_map(jnp.add, totals, s)
    m = evaluate.metrics_from_stats(jax.device_get(totals), counts)
    assert m["num_examples"] == n
    assert m["top1"] == pytest.approx(ref["top1"])
    assert m["top5"] == pytest.approx(ref["top5"])
    np.testing.assert_allclose(m["per_class_accuracy"], ref["per_class"], rtol=1e-6)
    np.testing.assert_allclose(m["feature_norm_per_class"], ref["norm"], rtol=1e-5)
    assert m["balanced_top1"] == pytest.approx(ref["per_class"].mean())
    assert m["many_shot"] == pytest.approx(ref["many"])
    assert m["medium_shot"] == pytest.approx(ref["medium"])
    assert m["few_shot"] == pytest.approx(ref["few"])
    conf = np.zeros((c, c), int)
    for y, p in zip(labels, logits.argmax(1)):
        conf[y, p] += 1
    np.testing.assert_array_equal(m["confusion"], conf)


def test_absent_class_and_empty_group():
    stats = {
        "count": np.array([2.0, 0.0]),
        "correct": np.array([1.0, 0.0]),
        "correct5": np.array([2.0, 0.0]),
        "norm_sum": np.array([4.0, 0.0]),
    }
    m = evaluate.metrics_from_stats(stats, np.array([200, 150]))
    assert m["per_class_accuracy"] == [0.5, None]
    assert m["balanced_top1"] == 0.5
    assert m["few_shot"] is None and m["medium_shot"] is None
    with pytest.raises(ValueError, match="no examples"):
        evaluate.metrics_from_stats({k: v * 0 for k, v in stats.items()}, np.array([1, 1]))


def test_one_call_evaluation_equals_a_call_per_batch():
    """config.eval_in_one_call (the accelerators' default): the split scanned in one call gives
    the statistics of a call per padded batch, on 4 devices, every image counted once."""
    from train_helpers import tiny_config

    from fbl_jax.train import steps as train_steps
    from fbl_jax.train.run_setup import build_model, load_data

    config = tiny_config()
    bundle = load_data(config)
    model = build_model(config, bundle.num_classes)
    variables = train_steps.init_variables(jax.random.key(0, impl="rbg"), model, bundle.image_shape)
    params = replication.replicate(variables["params"])
    stats_b = replication.replicate(variables["batch_stats"])
    eval_fn = train_steps.make_eval_step(model, bundle.num_classes)
    per_batch = train_steps.Evaluator(eval_fn, bundle.eval_iter, one_call=False)
    one_call = train_steps.Evaluator(eval_fn, bundle.eval_iter, one_call=True)
    for split in ("test", "minival"):
        a, b = per_batch(split, params, stats_b), one_call(split, params, stats_b)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=key)
        assert int(np.sum(b["count"])) == bundle.eval_sizes[split]
    # the second evaluation reuses the split already on the devices
    assert set(one_call._on_device) == {"test", "minival"}


def test_defaults_choose_one_call_evaluation_on_accelerators_only():
    from fbl_jax import defaults

    config = defaults.get_default_config()
    assert defaults.resolve_eval_in_one_call(config, "gpu")
    assert not defaults.resolve_eval_in_one_call(config, "cpu")
    config.data.pipeline = "tf"
    assert not defaults.resolve_eval_in_one_call(config, "tpu")
    config.eval_in_one_call = "always"
    assert defaults.resolve_eval_in_one_call(config, "cpu")
