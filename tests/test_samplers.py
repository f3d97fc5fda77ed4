"""Samplers: the distributions they promise, checked on many draws against the formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fbl_jax.data.samplers import SAMPLER_NAMES, make_sampler

COUNTS = np.array([40, 20, 10, 5, 2])


def _labels(counts=COUNTS, seed=0):
    rng = np.random.RandomState(seed)
    return rng.permutation(np.repeat(np.arange(len(counts)), counts))


def _chi2(observed, expected):
    observed = np.asarray(observed, np.float64)
    expected = np.asarray(expected, np.float64)
    return float(((observed - expected) ** 2 / expected).sum())


def test_instance_is_a_permutation_and_changes_with_the_key():
    labels = _labels()
    s = make_sampler("instance", labels, COUNTS)
    a = np.asarray(s.indices(jax.random.key(0), 0))
    b = np.asarray(s.indices(jax.random.key(1), 1))
    assert a.dtype == np.int32 and a.shape == (len(labels),)
    np.testing.assert_array_equal(np.sort(a), np.arange(len(labels)))
    np.testing.assert_array_equal(np.sort(b), np.arange(len(labels)))
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="num_samples"):
        make_sampler("instance", labels, COUNTS, num_samples=10)


@pytest.mark.parametrize(
    "name, weights",
    [("class_balanced", np.ones(5)), ("sqrt", np.sqrt(COUNTS.astype(float)))],
)
def test_class_frequencies(name, weights):
    labels = _labels()
    draws = 60_000
    s = make_sampler(name, labels, COUNTS, num_samples=draws)
    idx = np.asarray(jax.jit(s.indices)(jax.random.key(7), 0))
    assert idx.shape == (draws,)
    probs = weights / weights.sum()
    observed = np.bincount(labels[idx], minlength=5)
    # 4 degrees of freedom: P(chi2 > 25) ~ 5e-5.
    assert _chi2(observed, probs * draws) < 25.0, observed
    # Within a class every example is equally likely (class 0: 40 examples, 39 dof).
    in_class0 = idx[labels[idx] == 0]
    per_example = np.bincount(in_class0, minlength=len(labels))[labels == 0]
    assert _chi2(per_example, np.full(40, len(in_class0) / 40)) < 85.0


def test_defaults_jit_and_determinism():
    """Every sampler runs under jit with a traced epoch; num_samples defaults to N; same key,
    same list; another key, another list."""
    labels = _labels()
    for name in SAMPLER_NAMES:
        s = make_sampler(name, labels, COUNTS, num_epochs=10)
        assert s.num_samples == len(labels)
        fn = jax.jit(s.indices)
        a = np.asarray(fn(jax.random.key(5), jnp.int32(2)))
        assert a.shape == (len(labels),) and a.dtype == np.int32
        assert a.min() >= 0 and a.max() < len(labels)
        np.testing.assert_array_equal(a, np.asarray(fn(jax.random.key(5), jnp.int32(2))))
        assert not np.array_equal(a, np.asarray(fn(jax.random.key(6), jnp.int32(2)))), name


def test_class_aware_round_robin_structure():
    labels = _labels()
    k = 3
    num_samples = 5 * k * 8 + 2  # 8 full class cycles and a partial visit
    s = make_sampler("class_aware", labels, COUNTS, num_samples=num_samples, k=k)
    idx = np.asarray(jax.jit(s.indices)(jax.random.key(3), 0))
    assert idx.shape == (num_samples,)
    visits = labels[idx[: 5 * k * 8]].reshape(8, 5, k)
    # Each visit takes k examples of one class ...
    assert (visits == visits[:, :, :1]).all()
    # ... and each cycle of 5 visits is a permutation of the 5 classes.
    for cycle in visits[:, :, 0]:
        np.testing.assert_array_equal(np.sort(cycle), np.arange(5))
    # Cycles are shuffled independently (8 identical orders would be a 1 in 120**7 event).
    assert len({tuple(c) for c in visits[:, :, 0]}) > 1
    # A class's stream walks through full shuffles of its examples: class 3 (5 examples) gives
    # 24 examples in 8 visits: blocks of 5 are permutations of the class.
    stream3 = np.concatenate([idx[: 5 * k * 8][labels[idx[: 5 * k * 8]] == 3]])
    members = np.flatnonzero(labels == 3)
    for block in stream3[:20].reshape(4, 5):
        np.testing.assert_array_equal(np.sort(block), members)
    # Class 0 (40 examples) takes 24 distinct examples (no repeat inside one shuffle).
    stream0 = idx[: 5 * k * 8][labels[idx[: 5 * k * 8]] == 0]
    assert len(stream0) == 24 and len(np.unique(stream0)) == 24


def test_progressive_interpolates_instance_to_balanced():
    labels = _labels()
    draws, epochs = 60_000, 10
    s = make_sampler("progressive", labels, COUNTS, num_samples=draws, num_epochs=epochs)
    fn = jax.jit(s.indices)
    inst = COUNTS / COUNTS.sum()
    uniform = np.full(5, 0.2)
    for epoch, probs in [(0, inst), (epochs, uniform), (5, 0.5 * inst + 0.5 * uniform)]:
        idx = np.asarray(fn(jax.random.key(epoch), jnp.int32(epoch)))
        observed = np.bincount(labels[idx], minlength=5)
        assert _chi2(observed, probs * draws) < 25.0, (epoch, observed)
    with pytest.raises(ValueError, match="num_epochs"):
        make_sampler("progressive", labels, COUNTS)


def test_bad_arguments():
    labels = _labels()
    with pytest.raises(ValueError, match="unknown sampler 'balanced'.*class_balanced"):
        make_sampler("balanced", labels, COUNTS)
    with pytest.raises(ValueError, match=r"class_counts\[1\] = 21"):
        make_sampler("instance", labels, COUNTS + np.array([0, 1, 0, 0, 0]))
    with pytest.raises(ValueError, match="k >= 1"):
        make_sampler("class_aware", labels, COUNTS, k=0)
