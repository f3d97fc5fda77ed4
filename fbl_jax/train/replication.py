"""Copies of a pytree on every local device for pmap, and one copy back, without compiling.

flax.jax_utils.replicate stacks each leaf with ``jnp.stack`` and unreplicate slices with
``squeeze``: eager JAX ops, each compiled once per leaf shape. A ResNet's state has dozens of
shapes, so every run start paid ~65 small XLA compilations (2 s of a tiny CPU run, more than
its training). Here each leaf goes to each device as a host buffer (a view with a new leading
axis, no copy on the host) and comes back as a NumPy array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

_AXIS = "_replicas"


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _device_axis(devices: Sequence[jax.Device] | None) -> tuple[list, jax.NamedSharding]:
    """The devices (default: the local ones, in pmap's order) and a leading axis over them."""
    devices = list(devices or jax.local_devices())
    mesh = jax.sharding.Mesh(np.array(devices), (_AXIS,))
    return devices, jax.NamedSharding(mesh, jax.P(_AXIS))


def replicate(tree: Any, devices: Sequence[jax.Device] | None = None) -> Any:
    """Each leaf as an array of shape (n_devices, *leaf.shape), one copy per device."""
    devices, sharding = _device_axis(devices)

    def one(x: Any) -> jax.Array:
        if _is_key(x):  # typed PRNG keys: replicate their data, wrap again
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=impl)
        host = np.asarray(x)[None]
        shape = (len(devices), *host.shape[1:])
        return jax.make_array_from_single_device_arrays(
            shape, sharding, [jax.device_put(host, d) for d in devices]
        )

    return jax.tree_util.tree_map(one, tree)


def shard(tree: Any, devices: Sequence[jax.Device] | None = None) -> Any:
    """Slice i of each host leaf's leading axis on devices[i], as pmap takes its inputs."""
    _, sharding = _device_axis(devices)
    return jax.tree_util.tree_map(lambda x: jax.device_put(np.asarray(x), sharding), tree)


def first_replica(tree: Any) -> Any:
    """The first device's copy of each leaf of a replicated (pmapped) tree, as NumPy arrays."""

    def one(x: Any) -> Any:
        if _is_key(x):
            return jax.random.wrap_key_data(
                one(jax.random.key_data(x)), impl=jax.random.key_impl(x)
            )
        if not isinstance(x, jax.Array) or x.ndim == 0:
            return np.asarray(x)
        local = np.asarray(x.addressable_shards[0].data)
        # as flax's unreplicate: an array replicated over several devices without a device axis
        # is its own copy; otherwise the shard carries the leading device axis
        if x.sharding.is_fully_replicated and len(x.sharding.device_set) > 1:
            return local
        return local[0]

    return jax.tree_util.tree_map(one, tree)
