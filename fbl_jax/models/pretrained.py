"""Conversion between flax ResNet variables and PyTorch state dicts (both directions).

Two PyTorch namings, chosen by the architecture the variables belong to:

- the ImageNet ResNets (``fbl_jax.models.resnet``) <-> torchvision's ResNet: module ``layerS_B``
  <-> ``layerS.B``, ``downsample_conv``/``downsample_bn`` <-> ``downsample.0``/``downsample.1``,
  ``head`` <-> ``fc``;
- the CIFAR ResNets (``fbl_jax.models.cifar_resnet``: resnet20/32/44/56/110) <-> LDAM's
  ``resnet_cifar.py``, which LDAM-DRW's and FBL's PyTorch code (and most CIFAR-LT codebases) train:
  ``stem/conv``/``stem/bn`` <-> ``conv1``/``bn1``, ``stageS/blockB`` <-> ``layerS.B``, ``head``
  <-> ``linear`` (an ``nn.Linear``; the cosine head, which has no bias, <-> LDAM's
  ``NormedLinear``, whose weight is stored (in, out) like ours, so it is not transposed).

Leaves ``kernel``/``scale`` <-> ``weight``, ``bias`` <-> ``bias``, batch_stats ``mean``/``var`` <->
``running_mean``/``running_var``. Conv kernels are flax HWIO <-> torch OIHW, dense kernels
(in, out) <-> (out, in). ``*.num_batches_tracked`` counters are accepted and ignored on import and
not produced on export (``torch.load_state_dict`` fills them in).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import FrozenDict, freeze, unfreeze

from fbl_jax.errors import DataError

_MAPPED_COLLECTIONS = ("params", "batch_stats")
_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_MODULE_TO_TORCH = {
    "downsample_conv": "downsample.0",
    "downsample_bn": "downsample.1",
    "head": "fc",
}
_LAYER_RE = re.compile(r"^(layer\d+)_(\d+)$")
_CIFAR_MODULE_TO_TORCH = {("stem", "conv"): "conv1", ("stem", "bn"): "bn1", ("head",): "linear"}
_CIFAR_STAGE_RE = re.compile(r"^stage(\d+)$")
_CIFAR_BLOCK_RE = re.compile(r"^block(\d+)$")
# .pth.tar: what LDAM-DRW's and FBL's PyTorch code save (torch.save, like .pth)
SUPPORTED_SUFFIXES = (".npz", ".safetensors", ".pth", ".pt", ".pth.tar")


def _module_to_torch(name: str) -> str:
    if name in _MODULE_TO_TORCH:
        return _MODULE_TO_TORCH[name]
    m = _LAYER_RE.match(name)
    return f"{m.group(1)}.{m.group(2)}" if m else name


def _cifar_modules_to_torch(modules: list[str]) -> list[str]:
    """LDAM's resnet_cifar.py names: ['stage2', 'block0', 'conv1'] -> ['layer2', '0', 'conv1']."""
    named = _CIFAR_MODULE_TO_TORCH.get(tuple(modules[:2])) or _CIFAR_MODULE_TO_TORCH.get(
        tuple(modules[:1])
    )
    if named is not None:
        return [named]
    if len(modules) >= 2:
        stage, block = _CIFAR_STAGE_RE.match(modules[0]), _CIFAR_BLOCK_RE.match(modules[1])
        if stage and block:
            return [f"layer{stage.group(1)}", block.group(1), *modules[2:]]
    return list(modules)


def _is_cifar_resnet(flat: Mapping[tuple[str, ...], Any]) -> bool:
    """The CIFAR ResNets have a ``stem`` module; torchvision-style ResNets have ``conv1``."""
    return any(len(fk) > 2 and fk[1] == "stem" for fk in flat)


def _torch_key(flax_key: tuple[str, ...], cifar: bool = False) -> str:
    """('params', 'layer1_0', 'conv1', 'kernel') -> 'layer1.0.conv1.weight'; with ``cifar``,
    ('params', 'stage1', 'block0', 'conv1', 'kernel') -> 'layer1.0.conv1.weight'."""
    collection, *modules, leaf = flax_key
    torch_leaf = _LEAF_TO_TORCH.get((collection, leaf))
    if torch_leaf is None:
        raise ValueError(
            f"no PyTorch name for flax variable {'/'.join(flax_key)!r}: leaf {leaf!r} in "
            f"collection {collection!r} is not one of {sorted(_LEAF_TO_TORCH)}"
        )
    torch_modules = (
        _cifar_modules_to_torch(modules) if cifar else [_module_to_torch(m) for m in modules]
    )
    return ".".join(torch_modules + [torch_leaf])


def _to_torch_layout(x: Any) -> Any:
    """HWIO -> OIHW, (in, out) -> (out, in); 1-D unchanged. Works on arrays (not on shapes)."""
    if x.ndim == 4:
        return np.transpose(x, (3, 2, 0, 1))
    if x.ndim == 2:
        return np.transpose(x)
    return x


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _from_torch_layout(x: np.ndarray) -> np.ndarray:
    """OIHW -> HWIO, (out, in) -> (in, out); 1-D unchanged."""
    if x.ndim == 4:
        return np.transpose(x, (2, 3, 1, 0))
    if x.ndim == 2:
        return np.transpose(x)
    return x


def _flat_mapped(variables: Mapping) -> tuple[dict, dict[str, tuple[str, ...]], set[str]]:
    """Flattened variables, torch key -> flax key for the mapped collections, and the torch keys
    stored in flax's layout (the CIFAR cosine head's kernel, LDAM's NormedLinear weight)."""
    flat = traverse_util.flatten_dict(unfreeze(variables))
    cifar = _is_cifar_resnet(flat)
    mapping: dict[str, tuple[str, ...]] = {}
    for fk in flat:
        if fk[0] in _MAPPED_COLLECTIONS:
            mapping[_torch_key(fk, cifar)] = fk
    cosine_head = cifar and ("params", "head", "kernel") in flat
    cosine_head = cosine_head and ("params", "head", "bias") not in flat
    same_layout = {"linear.weight"} if cosine_head else set()
    if not mapping:
        raise ValueError(
            f"variables hold none of the collections {_MAPPED_COLLECTIONS}; pass the full "
            "variables dict returned by model.init"
        )
    return flat, mapping, same_layout


def torch_shapes(variables: Mapping) -> dict[str, tuple[int, ...]]:
    """PyTorch state-dict key -> torch shape; works on ``jax.eval_shape`` output too."""
    flat, mapping, same = _flat_mapped(variables)
    return {
        tk: tuple(flat[fk].shape) if tk in same else _torch_shape(tuple(flat[fk].shape))
        for tk, fk in mapping.items()
    }


def export_to_torch(variables: Mapping) -> dict[str, np.ndarray]:
    """flax variables -> PyTorch state dict of numpy arrays (torchvision's ResNet, or LDAM's
    resnet_cifar for the CIFAR ResNets); the inverse of :func:`load_torch_weights`. In PyTorch:
    ``model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)``
    (strict=False for the ``num_batches_tracked`` counters only)."""
    flat, mapping, same = _flat_mapped(variables)
    return {
        tk: np.ascontiguousarray(
            np.asarray(flat[fk]) if tk in same else _to_torch_layout(np.asarray(flat[fk]))
        )
        for tk, fk in mapping.items()
    }


def _fmt(keys: list[str], limit: int = 20) -> str:
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_torch_weights(
    variables: Mapping, state_dict: Mapping[str, Any], *, skip_head: bool = False
) -> Any:
    """Fill ``variables`` (params + batch_stats) from a PyTorch state dict: torchvision's ResNet
    for the ImageNet ResNets, LDAM's resnet_cifar (e.g. LDAM-DRW's or FBL's checkpoints) for the
    CIFAR ResNets.

    Strict: every flax variable must be filled and every key consumed; missing keys, unexpected
    keys and shape mismatches raise DataError (a ValueError) naming them. ``skip_head=True`` ignores the
    checkpoint's classifier (``fc.*``, ``linear.*``) and keeps the fresh one (e.g. 365 Places-LT
    classes).
    """
    flat, mapping, same = _flat_mapped(variables)
    is_head = {tk: fk[1] == "head" for tk, fk in mapping.items()}
    wanted = {tk for tk in mapping if not (skip_head and is_head[tk])}
    bn_prefixes = {tk[: -len("running_mean")] for tk in mapping if tk.endswith(".running_mean")}

    head_prefixes = tuple({tk.rsplit(".", 1)[0] + "." for tk in mapping if is_head[tk]})

    def ignorable(key: str) -> bool:
        if skip_head and key.startswith(head_prefixes):
            return True
        if key.endswith(".num_batches_tracked"):
            return key[: -len("num_batches_tracked")] in bn_prefixes
        return False

    missing = sorted(wanted - set(state_dict))
    unexpected = sorted(k for k in state_dict if k not in mapping and not ignorable(k))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key(s): {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected key(s): {_fmt(unexpected)}")
        raise DataError(
            "state dict does not match the model: "
            + "; ".join(parts)
            + ". Check the architecture name (and use skip_head=True for another class count)."
        )

    new_flat = dict(flat)
    mismatched = []
    for tk in sorted(wanted):
        fk = mapping[tk]
        target = flat[fk]
        value = np.asarray(state_dict[tk])
        value = value if tk in same else _from_torch_layout(value)
        if tuple(value.shape) != tuple(target.shape):
            mismatched.append(
                f"{tk}: checkpoint {_torch_shape(value.shape)} vs model "
                f"{_torch_shape(tuple(target.shape))}"
            )
            continue
        new_flat[fk] = jnp.asarray(value, dtype=target.dtype)
    if mismatched:
        raise DataError(
            "shape mismatch (torch layout) for "
            + _fmt(mismatched)
            + ". Check the architecture name / num_classes (skip_head=True keeps a fresh head)."
        )
    out = traverse_util.unflatten_dict(new_flat)
    return freeze(out) if isinstance(variables, FrozenDict) else out


def _torch_to_numpy(state: Mapping, path: pathlib.Path) -> dict[str, np.ndarray]:
    import torch

    for wrapper in ("state_dict", "model_state_dict"):  # LDAM-DRW's / FBL's training checkpoints
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise DataError(
                f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; pass a plain "
                "state dict (model.state_dict())"
            )
        v = v.detach().cpu()
        if v.dtype == torch.bfloat16:
            v = v.float()
        out[k] = v.numpy()
    return out


def load_state_dict_file(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Read a state dict (name -> numpy array) from .npz, .safetensors or .pth/.pt/.pth.tar (a
    training checkpoint's model entry: "state_dict" or "model_state_dict")."""
    path = pathlib.Path(path)
    suffix = ".pth.tar" if path.name.lower().endswith(".pth.tar") else path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"unsupported checkpoint file type {suffix!r} ({path}); supported: {SUPPORTED_SUFFIXES}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise ImportError(
                f"reading {path} needs the 'safetensors' package: `pip install safetensors`, "
                "or export the weights to .npz (numpy.savez) instead"
            ) from e
        return dict(load_file(str(path)))
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading {path} needs PyTorch: `pip install torch`, or export the state dict to "
            ".npz (numpy.savez(path, **{k: v.numpy() for k, v in sd.items()})) instead"
        ) from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise DataError(f"{path} holds a {type(state).__name__}, not a state dict")
    return _torch_to_numpy(state, path)
