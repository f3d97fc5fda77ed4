"""Conversion between flax ResNet variables and torchvision state dicts (both directions).

Name mapping (see ``fbl_jax.models.resnet``): module ``layerS_B`` <-> ``layerS.B``,
``downsample_conv``/``downsample_bn`` <-> ``downsample.0``/``downsample.1``, ``head`` <-> ``fc``;
leaves ``kernel``/``scale`` <-> ``weight``, ``bias`` <-> ``bias``, batch_stats ``mean``/``var`` <->
``running_mean``/``running_var``. Conv kernels are flax HWIO <-> torch OIHW, dense kernels
(in, out) <-> (out, in). torchvision's ``*.num_batches_tracked`` counters are accepted and ignored
on import and not produced on export (``torch.load_state_dict`` fills them in).
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
HEAD_TORCH_PREFIX = "fc."
SUPPORTED_SUFFIXES = (".npz", ".safetensors", ".pth", ".pt")


def _module_to_torch(name: str) -> str:
    if name in _MODULE_TO_TORCH:
        return _MODULE_TO_TORCH[name]
    m = _LAYER_RE.match(name)
    return f"{m.group(1)}.{m.group(2)}" if m else name


def _torch_key(flax_key: tuple[str, ...]) -> str:
    """('params', 'layer1_0', 'conv1', 'kernel') -> 'layer1.0.conv1.weight'."""
    collection, *modules, leaf = flax_key
    torch_leaf = _LEAF_TO_TORCH.get((collection, leaf))
    if torch_leaf is None:
        raise ValueError(
            f"no torchvision name for flax variable {'/'.join(flax_key)!r}: leaf {leaf!r} in "
            f"collection {collection!r} is not one of {sorted(_LEAF_TO_TORCH)}"
        )
    return ".".join([_module_to_torch(m) for m in modules] + [torch_leaf])


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


def _flat_mapped(variables: Mapping) -> tuple[dict, dict[str, tuple[str, ...]]]:
    """Flattened variables and torch key -> flax key for the mapped collections."""
    flat = traverse_util.flatten_dict(unfreeze(variables))
    mapping: dict[str, tuple[str, ...]] = {}
    for fk in flat:
        if fk[0] in _MAPPED_COLLECTIONS:
            mapping[_torch_key(fk)] = fk
    if not mapping:
        raise ValueError(
            f"variables hold none of the collections {_MAPPED_COLLECTIONS}; pass the full "
            "variables dict returned by model.init"
        )
    return flat, mapping


def torchvision_shapes(variables: Mapping) -> dict[str, tuple[int, ...]]:
    """torchvision state-dict key -> torch shape; works on ``jax.eval_shape`` output too."""
    flat, mapping = _flat_mapped(variables)
    return {tk: _torch_shape(tuple(flat[fk].shape)) for tk, fk in mapping.items()}


def export_to_torchvision(variables: Mapping) -> dict[str, np.ndarray]:
    """flax variables -> torchvision-style state dict of numpy arrays (inverse of the import)."""
    flat, mapping = _flat_mapped(variables)
    return {
        tk: np.ascontiguousarray(_to_torch_layout(np.asarray(flat[fk])))
        for tk, fk in mapping.items()
    }


def _fmt(keys: list[str], limit: int = 20) -> str:
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_torchvision_weights(
    variables: Mapping, state_dict: Mapping[str, Any], *, skip_head: bool = False
) -> Any:
    """Fill ``variables`` (params + batch_stats) from a torchvision state dict.

    Strict: every flax variable must be filled and every key consumed; missing keys, unexpected
    keys and shape mismatches raise ValueError naming them. ``skip_head=True`` ignores the
    checkpoint's ``fc.*`` and keeps the fresh classifier (e.g. 365 Places-LT classes).
    """
    flat, mapping = _flat_mapped(variables)
    is_head = {tk: fk[1] == "head" for tk, fk in mapping.items()}
    wanted = {tk for tk in mapping if not (skip_head and is_head[tk])}
    bn_prefixes = {tk[: -len("running_mean")] for tk in mapping if tk.endswith(".running_mean")}

    def ignorable(key: str) -> bool:
        if skip_head and key.startswith(HEAD_TORCH_PREFIX):
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
        raise ValueError(
            "state dict does not match the model: "
            + "; ".join(parts)
            + ". Check the architecture name (and use skip_head=True for another class count)."
        )

    new_flat = dict(flat)
    mismatched = []
    for tk in sorted(wanted):
        fk = mapping[tk]
        target = flat[fk]
        value = _from_torch_layout(np.asarray(state_dict[tk]))
        if tuple(value.shape) != tuple(target.shape):
            mismatched.append(
                f"{tk}: checkpoint {_torch_shape(value.shape)} vs model "
                f"{_torch_shape(tuple(target.shape))}"
            )
            continue
        new_flat[fk] = jnp.asarray(value, dtype=target.dtype)
    if mismatched:
        raise ValueError(
            "shape mismatch (torch layout) for "
            + _fmt(mismatched)
            + ". Check the architecture name / num_classes (skip_head=True keeps a fresh head)."
        )
    out = traverse_util.unflatten_dict(new_flat)
    return freeze(out) if isinstance(variables, FrozenDict) else out


def _torch_to_numpy(state: Mapping, path: pathlib.Path) -> dict[str, np.ndarray]:
    import torch

    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(
                f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; pass a plain "
                "state dict (model.state_dict())"
            )
        v = v.detach().cpu()
        if v.dtype == torch.bfloat16:
            v = v.float()
        out[k] = v.numpy()
    return out


def load_state_dict_file(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Read a state dict (name -> numpy array) from .npz, .safetensors or .pth/.pt."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
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
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return _torch_to_numpy(state, path)
