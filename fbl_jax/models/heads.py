"""Classifier heads: ``linear`` (Dense with bias) and ``cosine`` (LDAM's NormedLinear).

Both declare their parameters directly (``head/kernel`` of shape (D, C), ``head/bias``) so the
parameter paths are short and map one-to-one to a PyTorch ``fc``. Logits are float32 whatever
the compute dtype, because the losses need full-precision logits.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fbl_jax.models.layers import Initializer, torch_linear_bias_init

HEAD_NAMES: tuple[str, ...] = ("linear", "cosine")


def _l2_normalize(x: jax.Array, axis: int, eps: float) -> jax.Array:
    """``torch.nn.functional.normalize``: x / max(||x||, eps), computed in float32."""
    x = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


def unit_column_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """LDAM NormedLinear init: U(-1, 1) then every column (one per class) rescaled to norm 1."""
    w = jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
    return (w / jnp.linalg.norm(w, axis=0, keepdims=True)).astype(dtype)


class LinearHead(nn.Module):
    """logits = f @ kernel + bias; compute in ``dtype``, params float32, logits float32."""

    num_classes: int
    kernel_init: Initializer
    bias_init: Initializer
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        dim = features.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (dim, self.num_classes), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.num_classes,), jnp.float32)
        logits = jnp.dot(features.astype(self.dtype), kernel.astype(self.dtype))
        return logits.astype(jnp.float32) + bias


class CosineHead(nn.Module):
    """logits = normalize(f) @ normalize(kernel, columns): cosines in [-1, 1], no bias.

    As in LDAM's NormedLinear the scale ``s`` is not applied here; the loss multiplies by it.
    """

    num_classes: int
    kernel_init: Initializer = unit_column_init
    eps: float = 1e-12
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        dim = features.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (dim, self.num_classes), jnp.float32)
        f = _l2_normalize(features, axis=-1, eps=self.eps).astype(self.dtype)
        w = _l2_normalize(kernel, axis=0, eps=self.eps).astype(self.dtype)
        return jnp.dot(f, w).astype(jnp.float32)


def make_head(
    head: str,
    num_classes: int,
    *,
    dtype: jnp.dtype,
    kernel_init: Initializer,
    bias_init: Initializer,
    name: str = "head",
) -> nn.Module:
    """Build the classifier named ``head``; ``kernel_init``/``bias_init`` apply to ``linear``."""
    if head == "linear":
        return LinearHead(num_classes, kernel_init, bias_init, dtype=dtype, name=name)
    if head == "cosine":
        return CosineHead(num_classes, dtype=dtype, name=name)
    raise ValueError(f"unknown head {head!r}; valid choices: {HEAD_NAMES}")


def head_logits(
    features: jax.Array,
    head: str,
    num_classes: int,
    *,
    dtype: jnp.dtype,
    kernel_init: Initializer,
) -> jax.Array:
    """The classifier named ``head`` (module ``head`` of the calling model) on the pooled
    features; a linear head's bias gets PyTorch's default init for the features' width."""
    return make_head(
        head,
        num_classes,
        dtype=dtype,
        kernel_init=kernel_init,
        bias_init=torch_linear_bias_init(features.shape[-1]),
    )(features)


def check_head(head: str) -> None:
    """Fail early (at model construction) on an unknown head name."""
    if head not in HEAD_NAMES:
        raise ValueError(f"unknown head {head!r}; valid choices: {HEAD_NAMES}")
