"""What a run trained and was tested on, written beside its results (data.json).

A result on the lossless CIFAR copy and one on the lossy JPEG copy look the same in a table; the
fingerprints of the decoded pixels tell them apart by reading the run, not the prose. The pixel
sums of the full splits can be checked against the data's own README.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from fbl_jax.data import sources


def split_fingerprint(split: sources.ArraySplit | sources.FileSplit) -> dict[str, Any]:
    """sha256 of a split's decoded pixels and labels (in memory) or of its file list (files
    decoded while training, so their pixels are not at hand)."""
    h = hashlib.sha256()
    labels = np.ascontiguousarray(split.labels, dtype=np.int64)
    if isinstance(split, sources.ArraySplit):
        images = np.ascontiguousarray(split.images, dtype=np.uint8)
        h.update(repr(images.shape).encode())
        h.update(memoryview(images).cast("B"))
        h.update(memoryview(labels).cast("B"))
        return {
            "images": len(split),
            "of": "decoded pixels (uint8) and labels",
            "sha256": h.hexdigest(),
            "pixel_sum": int(images.sum(dtype=np.uint64)),
        }
    for path, label in zip(split.paths, labels):
        h.update(f"{os.fsdecode(path)}\t{int(label)}\n".encode())
    return {"images": len(split), "of": "file paths and labels", "sha256": h.hexdigest()}


def data_provenance(
    cfg: Any, source_train: Any, train: Any, evals: dict[str, Any]
) -> dict[str, Any]:
    """The data's origin (source, folder or tfds name) and each split's fingerprint:
    `source_train` is the full training split, `train` the (long-tailed) subset trained on."""
    where: dict[str, Any] = {"source": cfg.get("source", "image_folder")}
    for key in ("root", "train_list", "test_list", "val_list", "name", "data_dir"):
        value = cfg.get(key, None)
        if value:
            where[key] = os.path.abspath(value) if key != "name" else value
    splits = {"train_source": split_fingerprint(source_train)}
    if train is not source_train:
        splits["train"] = split_fingerprint(train)
    splits.update({name: split_fingerprint(split) for name, split in evals.items()})
    return {**where, "splits": splits}
