"""Shared building blocks with PyTorch semantics: initialisers, padded convs, BatchNorm.

Everything that has to match the PyTorch reference models (init distributions, explicit
symmetric padding, BatchNorm momentum/eps conventions) lives here so the CIFAR and ImageNet
ResNets cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fbl_jax.models.fused_bn import FusedGradBatchNorm

Initializer = Callable[..., jax.Array]

_KAIMING_MODES = ("fan_in", "fan_out")


def kaiming_normal(mode: str = "fan_in") -> Initializer:
    """Untruncated He-normal init, std = sqrt(2 / fan), like ``torch.nn.init.kaiming_normal_``.

    Flax kernels are HWIO (conv) or (in, out) (dense), so flax's fan_in / fan_out computed from
    the last two axes equal PyTorch's for the same layer.
    """
    if mode not in _KAIMING_MODES:
        raise ValueError(f"kaiming mode {mode!r} is not one of {_KAIMING_MODES}")
    return jax.nn.initializers.variance_scaling(2.0, mode, "normal")


def torch_linear_kernel_init() -> Initializer:
    """PyTorch's default ``nn.Linear`` weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_linear_bias_init(fan_in: int) -> Initializer:
    """PyTorch's default ``nn.Linear`` bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv(
    features: int,
    kernel_size: int,
    stride: int,
    *,
    dtype: jnp.dtype,
    kernel_init: Initializer,
    name: str,
    padding: int | None = None,
    impl: str = "xla",
) -> nn.Conv:
    """Bias-free conv with PyTorch's explicit symmetric padding (default ``kernel_size // 2``).

    'SAME' would pad (0, 1) for a stride-2 conv on an even input where PyTorch pads (1, 1), so the
    padding is always given explicitly. ``impl="onednn"`` runs it on oneDNN's kernels (CPU only,
    ``models/onednn_conv.py``); the parameters are the same either way.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown convolution implementation {impl!r}; valid: {CONV_IMPLS}")
    pad = kernel_size // 2 if padding is None else padding
    kernels = {}
    if impl == "onednn":
        from fbl_jax.models import onednn_conv

        kernels["conv_general_dilated"] = onednn_conv.conv_general_dilated
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=kernel_init,
        name=name,
        **kernels,
    )


CONV_IMPLS: tuple[str, ...] = ("xla", "onednn")


def resolve_conv_impl(name: str, dtype: jnp.dtype = jnp.float32) -> tuple[str, str]:
    """The convolutions to use and why (for the log).

    ``"auto"``: oneDNN's on the CPU backend in float32 when it is installed and builds (2-3x
    faster convolutions there, BENCHMARKS.md), XLA's otherwise. ``"onednn"`` where it cannot run
    is an error that says why and what to do.
    """
    if name not in ("auto", *CONV_IMPLS):
        raise ValueError(
            f"unknown convolution implementation {name!r}; valid choices: {('auto', *CONV_IMPLS)}"
        )
    if name == "xla":
        return "xla", "model.conv=xla"
    backend, float32 = jax.default_backend(), jnp.dtype(dtype) == jnp.float32
    if name == "auto" and (backend != "cpu" or not float32):
        return "xla", f"model.conv=auto on the {backend} backend in {jnp.dtype(dtype).name}"
    if backend != "cpu" or not float32:
        raise ValueError(
            f"model.conv=onednn runs float32 convolutions on the CPU backend only (here: "
            f"{backend}, {jnp.dtype(dtype).name}); use model.conv=auto or xla"
        )
    from fbl_jax.models import onednn_conv

    why_not = onednn_conv.available()
    if why_not is None:
        return "onednn", f"model.conv={name}"
    if name == "onednn":
        raise ValueError(f"model.conv=onednn: {why_not}; or set model.conv=auto or xla")
    return "xla", f"model.conv=auto, oneDNN unavailable: {why_not}"


BN_IMPLS: tuple[str, ...] = ("flax", "fused_grad")


def resolve_bn_impl(name: str) -> str:
    """``"auto"``: ``fused_grad`` on the CPU backend, where it was measured faster, else ``flax``."""
    if name == "auto":
        return "fused_grad" if jax.default_backend() == "cpu" else "flax"
    if name not in BN_IMPLS:
        raise ValueError(
            f"unknown BatchNorm implementation {name!r}; valid choices: {('auto', *BN_IMPLS)}"
        )
    return name


def batch_norm(
    train: bool,
    *,
    momentum: float,
    epsilon: float,
    dtype: jnp.dtype,
    name: str,
    axis_name: str | None = None,
    scale_init: Initializer = nn.initializers.ones,
    impl: str = "flax",
) -> nn.Module:
    """Flax BatchNorm; ``momentum`` is flax's (keep fraction), i.e. 1 - PyTorch momentum.

    ``impl="fused_grad"`` is :class:`FusedGradBatchNorm`: the same variables, forward values equal up
    to float rounding, and a closed-form backward pass (faster on XLA's CPU backend, see BENCHMARKS.md).

    Statistics are reduced in float32 whatever ``dtype`` is (flax's default
    ``force_float32_reductions``); parameters and running stats are float32.
    """
    if impl not in BN_IMPLS:
        raise ValueError(f"unknown BatchNorm implementation {impl!r}; valid choices: {BN_IMPLS}")
    cls = FusedGradBatchNorm if impl == "fused_grad" else nn.BatchNorm
    return cls(
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=jnp.float32,
        axis_name=axis_name,
        scale_init=scale_init,
        name=name,
    )


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over H and W in float32: the pooled feature handed to the head and the loss."""
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


# The fields every conv/BN module of the ResNets passes down to its children.
CONV_BN_FIELDS: tuple[str, ...] = (
    "dtype",
    "bn_momentum",
    "bn_eps",
    "bn_axis_name",
    "bn_impl",
    "conv_impl",
)


class ConvBNModule(nn.Module):
    """Base of the ResNets' modules: the compute dtype and the conv/BatchNorm settings, as
    keyword-only fields (after each subclass's own, which may stay positional), and the layers
    built from them.

    ``bn_momentum`` is flax's convention (0.9 == PyTorch momentum 0.1). ``bn_axis_name`` turns on
    cross-device (synchronised) BatchNorm under ``pmap``; ``None`` keeps per-device statistics.
    ``bn_impl`` picks the BatchNorm implementation (``BN_IMPLS``), ``conv_impl`` the
    convolutions' (``CONV_IMPLS``).
    """

    _: dataclasses.KW_ONLY
    dtype: jnp.dtype = jnp.float32
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    bn_axis_name: str | None = None
    bn_impl: str = "flax"
    conv_impl: str = "xla"

    def _settings(self) -> dict:
        """These fields, for a child module: ``Child(..., **self._settings())``."""
        return {field: getattr(self, field) for field in CONV_BN_FIELDS}

    def _bn(
        self, train: bool, name: str, scale_init: Initializer = nn.initializers.ones
    ) -> nn.Module:
        return batch_norm(
            train,
            momentum=self.bn_momentum,
            epsilon=self.bn_eps,
            dtype=self.dtype,
            axis_name=self.bn_axis_name,
            impl=self.bn_impl,
            scale_init=scale_init,
            name=name,
        )

    def _conv(
        self,
        features: int,
        kernel_size: int,
        stride: int,
        name: str,
        kernel_init: Initializer,
        padding: int | None = None,
    ) -> nn.Conv:
        return conv(
            features,
            kernel_size,
            stride,
            dtype=self.dtype,
            kernel_init=kernel_init,
            padding=padding,
            impl=self.conv_impl,
            name=name,
        )
