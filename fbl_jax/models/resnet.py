"""ImageNet ResNets (resnet18/34/50/101/152) with torchvision's structure and parameter names.

conv1 7x7/2 (pad 3) + bn1 + ReLU + maxpool 3x3/2 (pad 1) -> layer1..layer4 -> avgpool -> fc.
Bottleneck blocks put the stride on the 3x3 conv (torchvision "v1.5"). All paddings are explicit
and symmetric, as in PyTorch.

Parameter names are flat and map one-to-one to torchvision's state-dict keys:

    flax                                  torchvision
    conv1/kernel                          conv1.weight
    bn1/{scale,bias}, batch_stats {mean,var}  bn1.{weight,bias,running_mean,running_var}
    layer{s}_{b}/conv{k}/kernel           layer{s}.{b}.conv{k}.weight
    layer{s}_{b}/downsample_conv/kernel   layer{s}.{b}.downsample.0.weight
    layer{s}_{b}/downsample_bn/...        layer{s}.{b}.downsample.1.*
    head/{kernel,bias}                    fc.{weight,bias}

(see ``fbl_jax.models.pretrained`` for the conversion). Use :func:`stage_of` to group parameters
by stage ('stem', 'layer1'..'layer4', 'head') for freezing. The model also sows the stem output
(after maxpool) as ``intermediates/stem`` for inspection.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    torch_linear_kernel_init,
)

# name -> (block type, blocks per layer)
IMAGENET_DEPTHS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
_EXPANSION = {"basic": 1, "bottleneck": 4}
STAGE_NAMES: tuple[str, ...] = (
    "stem",
    "layer1",
    "layer2",
    "layer3",
    "layer4",
    "stage1",
    "stage2",
    "stage3",
    "head",
)


def _path_parts(path: str | Sequence) -> list[str]:
    """'a/b/c', ('a', 'b', 'c') or a jax key path -> ['a', 'b', 'c']."""
    if isinstance(path, str):
        return [p for p in path.split("/") if p]
    parts = []
    for p in path:
        key = getattr(p, "key", getattr(p, "name", p))
        parts.append(str(key))
    return parts


def stage_of(path: str | Sequence) -> str:
    """The stage a parameter belongs to: 'stem', 'layer1'..'layer4' or 'head'.

    Accepts a '/'-joined flax path ('layer2_1/conv1/kernel'), a tuple of keys as produced by
    ``flax.traverse_util.flatten_dict`` or a ``jax.tree_util`` key path; a leading collection
    name ('params', 'batch_stats') is skipped. CIFAR ResNet paths give 'stem', 'stage1'..'stage3'
    or 'head'.
    """
    parts = _path_parts(path)
    if parts and parts[0] in ("params", "batch_stats"):
        parts = parts[1:]
    if not parts:
        raise ValueError(f"empty parameter path {path!r}")
    top = parts[0]
    if top in ("conv1", "bn1", "stem"):
        return "stem"
    if top == "head":
        return "head"
    stage = top.split("_", 1)[0]
    if stage in STAGE_NAMES:
        return stage
    raise ValueError(
        f"cannot tell the stage of parameter path {path!r}: top-level module {top!r} is not "
        "conv1/bn1/stem, layer{1..4}_{i}, stage{1..3} or head"
    )


class _BlockBase(nn.Module):
    planes: int
    stride: int = 1
    dtype: jnp.dtype = jnp.float32
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    bn_axis_name: str | None = None
    bn_impl: str = "flax"
    conv_impl: str = "xla"
    zero_init_residual: bool = False

    def _bn(self, train: bool, name: str, last: bool = False) -> nn.BatchNorm:
        zero = last and self.zero_init_residual
        return batch_norm(
            train,
            momentum=self.bn_momentum,
            epsilon=self.bn_eps,
            dtype=self.dtype,
            axis_name=self.bn_axis_name,
            impl=self.bn_impl,
            scale_init=nn.initializers.zeros if zero else nn.initializers.ones,
            name=name,
        )

    def _conv(self, features: int, k: int, stride: int, name: str) -> nn.Conv:
        return conv(
            features,
            k,
            stride,
            dtype=self.dtype,
            kernel_init=kaiming_normal("fan_out"),
            impl=self.conv_impl,
            name=name,
        )

    def _shortcut(self, x: jax.Array, out_channels: int, train: bool) -> jax.Array:
        if self.stride == 1 and x.shape[-1] == out_channels:
            return x
        x = self._conv(out_channels, 1, self.stride, "downsample_conv")(x)
        return self._bn(train, "downsample_bn")(x)


class BasicBlock(_BlockBase):
    """torchvision BasicBlock: two 3x3 convs, expansion 1."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self._conv(self.planes, 3, self.stride, "conv1")(x)
        y = nn.relu(self._bn(train, "bn1")(y))
        y = self._conv(self.planes, 3, 1, "conv2")(y)
        y = self._bn(train, "bn2", last=True)(y)
        return nn.relu(y + self._shortcut(x, self.planes, train))


class Bottleneck(_BlockBase):
    """torchvision Bottleneck v1.5: 1x1 -> 3x3 (stride here) -> 1x1 (x4 channels)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        out = self.planes * _EXPANSION["bottleneck"]
        y = self._conv(self.planes, 1, 1, "conv1")(x)
        y = nn.relu(self._bn(train, "bn1")(y))
        y = self._conv(self.planes, 3, self.stride, "conv2")(y)
        y = nn.relu(self._bn(train, "bn2")(y))
        y = self._conv(out, 1, 1, "conv3")(y)
        y = self._bn(train, "bn3", last=True)(y)
        return nn.relu(y + self._shortcut(x, out, train))


class ResNet(nn.Module):
    """torchvision-compatible ResNet; returns ``(logits, {"features": f})``, f of size 512·exp.

    ``zero_init_residual`` zero-inits the last BN gamma of every block (torchvision's option).
    ``bn_momentum`` is flax's convention (0.9 == PyTorch momentum 0.1); ``bn_axis_name`` enables
    cross-device BatchNorm under ``pmap``.
    """

    block: str
    layers: tuple[int, ...]
    num_classes: int
    head: str = "linear"
    dtype: jnp.dtype = jnp.float32
    zero_init_residual: bool = False
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    bn_axis_name: str | None = None
    bn_impl: str = "flax"
    conv_impl: str = "xla"
    stem_width: int = 64

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        check_head(self.head)
        if self.block not in _EXPANSION:
            raise ValueError(f"unknown block {self.block!r}; valid choices: {tuple(_EXPANSION)}")
        block_cls = BasicBlock if self.block == "basic" else Bottleneck
        bn_kw = dict(
            dtype=self.dtype,
            bn_momentum=self.bn_momentum,
            bn_eps=self.bn_eps,
            bn_axis_name=self.bn_axis_name,
            bn_impl=self.bn_impl,
            conv_impl=self.conv_impl,
        )
        x = images.astype(self.dtype)
        x = conv(
            self.stem_width,
            7,
            2,
            padding=3,
            dtype=self.dtype,
            kernel_init=kaiming_normal("fan_out"),
            impl=self.conv_impl,
            name="conv1",
        )(x)
        x = batch_norm(
            train,
            momentum=self.bn_momentum,
            epsilon=self.bn_eps,
            dtype=self.dtype,
            axis_name=self.bn_axis_name,
            impl=self.bn_impl,
            name="bn1",
        )(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        self.sow("intermediates", "stem", x)
        for s, num_blocks in enumerate(self.layers):
            planes = self.stem_width * 2**s
            for b in range(num_blocks):
                x = block_cls(
                    planes,
                    stride=2 if (s > 0 and b == 0) else 1,
                    zero_init_residual=self.zero_init_residual,
                    name=f"layer{s + 1}_{b}",
                    **bn_kw,
                )(x, train)
        features = global_avg_pool(x)
        logits = make_head(
            self.head,
            self.num_classes,
            dtype=self.dtype,
            kernel_init=torch_linear_kernel_init(),
            bias_init=torch_linear_bias_init(features.shape[-1]),
        )(features)
        return logits, {"features": features}
