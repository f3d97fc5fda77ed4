"""BatchNorm with a hand-written backward pass: flax's variables and forward formula.

Autodiff of flax's BatchNorm differentiates through E[x], E[x²], the clipped variance and the
normalisation step by step; on XLA's CPU backend that is several extra passes over every
activation. The closed-form gradient needs two reductions and one element-wise pass:

    dx = γ / σ · (g − mean(g) − x̂ · mean(g · x̂)),   dγ = Σ g · x̂,   dβ = Σ g

with the means over the GLOBAL batch (psum over ``axis_name``), which is the gradient of the
summed per-device losses: after the train step's pmean of gradients, N devices give the one-device
full-batch gradient, as flax's synchronised BatchNorm does. The forward pass (statistics, running
averages, output) is flax's formula; XLA may fuse it differently, so outputs agree with flax's
to float rounding (tests/test_fused_bn.py).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Initializer = Any


def _stats(x: jax.Array, axis_name: str | None) -> tuple[jax.Array, jax.Array]:
    """flax's fast variance: E[x²] − E[x]² in float32, one pmean for both means."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    axes = tuple(range(x.ndim - 1))
    mu, mu2 = xf.mean(axes), jnp.square(xf).mean(axes)
    if axis_name is not None:
        mu, mu2 = lax.pmean(jnp.stack([mu, mu2]), axis_name)
    return mu, jnp.maximum(0.0, mu2 - jnp.square(mu))


def _normalize(x, mean, var, scale, bias, epsilon):
    mul = lax.rsqrt(var + epsilon) * scale
    return (x - mean) * mul + bias


def _train_forward(x, scale, bias, epsilon, axis_name):
    mean, var = _stats(x, axis_name)
    return _normalize(x, mean, var, scale, bias, epsilon), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x, scale, bias, epsilon: float, axis_name: str | None):
    """Normalise with batch statistics; returns (y, mean, var). Gradients flow to x, scale, bias."""
    return _train_forward(x, scale, bias, epsilon, axis_name)


def _fwd(x, scale, bias, epsilon, axis_name):
    y, mean, var = _train_forward(x, scale, bias, epsilon, axis_name)
    return (y, mean, var), (x, mean, lax.rsqrt(var + epsilon), scale)


def _bwd(epsilon, axis_name, residuals, cotangents):
    del epsilon
    x, mean, inv, scale = residuals
    g = cotangents[0].astype(mean.dtype)  # the statistics' own cotangents are not used
    axes = tuple(range(x.ndim - 1))
    xhat = (x.astype(mean.dtype) - mean) * inv
    sum_g, sum_gx = g.sum(axes), (g * xhat).sum(axes)
    count = x.size // x.shape[-1]
    if axis_name is not None:
        glob_g, glob_gx = lax.psum(jnp.stack([sum_g, sum_gx]), axis_name)
        count = count * lax.psum(1, axis_name)
    else:
        glob_g, glob_gx = sum_g, sum_gx
    dx = (scale * inv) * (g - glob_g / count - xhat * (glob_gx / count))
    return dx.astype(x.dtype), sum_gx, sum_g


batch_norm_train.defvjp(_fwd, _bwd)


class FusedGradBatchNorm(nn.Module):
    """Drop-in for ``nn.BatchNorm`` over the last axis (params scale/bias, batch_stats mean/var)."""

    use_running_average: bool
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    axis_name: str | None = None
    scale_init: Initializer = nn.initializers.ones
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        scale = self.param("scale", self.scale_init, features, self.param_dtype)
        bias = self.param("bias", self.bias_init, features, self.param_dtype)
        out_dtype = self.dtype or jnp.result_type(x, scale, bias)
        if self.use_running_average:
            y = _normalize(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon)
            return y.astype(out_dtype)
        initializing = self.is_initializing()
        axis_name = None if initializing else self.axis_name
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, axis_name)
        if not initializing:
            mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y.astype(out_dtype)
