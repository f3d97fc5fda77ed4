"""Replicating a train state over the local devices: flax's values, and no XLA compilation."""

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fbl_jax.train import replication


def _tree():
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 5)), jnp.float32),
        "count": jnp.int32(7),
        "host": rng.integers(0, 255, size=(4, 2, 2, 3), dtype=np.uint8),
        "key": jax.random.key(3, impl="rbg"),
    }


def _compilations(fn):
    seen = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            seen.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        out = fn()
        jax.block_until_ready(out)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return out, len(seen)


def test_replicate_matches_flax_on_every_device_without_compiling():
    tree = _tree()
    ours, compiled = _compilations(lambda: replication.replicate(tree))
    assert compiled == 0
    ref = flax.jax_utils.replicate({k: v for k, v in tree.items() if k != "key"})
    n = jax.local_device_count()
    assert n == 4  # tests/conftest.py forces 4 host devices
    for name, leaf in ref.items():
        assert ours[name].shape == leaf.shape == (n, *np.shape(tree[name]))
        assert ours[name].dtype == leaf.dtype
        assert ours[name].sharding.is_equivalent_to(leaf.sharding, leaf.ndim)
        for shard in ours[name].addressable_shards:  # each device holds the whole leaf
            np.testing.assert_array_equal(np.asarray(shard.data)[0], np.asarray(tree[name]))
    key_data = np.asarray(jax.random.key_data(ours["key"]))
    assert key_data.shape == (n, *jax.random.key_data(tree["key"]).shape)
    assert (key_data == np.asarray(jax.random.key_data(tree["key"]))).all()


def test_replicated_tree_feeds_pmap_and_comes_back_as_numpy():
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    p = replication.replicate(tree)
    out = jax.pmap(
        lambda t: jax.tree_util.tree_map(lambda x: x * 2 + jax.lax.axis_index("i"), t),
        axis_name="i",
    )(p)
    back, compiled = _compilations(lambda: replication.first_replica(out))
    assert compiled == 0
    assert all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(back))
    ref = jax.device_get(flax.jax_utils.unreplicate(out))  # device 0's copy
    for name in tree:
        np.testing.assert_array_equal(back[name], ref[name])
        np.testing.assert_array_equal(back[name], 2 * np.asarray(tree[name]))
