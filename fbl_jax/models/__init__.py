"""Model zoo: CIFAR ResNets (LDAM code), BBN's bilateral-branch CIFAR ResNets and
torchvision-compatible ImageNet ResNets.

``get_model(name, num_classes, head=..., dtype=...)`` returns a flax linen module whose
``apply(variables, images, train=..., mutable=["batch_stats"] when training)`` gives
``(logits, {"features": f})`` with f the pooled (B, D) float32 feature.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fbl_jax.models.bbn import BBN_DEPTHS, BBNCifarResNet
from fbl_jax.models.cifar_resnet import CIFAR_DEPTHS, CifarResNet, option_a_shortcut
from fbl_jax.models.heads import HEAD_NAMES, CosineHead, LinearHead
from fbl_jax.models.pretrained import (
    export_to_torch,
    load_state_dict_file,
    load_torch_weights,
    torch_shapes,
)
from fbl_jax.models.resnet import IMAGENET_DEPTHS, ResNet, stage_of

MODEL_NAMES: tuple[str, ...] = tuple(CIFAR_DEPTHS) + tuple(BBN_DEPTHS) + tuple(IMAGENET_DEPTHS)
_ALLOWED_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)

__all__ = [
    "BBNCifarResNet",
    "HEAD_NAMES",
    "MODEL_NAMES",
    "CifarResNet",
    "CosineHead",
    "LinearHead",
    "ResNet",
    "export_to_torch",
    "get_model",
    "load_state_dict_file",
    "load_torch_weights",
    "option_a_shortcut",
    "stage_of",
    "torch_shapes",
]


def _fixed_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}


def get_model(
    name: str,
    num_classes: int,
    head: str = "linear",
    dtype: Any = jnp.float32,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name. ``kwargs`` go to the module (e.g. ``bn_momentum``,
    ``bn_axis_name``, ``zero_init_residual`` for ImageNet ResNets)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid choices: {MODEL_NAMES}")
    if head not in HEAD_NAMES:
        raise ValueError(f"unknown head {head!r}; valid choices: {HEAD_NAMES}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in _ALLOWED_DTYPES]:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of float32, bfloat16, float16")
    if name in CIFAR_DEPTHS:
        cls, fixed = CifarResNet, {"num_blocks": CIFAR_DEPTHS[name]}
    elif name in BBN_DEPTHS:
        cls, fixed = BBNCifarResNet, {"num_blocks": BBN_DEPTHS[name]}
    else:
        block, layers = IMAGENET_DEPTHS[name]
        cls, fixed = ResNet, {"block": block, "layers": layers}
    allowed = _fixed_fields(cls) - set(fixed) - {"num_classes", "head", "dtype"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"unknown keyword argument(s) {unknown} for model {name!r}; valid: {sorted(allowed)}"
        )
    return cls(num_classes=num_classes, head=head, dtype=dtype, **fixed, **kwargs)
