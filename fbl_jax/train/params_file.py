"""A finished run's parameters in one small file beside its records: final_params.npz.

Checkpoints (orbax folders with the optimizer state) are for resuming; this file is for using a
trained model: evaluating it, decoupling it (τ-norm, cRT), exporting it to PyTorch
(models.pretrained.export_to_torch), sharing it. A ResNet-32's is under 2 MB, so run
directories kept as results carry their model without their checkpoints:

    variables = fbl_jax.train.params_file.load_params("RUN/final_params.npz")
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np
from flax import traverse_util

FILE_NAME = "final_params.npz"
COLLECTIONS = ("params", "batch_stats")


def save_params(path: str | pathlib.Path, params: Any, batch_stats: Any) -> None:
    """Write the variables as flat '/'-joined keys (e.g. params/conv1/kernel); atomic."""
    flat = {}
    for collection, tree in zip(COLLECTIONS, (params, batch_stats)):
        for keys, value in traverse_util.flatten_dict(dict(tree or {})).items():
            flat["/".join((collection, *map(str, keys)))] = np.asarray(value)
    path = pathlib.Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, **flat)
    os.replace(tmp, path)


def load_params(path: str | pathlib.Path) -> dict[str, Any]:
    """{"params": ..., "batch_stats": ...} as model.apply takes them."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: a finished run writes {FILE_NAME}")
    with np.load(path) as z:
        flat = {tuple(k.split("/")): z[k] for k in z.files}
    nested = traverse_util.unflatten_dict(flat)
    return {c: nested.get(c, {}) for c in COLLECTIONS}
