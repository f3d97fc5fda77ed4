"""CIFAR ResNets (resnet20/32/44/56/110) as in the LDAM / FBL PyTorch code (``resnet_cifar.py``).

conv3x3(16) + BN + ReLU -> 3 stages of n BasicBlocks (16, 32, 64 channels; stride 2 at stages 2
and 3) -> global average pool (64-d feature) -> head. Shortcuts are "option A": stride-2
subsampling plus zero channels padded on BOTH sides (``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0,
planes // 4, planes // 4))``), no parameters. Conv and dense kernels use untruncated Kaiming-normal
fan_in init (LDAM applies ``kaiming_normal_`` to every Conv2d and Linear); the linear bias keeps
PyTorch's default uniform init.

Parameter tree: ``stem/{conv,bn}``, ``stage{1,2,3}/block{i}/{conv1,bn1,conv2,bn2}``, ``head``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fbl_jax.models.heads import check_head, make_head
from fbl_jax.models.layers import (
    batch_norm,
    conv,
    global_avg_pool,
    kaiming_normal,
    torch_linear_bias_init,
)

CIFAR_DEPTHS: dict[str, int] = {
    "resnet8": 1,  # not in the paper: a fast model for tests and demos
    "resnet20": 3,
    "resnet32": 5,
    "resnet44": 7,
    "resnet56": 9,
    "resnet110": 18,
}
CIFAR_WIDTHS: tuple[int, int, int] = (16, 32, 64)


def option_a_shortcut(x: jax.Array, out_channels: int, stride: int) -> jax.Array:
    """Parameter-free shortcut: ``x[:, ::stride, ::stride]`` with zero channels on both sides.

    Matches LDAM's LambdaLayer, which pads ``planes // 4`` zero channels before and after (the
    reference only uses it for out_channels == 2 * in_channels).
    """
    in_channels = x.shape[-1]
    extra = out_channels - in_channels
    if extra < 0 or extra % 2:
        raise ValueError(
            f"option-A shortcut needs an even channel increase, got {in_channels} -> "
            f"{out_channels}; use out_channels = in_channels + 2k"
        )
    x = x[:, ::stride, ::stride, :]
    half = extra // 2
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (half, half)))


class CifarBasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), option-A shortcut on shape change."""

    planes: int
    stride: int = 1
    dtype: jnp.dtype = jnp.float32
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    bn_axis_name: str | None = None
    bn_impl: str = "flax"
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        def bn(name: str) -> nn.BatchNorm:
            return batch_norm(
                train,
                momentum=self.bn_momentum,
                epsilon=self.bn_eps,
                dtype=self.dtype,
                axis_name=self.bn_axis_name,
                impl=self.bn_impl,
                name=name,
            )

        init = kaiming_normal("fan_in")
        kw = dict(dtype=self.dtype, kernel_init=init, impl=self.conv_impl)
        y = conv(self.planes, 3, self.stride, name="conv1", **kw)(x)
        y = nn.relu(bn("bn1")(y))
        y = conv(self.planes, 3, 1, name="conv2", **kw)(y)
        y = bn("bn2")(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.planes:
            shortcut = option_a_shortcut(x, self.planes, self.stride)
        return nn.relu(y + shortcut.astype(y.dtype))


class CifarStem(nn.Module):
    """conv3x3 (stride 1) + BN + ReLU."""

    features: int
    dtype: jnp.dtype = jnp.float32
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    bn_axis_name: str | None = None
    bn_impl: str = "flax"
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = conv(
            self.features,
            3,
            1,
            dtype=self.dtype,
            kernel_init=kaiming_normal("fan_in"),
            impl=self.conv_impl,
            name="conv",
        )(x)
        x = batch_norm(
            train,
            momentum=self.bn_momentum,
            epsilon=self.bn_eps,
            dtype=self.dtype,
            axis_name=self.bn_axis_name,
            impl=self.bn_impl,
            name="bn",
        )(x)
        return nn.relu(x)


class CifarStage(nn.Module):
    """``num_blocks`` BasicBlocks named ``block0``...; the first one carries the stride."""

    planes: int
    num_blocks: int
    stride: int
    dtype: jnp.dtype = jnp.float32
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    bn_axis_name: str | None = None
    bn_impl: str = "flax"
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i in range(self.num_blocks):
            x = CifarBasicBlock(
                self.planes,
                self.stride if i == 0 else 1,
                dtype=self.dtype,
                bn_momentum=self.bn_momentum,
                bn_eps=self.bn_eps,
                bn_axis_name=self.bn_axis_name,
                bn_impl=self.bn_impl,
                conv_impl=self.conv_impl,
                name=f"block{i}",
            )(x, train)
        return x


class CifarResNet(nn.Module):
    """LDAM-style CIFAR ResNet with 6n+2 layers; returns ``(logits, {"features": f})``.

    ``bn_momentum`` is flax's convention (0.9 == PyTorch momentum 0.1). ``bn_axis_name`` turns on
    cross-device (synchronised) BatchNorm under ``pmap``; ``None`` keeps per-device statistics.
    ``bn_impl`` picks the BatchNorm implementation (``layers.BN_IMPLS``), ``conv_impl`` the
    convolutions' (``layers.CONV_IMPLS``).
    """

    num_blocks: int
    num_classes: int
    head: str = "linear"
    widths: tuple[int, ...] = CIFAR_WIDTHS
    dtype: jnp.dtype = jnp.float32
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    bn_axis_name: str | None = None
    bn_impl: str = "flax"
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        check_head(self.head)
        bn_kw = dict(
            dtype=self.dtype,
            bn_momentum=self.bn_momentum,
            bn_eps=self.bn_eps,
            bn_axis_name=self.bn_axis_name,
            bn_impl=self.bn_impl,
            conv_impl=self.conv_impl,
        )
        x = images.astype(self.dtype)
        x = CifarStem(self.widths[0], name="stem", **bn_kw)(x, train)
        for i, planes in enumerate(self.widths):
            x = CifarStage(
                planes, self.num_blocks, 1 if i == 0 else 2, name=f"stage{i + 1}", **bn_kw
            )(x, train)
        features = global_avg_pool(x)
        logits = make_head(
            self.head,
            self.num_classes,
            dtype=self.dtype,
            kernel_init=kaiming_normal("fan_in"),
            bias_init=torch_linear_bias_init(features.shape[-1]),
        )(features)
        return logits, {"features": features}
