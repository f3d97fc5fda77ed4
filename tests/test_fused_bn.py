"""FusedGradBatchNorm against NumPy (forward, running statistics) and against flax's BatchNorm
differentiated by JAX (gradients, on one device and synchronised over four)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fbl_jax.models import get_model
from fbl_jax.models.fused_bn import FusedGradBatchNorm
from fbl_jax.models.layers import BN_IMPLS, batch_norm

EPS = 1e-5
MOMENTUM = 0.9


def _data(shape=(8, 5, 5, 6), seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * 3 + 1).astype(np.float32)
    g = rng.normal(size=shape).astype(np.float32)
    c = shape[-1]
    params = {
        "scale": np.linspace(0.5, 2.0, c, dtype=np.float32),
        "bias": np.linspace(-1.0, 1.0, c, dtype=np.float32),
    }
    stats = {
        "mean": rng.normal(size=c).astype(np.float32),
        "var": rng.uniform(0.5, 2, size=c).astype(np.float32),
    }
    return x, g, params, stats


def _grads(module, x, g, params, stats):
    def loss(p, x):
        y, upd = module.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])
        return jnp.sum(y * g), (y, upd["batch_stats"])

    (_, (y, new_stats)), (dp, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        params, x
    )
    return y, new_stats, dp, dx


def test_train_forward_and_running_stats_match_numpy():
    x, g, params, stats = _data()
    m = FusedGradBatchNorm(use_running_average=False, momentum=MOMENTUM, epsilon=EPS)
    y, new_stats, _, _ = _grads(m, x, g, params, stats)
    mean = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))  # biased, as the normalisation uses
    want = (x - mean) / np.sqrt(var + EPS) * params["scale"] + params["bias"]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        new_stats["mean"], MOMENTUM * stats["mean"] + (1 - MOMENTUM) * mean, rtol=1e-6
    )
    np.testing.assert_allclose(
        new_stats["var"], MOMENTUM * stats["var"] + (1 - MOMENTUM) * var, rtol=1e-5
    )


def test_eval_uses_running_stats():
    x, _, params, stats = _data()
    m = FusedGradBatchNorm(use_running_average=True, epsilon=EPS)
    y = m.apply({"params": params, "batch_stats": stats}, x)
    want = (x - stats["mean"]) / np.sqrt(stats["var"] + EPS) * params["scale"] + params["bias"]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_gradients_match_flax_autodiff():
    x, g, params, stats = _data()
    kw = dict(use_running_average=False, momentum=MOMENTUM, epsilon=EPS)
    y_ref, s_ref, dp_ref, dx_ref = _grads(nn.BatchNorm(**kw), x, g, params, stats)
    y, s, dp, dx = _grads(FusedGradBatchNorm(**kw), x, g, params, stats)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)  # the formula is flax's
    for k in ("mean", "var"):
        np.testing.assert_allclose(s[k], s_ref[k], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-5)
    for k in ("scale", "bias"):
        np.testing.assert_allclose(dp[k], dp_ref[k], rtol=1e-4, atol=1e-4)
    assert np.abs(dx).max() > 0.1  # a non-trivial gradient was compared


def test_synchronised_gradient_equals_the_full_batch_gradient():
    """4 devices, each with a quarter of the batch: dx of the summed losses and the summed
    parameter gradients equal the one-device full-batch values, as with flax's sync BN."""
    n = 4
    assert jax.local_device_count() >= n, "conftest provides 4 CPU devices"
    x, g, params, stats = _data(shape=(16, 3, 3, 4), seed=1)
    kw = dict(use_running_average=False, momentum=MOMENTUM, epsilon=EPS)
    _, s_full, dp_full, dx_full = _grads(FusedGradBatchNorm(**kw), x, g, params, stats)

    def per_device(cls, x_d, g_d):
        return _grads(cls(axis_name="d", **kw), x_d, g_d, params, stats)

    shard = lambda a: a.reshape(n, -1, *a.shape[1:])  # noqa: E731
    for cls in (FusedGradBatchNorm, nn.BatchNorm):
        fn = jax.pmap(
            lambda a, b, cls=cls: per_device(cls, a, b),
            axis_name="d",
            devices=jax.local_devices()[:n],
        )
        _, s_dev, dp_dev, dx_dev = fn(shard(x), shard(g))
        np.testing.assert_allclose(dx_dev.reshape(x.shape), dx_full, rtol=1e-4, atol=1e-5)
        for k in ("scale", "bias"):
            np.testing.assert_allclose(dp_dev[k].sum(0), dp_full[k], rtol=1e-4, atol=1e-4)
        for k in ("mean", "var"):
            np.testing.assert_allclose(s_dev[k][0], s_full[k], rtol=1e-5, atol=1e-6)


def test_same_variables_as_flax_so_checkpoints_interchange():
    x = jnp.ones((2, 4, 4, 3))
    shapes = {}
    for impl in BN_IMPLS:
        model = get_model("resnet8", 10, bn_impl=impl)
        variables = model.init(jax.random.key(0), x, train=False)
        shapes[impl] = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), variables)
    assert shapes["flax"] == shapes["fused_grad"]
    n_bn = sum(
        1 for path in jax.tree_util.tree_flatten_with_path(shapes["flax"])[0] if "bn" in str(path)
    )
    assert n_bn > 0


def test_unknown_impl_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="fused_grad"):
        batch_norm(True, momentum=0.9, epsilon=EPS, dtype=jnp.float32, name="bn", impl="cudnn")
