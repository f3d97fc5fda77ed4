"""CIFAR ResNets (resnet20/32/44/56/110) as in the LDAM / FBL PyTorch code (``resnet_cifar.py``).

conv3x3(16) + BN + ReLU -> 3 stages of n BasicBlocks (16, 32, 64 channels; stride 2 at stages 2
and 3) -> global average pool (64-d feature) -> head. Shortcuts are "option A": stride-2
subsampling plus zero channels padded on BOTH sides (``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0,
planes // 4, planes // 4))``), no parameters. Conv and dense kernels use untruncated Kaiming-normal
fan_in init (LDAM applies ``kaiming_normal_`` to every Conv2d and Linear); the linear bias keeps
PyTorch's default uniform init. The blocks are :mod:`fbl_jax.models.blocks`' BasicBlock with
those two choices.

Parameter tree: ``stem/{conv,bn}``, ``stage{1,2,3}/block{i}/{conv1,bn1,conv2,bn2}``, ``head``.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from fbl_jax.models.blocks import BasicBlock, option_a_shortcut
from fbl_jax.models.heads import check_head, head_logits
from fbl_jax.models.layers import ConvBNModule, global_avg_pool, kaiming_normal

__all__ = [
    "CIFAR_DEPTHS",
    "CIFAR_WIDTHS",
    "CifarBasicBlock",
    "CifarResNet",
    "CifarStage",
    "CifarStem",
    "option_a_shortcut",
]

CIFAR_DEPTHS: dict[str, int] = {
    "resnet8": 1,  # not in the paper: a fast model for tests and demos
    "resnet20": 3,
    "resnet32": 5,
    "resnet44": 7,
    "resnet56": 9,
    "resnet110": 18,
}
CIFAR_WIDTHS: tuple[int, int, int] = (16, 32, 64)


class CifarBasicBlock(BasicBlock):
    """LDAM's block: Kaiming fan_in convs, option-A shortcut on a shape change."""

    init_fan: str = "fan_in"
    shortcut: str = "option_a"


class CifarStem(ConvBNModule):
    """conv3x3 (stride 1) + BN + ReLU."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self._conv(self.features, 3, 1, "conv", kaiming_normal("fan_in"))(x)
        return nn.relu(self._bn(train, "bn")(x))


class CifarStage(ConvBNModule):
    """``num_blocks`` BasicBlocks named ``block0``...; the first one carries the stride."""

    planes: int
    num_blocks: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i in range(self.num_blocks):
            stride = self.stride if i == 0 else 1
            x = CifarBasicBlock(self.planes, stride, name=f"block{i}", **self._settings())(x, train)
        return x


class CifarResNet(ConvBNModule):
    """LDAM-style CIFAR ResNet with 6n+2 layers; returns ``(logits, {"features": f})``.

    The conv/BatchNorm settings (``bn_momentum``, ``bn_axis_name``, ``bn_impl``, ``conv_impl``)
    are :class:`fbl_jax.models.layers.ConvBNModule`'s.
    """

    num_blocks: int
    num_classes: int
    head: str = "linear"
    widths: tuple[int, ...] = CIFAR_WIDTHS

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        check_head(self.head)
        settings = self._settings()
        x = CifarStem(self.widths[0], name="stem", **settings)(images.astype(self.dtype), train)
        for i, planes in enumerate(self.widths):
            stride = 1 if i == 0 else 2
            x = CifarStage(planes, self.num_blocks, stride, name=f"stage{i + 1}", **settings)(
                x, train
            )
        features = global_avg_pool(x)
        logits = head_logits(
            features,
            self.head,
            self.num_classes,
            dtype=self.dtype,
            kernel_init=kaiming_normal("fan_in"),
        )
        return logits, {"features": features}
