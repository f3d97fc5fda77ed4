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
(after maxpool) as ``intermediates/stem`` for inspection. The blocks are
:mod:`fbl_jax.models.blocks`' BasicBlock and Bottleneck (fan_out init, projection shortcut).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from fbl_jax.models.blocks import EXPANSION, BasicBlock, Bottleneck
from fbl_jax.models.heads import check_head, head_logits
from fbl_jax.models.layers import (
    ConvBNModule,
    global_avg_pool,
    kaiming_normal,
    torch_linear_kernel_init,
)

__all__ = ["IMAGENET_DEPTHS", "STAGE_NAMES", "BasicBlock", "Bottleneck", "ResNet", "stage_of"]

# name -> (block type, blocks per layer)
IMAGENET_DEPTHS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
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


class ResNet(ConvBNModule):
    """torchvision-compatible ResNet; returns ``(logits, {"features": f})``, f of size 512·exp.

    ``zero_init_residual`` zero-inits the last BN gamma of every block (torchvision's option).
    The conv/BatchNorm settings (``bn_momentum``, ``bn_axis_name``, ``bn_impl``, ``conv_impl``)
    are :class:`fbl_jax.models.layers.ConvBNModule`'s.
    """

    block: str
    layers: tuple[int, ...]
    num_classes: int
    head: str = "linear"
    zero_init_residual: bool = False
    stem_width: int = 64

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        check_head(self.head)
        if self.block not in EXPANSION:
            raise ValueError(f"unknown block {self.block!r}; valid choices: {tuple(EXPANSION)}")
        block_cls = BasicBlock if self.block == "basic" else Bottleneck
        x = images.astype(self.dtype)
        x = self._conv(self.stem_width, 7, 2, "conv1", kaiming_normal("fan_out"), padding=3)(x)
        x = nn.relu(self._bn(train, "bn1")(x))
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
                    **self._settings(),
                )(x, train)
        features = global_avg_pool(x)
        logits = head_logits(
            features,
            self.head,
            self.num_classes,
            dtype=self.dtype,
            kernel_init=torch_linear_kernel_init(),
        )
        return logits, {"features": features}
