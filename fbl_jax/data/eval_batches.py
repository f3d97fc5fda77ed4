"""Evaluation batches for in-memory arrays: padded, masked, split over hosts and devices.

Evaluation must count every example exactly once on any number of hosts, so the split is cut
into global batches of a fixed shape (one compiled eval step); the last one is padded with
zero images (``mask`` 0), and each host takes its contiguous part of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def num_eval_batches(n: int, global_batch: int) -> int:
    """Global batches needed to cover ``n`` examples (the last one padded)."""
    if global_batch < 1:
        raise ValueError(f"global_batch must be >= 1, got {global_batch}")
    return -(-int(n) // int(global_batch))


def eval_batches(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    global_batch: int,
    local_device_count: int,
    process_index: int,
    process_count: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Iterator[dict[str, np.ndarray]]:
    """Yield this host's part of each global batch.

    Each dict has ``image`` float32 (local_devices, per_device, H, W, 3) normalised as
    ``(x / 255 - mean) / std`` (0-1 scale mean/std), ``label`` int32 and ``mask`` float32
    (1 real, 0 padding), both (local_devices, per_device).
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must be in [0, {process_count})")
    devices = process_count * local_device_count
    if global_batch < 1 or global_batch % devices:
        raise ValueError(
            f"eval global batch {global_batch} is not divisible by {process_count} processes x "
            f"{local_device_count} local devices = {devices}; use a multiple of {devices}"
        )
    images = np.asarray(images)
    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    mean_np = np.asarray(mean, np.float32)
    std_np = np.asarray(std, np.float32)
    if np.any(mean_np > 1.0) or np.any(std_np > 1.0):
        raise ValueError(f"mean={mean!r}, std={std!r} must be on the 0-1 scale (divide by 255)")
    n = len(labels)
    per_host = global_batch // process_count
    per_device = per_host // local_device_count
    for b in range(num_eval_batches(n, global_batch)):
        pos = b * global_batch + process_index * per_host + np.arange(per_host)
        mask = pos < n
        idx = np.where(mask, pos, 0)
        x = images[idx].astype(np.float32) / 255.0
        x = (x - mean_np) / std_np
        x[~mask] = 0.0
        y = np.where(mask, labels[idx], 0).astype(np.int32)
        shape = (local_device_count, per_device)
        yield {
            "image": x.reshape(shape + x.shape[1:]),
            "label": y.reshape(shape),
            "mask": mask.astype(np.float32).reshape(shape),
        }
