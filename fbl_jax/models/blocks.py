"""The residual blocks of every ResNet here: one BasicBlock and one Bottleneck.

The CIFAR ResNets (LDAM's code), BBN's branches and torchvision's ResNets build the same blocks
and differ in two choices, fields here: the Kaiming-normal fan of the convolutions
(``init_fan``: ``fan_in`` in LDAM's code, ``fan_out`` in torchvision) and the shortcut on a shape
change (``shortcut``: ``projection``, torchvision's 1x1 conv + BN named ``downsample_conv`` /
``downsample_bn``, or ``option_a``, LDAM's parameter-free subsample-and-pad). Parameter names
are the same either way: ``conv1``, ``bn1``, ``conv2``, ``bn2`` (``conv3``, ``bn3``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fbl_jax.models.layers import ConvBNModule, kaiming_normal

SHORTCUTS: tuple[str, ...] = ("projection", "option_a")
EXPANSION = {"basic": 1, "bottleneck": 4}


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


class ResidualBlock(ConvBNModule):
    """What the blocks share: their fields, convs, BatchNorms and shortcut.

    ``zero_init_residual`` zero-inits the block's last BN gamma (torchvision's option).
    """

    planes: int
    stride: int = 1
    zero_init_residual: bool = False
    init_fan: str = "fan_out"
    shortcut: str = "projection"

    def _block_conv(self, features: int, k: int, stride: int, name: str) -> nn.Conv:
        return self._conv(features, k, stride, name, kaiming_normal(self.init_fan))

    def _block_bn(self, train: bool, name: str, last: bool = False) -> nn.Module:
        zero = last and self.zero_init_residual
        return self._bn(train, name, nn.initializers.zeros if zero else nn.initializers.ones)

    def _residual(self, y: jax.Array, x: jax.Array, train: bool) -> jax.Array:
        """relu(y + shortcut(x)), the shortcut the identity unless the shape changes."""
        out = y.shape[-1]
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {self.shortcut!r}; valid choices: {SHORTCUTS}")
        if self.stride != 1 or x.shape[-1] != out:
            if self.shortcut == "option_a":
                x = option_a_shortcut(x, out, self.stride)
            else:
                x = self._block_conv(out, 1, self.stride, "downsample_conv")(x)
                x = self._block_bn(train, "downsample_bn")(x)
        return nn.relu(y + x.astype(y.dtype))


class BasicBlock(ResidualBlock):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)): two 3x3 convs, expansion 1."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self._block_conv(self.planes, 3, self.stride, "conv1")(x)
        y = nn.relu(self._block_bn(train, "bn1")(y))
        y = self._block_conv(self.planes, 3, 1, "conv2")(y)
        y = self._block_bn(train, "bn2", last=True)(y)
        return self._residual(y, x, train)


class Bottleneck(ResidualBlock):
    """torchvision Bottleneck v1.5: 1x1 -> 3x3 (stride here) -> 1x1 (x4 channels)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        out = self.planes * EXPANSION["bottleneck"]
        y = self._block_conv(self.planes, 1, 1, "conv1")(x)
        y = nn.relu(self._block_bn(train, "bn1")(y))
        y = self._block_conv(self.planes, 3, self.stride, "conv2")(y)
        y = nn.relu(self._block_bn(train, "bn2")(y))
        y = self._block_conv(out, 1, 1, "conv3")(y)
        y = self._block_bn(train, "bn3", last=True)(y)
        return self._residual(y, x, train)
