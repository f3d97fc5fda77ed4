"""Per-host tf.data pipelines for file-list datasets (ImageNet-LT, Places-LT, iNaturalist).

The data position is a pure function of (seed, step): epoch e's order is
``sampler.indices(fold_in(PRNGKey(seed), e), e)``, global batch g is ``order[g·B:(g+1)·B]``,
host p takes the contiguous slice ``[p·B/P, (p+1)·B/P)`` of it, and every example's augmentation
uses stateless TF randomness seeded from (seed, global step, position in the global batch).
So ``iterator(start_step=s)`` replays an uninterrupted run from step s on, and the global batch
content does not depend on the number of hosts or local devices.

TensorFlow is imported here at module level; the data bundle imports this module lazily so the
CIFAR (on-device) path never loads TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import jax
import numpy as np
import tensorflow as tf

from fbl_jax.data import tf_augment

AUTOTUNE = tf.data.AUTOTUNE

# Tags that separate the stateless random streams derived from the run seed.
_AUGMENT_TAG = 0x41554720  # per-example augmentation
_MIXUP_TAG = 0x4D495850  # per-step mixup coefficient


class Sampler(Protocol):
    """What the pipeline needs from a sampler (see ``fbl_jax.data.samplers``)."""

    num_samples: int

    def indices(self, key: jax.Array, epoch: int) -> Any: ...


class BadImageError(ValueError):
    """An image file could not be read or decoded; the message names the file."""


def check_sharding(
    global_batch_size: int, process_index: int, process_count: int, local_device_count: int
) -> tuple[int, int]:
    """Validate the host/device split; returns (per-host batch, per-device batch)."""
    if process_count < 1 or local_device_count < 1:
        raise ValueError(
            f"process_count={process_count} and local_device_count={local_device_count} "
            "must be >= 1"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index} must be in [0, process_count={process_count})"
        )
    shards = process_count * local_device_count
    if global_batch_size < 1 or global_batch_size % shards:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by process_count="
            f"{process_count} × local_device_count={local_device_count} = {shards}; "
            f"use a multiple of {shards} (e.g. {max(1, round(global_batch_size / shards)) * shards})"
        )
    local = global_batch_size // process_count
    return local, local // local_device_count


def _check_files(paths: Sequence[str], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    paths_arr = np.asarray([str(p) for p in paths], dtype=object)
    labels_arr = np.asarray(labels, dtype=np.int64)
    if paths_arr.ndim != 1 or len(paths_arr) == 0:
        raise ValueError(f"paths must be a non-empty list of files, got {len(paths_arr)} entries")
    if labels_arr.shape != paths_arr.shape:
        raise ValueError(
            f"labels has shape {labels_arr.shape} but there are {len(paths_arr)} paths; "
            "give one integer label per path"
        )
    return paths_arr, labels_arr


def _read(path: tf.Tensor) -> tf.Tensor:
    return tf.io.read_file(path)


def _find_bad_file(paths: Sequence[str], load: Any) -> str | None:
    """Eagerly re-run ``load(path)`` on each candidate; the first that fails is the culprit."""
    for path in paths:
        try:
            load(path)
        except (tf.errors.OpError, ValueError):
            return str(path)
    return None


def _raise_bad_batch(err: Exception, paths: Sequence[str], load: Any, where: str) -> None:
    bad = _find_bad_file(paths, load)
    if bad is not None:
        raise BadImageError(
            f"could not read/decode image file {bad!r} ({where}): {err.__class__.__name__}: "
            f"{getattr(err, 'message', err)}. Fix or remove this file from the list."
        ) from err
    raise err


def _shard_devices(batch: dict[str, np.ndarray], local_device_count: int) -> dict[str, np.ndarray]:
    return {k: v.reshape((local_device_count, -1) + v.shape[1:]) for k, v in batch.items()}


class TrainPipeline:
    """Endless per-host training iterator over a file list; see the module docstring."""

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        *,
        sampler: Sampler,
        global_batch_size: int,
        process_index: int,
        process_count: int,
        local_device_count: int,
        image_size: int = 224,
        seed: int = 0,
        mixup_alpha: float = 0.0,
        mean: Sequence[float],
        std: Sequence[float],
        num_parallel_calls: int = AUTOTUNE,
        augment: str = "imagenet",
        cifar_pad: int = 4,
        crop_scale: Sequence[float] = tf_augment.RRC_SCALE,
        crop_ratio: Sequence[float] = tf_augment.RRC_RATIO,
    ) -> None:
        self.paths, self.labels = _check_files(paths, labels)
        self.local_batch_size, self.per_device_batch_size = check_sharding(
            global_batch_size, process_index, process_count, local_device_count
        )
        tf_augment.check_augment(augment)
        tf_augment.normalize(tf.zeros([1, 1, 3]), mean, std)  # validates mean/std now
        if mixup_alpha < 0:
            raise ValueError(f"mixup_alpha={mixup_alpha} must be >= 0 (0 disables mixup)")
        if mixup_alpha > 0 and self.local_batch_size % 2:
            raise ValueError(
                f"mixup pairs neighbouring examples, so the per-host batch "
                f"(global_batch_size={global_batch_size} / process_count={process_count} = "
                f"{self.local_batch_size}) must be even; change the batch size"
            )
        num_samples = int(sampler.num_samples)
        if num_samples < global_batch_size:
            raise ValueError(
                f"sampler.num_samples={num_samples} < global_batch_size={global_batch_size}: "
                "an epoch would have no step; lower the batch size"
            )
        self.sampler = sampler
        self.global_batch_size = global_batch_size
        self.process_index = process_index
        self.process_count = process_count
        self.local_device_count = local_device_count
        self.image_size = image_size
        self.seed = seed
        self.mixup_alpha = float(mixup_alpha)
        self.mean, self.std = tuple(mean), tuple(std)
        self.num_parallel_calls = num_parallel_calls
        self.augment = augment
        self.cifar_pad = cifar_pad
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.num_samples = num_samples
        self.steps_per_epoch = num_samples // global_batch_size
        self._host_lo = process_index * self.local_batch_size

    # --- the index stream: pure functions of (seed, step) -------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """Dataset indices of epoch ``epoch`` in sampling order (num_samples,)."""
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), epoch)
        order = np.asarray(self.sampler.indices(key, epoch)).astype(np.int64)
        if order.shape != (self.num_samples,):
            raise ValueError(
                f"sampler.indices returned shape {order.shape}, expected ({self.num_samples},)"
            )
        if order.min() < 0 or order.max() >= len(self.paths):
            raise ValueError(
                f"sampler.indices gave indices in [{order.min()}, {order.max()}] but there are "
                f"{len(self.paths)} paths; the sampler and the file list disagree"
            )
        return order

    def host_step_indices(self, step: int, order: np.ndarray | None = None) -> np.ndarray:
        """Dataset indices this host loads at global step ``step`` (local_batch_size,)."""
        epoch, g = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch) if order is None else order
        start = g * self.global_batch_size + self._host_lo
        return order[start : start + self.local_batch_size]

    def _steps(self, start_step: int) -> Iterator[tuple[np.ndarray, ...]]:
        positions = np.arange(self._host_lo, self._host_lo + self.local_batch_size, dtype=np.int64)
        step = start_step
        while True:
            epoch = step // self.steps_per_epoch
            order = self.epoch_order(epoch)
            while step // self.steps_per_epoch == epoch:
                idx = self.host_step_indices(step, order)
                steps = np.full(self.local_batch_size, step, dtype=np.int64)
                yield self.paths[idx].astype(str), self.labels[idx], steps, positions
                step += 1

    # --- per-example and per-batch transforms -------------------------------------------
    def _load(self, path: tf.Tensor, step: tf.Tensor, position: tf.Tensor) -> tf.Tensor:
        seed = tf.constant([self.seed, _AUGMENT_TAG], tf.int64)
        seed = tf.random.experimental.stateless_fold_in(seed, step)
        seed = tf.random.experimental.stateless_fold_in(seed, position)
        return tf_augment.train_transform(
            _read(path),
            seed,
            augment=self.augment,
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            cifar_pad=self.cifar_pad,
            scale=self.crop_scale,
            ratio=self.crop_ratio,
        )

    def _mixup(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """λ ~ Beta(α, α) per global step; example 2k mixes with 2k+1 (and vice versa).

        Pairs never straddle hosts (host slices start at even positions), so the mixed global
        batch is the same for any number of hosts/devices.
        """
        seed = tf.constant([self.seed, _MIXUP_TAG], tf.int64)
        seed = tf.random.experimental.stateless_fold_in(seed, batch["step"][0])
        s1, s2 = tf_augment.split_seed(seed, 2)
        g1 = tf.random.stateless_gamma([], s1, alpha=self.mixup_alpha)
        g2 = tf.random.stateless_gamma([], s2, alpha=self.mixup_alpha)
        lam = g1 / (g1 + g2)

        def partner(x: tf.Tensor) -> tf.Tensor:
            shape = tf.shape(x)
            pairs = tf.reshape(x, tf.concat([[-1, 2], shape[1:]], 0))
            return tf.reshape(tf.reverse(pairs, axis=[1]), shape)

        image = batch["image"]
        out = dict(batch)
        out["image"] = lam * image + (1.0 - lam) * partner(image)
        out["label_b"] = partner(batch["label"])
        out["mix_lam"] = tf.fill(tf.shape(batch["label"]), lam)
        return out

    def dataset(self, start_step: int = 0) -> tf.data.Dataset:
        """Host batches (flat: local_batch_size first) from ``start_step`` on, forever."""
        if start_step < 0:
            raise ValueError(f"start_step={start_step} must be >= 0")
        n = self.local_batch_size
        ds = tf.data.Dataset.from_generator(
            lambda: self._steps(start_step),
            output_signature=(
                tf.TensorSpec([n], tf.string),
                tf.TensorSpec([n], tf.int64),
                tf.TensorSpec([n], tf.int64),
                tf.TensorSpec([n], tf.int64),
            ),
        ).unbatch()
        ds = ds.map(
            lambda path, label, step, pos: {
                "image": self._load(path, step, pos),
                "label": tf.cast(label, tf.int32),
                "step": step,
            },
            num_parallel_calls=self.num_parallel_calls,
            deterministic=True,
        )
        ds = ds.batch(n, drop_remainder=True)
        if self.mixup_alpha > 0:
            ds = ds.map(self._mixup, num_parallel_calls=self.num_parallel_calls, deterministic=True)
        ds = ds.map(lambda b: {k: v for k, v in b.items() if k != "step"})
        options = tf.data.Options()
        options.deterministic = True
        return ds.with_options(options).prefetch(AUTOTUNE)

    def iterator(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Dicts of numpy arrays shaped (local_device_count, per_device, ...), forever.

        Keys: ``image`` float32 (normalised), ``label`` int32; with mixup also ``label_b``
        int32 (the partner's label) and ``mix_lam`` float32 (local_device_count,) — the step's λ,
        so the loss is λ·CE(label) + (1 − λ)·CE(label_b).
        """
        step = start_step
        it = self.dataset(start_step).as_numpy_iterator()
        while True:
            try:
                batch = next(it)
            except tf.errors.OpError as err:
                paths = self.paths[self.host_step_indices(step)].astype(str)
                _raise_bad_batch(
                    err,
                    paths,
                    lambda p, s=step: self._load(tf.constant(p), tf.constant(s, tf.int64), 0),
                    f"training step {step}",
                )
            batch = _shard_devices(batch, self.local_device_count)
            if "mix_lam" in batch:  # one λ per step: a scalar per device, as on-device mixup
                batch["mix_lam"] = batch["mix_lam"][:, 0]
            yield batch
            step += 1


# The public constructor: per-host training pipeline with `.steps_per_epoch` and
# `.iterator(start_step=0)` (arguments documented on TrainPipeline).
make_train_pipeline = TrainPipeline


def eval_host_positions(
    num_examples: int, global_batch_size: int, process_index: int, process_count: int
) -> np.ndarray:
    """Positions (into the split) this host evaluates, (num_batches, B/P); ≥ num_examples = pad."""
    local = global_batch_size // process_count
    num_batches = math.ceil(num_examples / global_batch_size)
    starts = np.arange(num_batches, dtype=np.int64)[:, None] * global_batch_size
    return starts + process_index * local + np.arange(local, dtype=np.int64)[None, :]


def make_eval_iterator(
    paths: Sequence[str],
    labels: Sequence[int],
    *,
    global_batch_size: int,
    process_index: int,
    process_count: int,
    local_device_count: int,
    image_size: int = 224,
    mean: Sequence[float],
    std: Sequence[float],
    augment: str = "imagenet",
    num_parallel_calls: int = AUTOTUNE,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over a split: dicts ``image``, ``label``, ``mask`` (1 real, 0 pad).

    The split is cut into global batches in order (last one padded); each host takes its
    contiguous part of each global batch, so every example appears once with mask 1 overall.
    Arrays are shaped (local_device_count, per_device, ...). Pads are zero images, label 0.
    """
    paths_arr, labels_arr = _check_files(paths, labels)
    local, _ = check_sharding(global_batch_size, process_index, process_count, local_device_count)
    tf_augment.check_augment(augment)
    tf_augment.normalize(tf.zeros([1, 1, 3]), mean, std)
    pos = eval_host_positions(len(paths_arr), global_batch_size, process_index, process_count)
    flat = pos.reshape(-1)
    mask = flat < len(paths_arr)
    idx = np.where(mask, flat, 0)
    host_paths = np.where(mask, paths_arr[idx], "").astype(str)
    host_labels = np.where(mask, labels_arr[idx], 0).astype(np.int32)

    def load(path: tf.Tensor) -> tf.Tensor:
        return tf_augment.eval_transform(
            _read(path), augment=augment, image_size=image_size, mean=mean, std=std
        )

    def element(path: tf.Tensor, label: tf.Tensor, m: tf.Tensor) -> dict[str, tf.Tensor]:
        image = tf.cond(
            m > 0, lambda: load(path), lambda: tf.zeros([image_size, image_size, 3], tf.float32)
        )
        return {"image": image, "label": label, "mask": m}

    ds = tf.data.Dataset.from_tensor_slices((host_paths, host_labels, mask.astype(np.int32)))
    ds = ds.map(element, num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = ds.batch(local, drop_remainder=True).prefetch(AUTOTUNE)

    def batches() -> Iterator[dict[str, np.ndarray]]:
        it = ds.as_numpy_iterator()
        for b in range(pos.shape[0]):
            try:
                batch = next(it)
            except tf.errors.OpError as err:
                rows = slice(b * local, (b + 1) * local)
                cand = [p for p, m in zip(host_paths[rows], mask[rows]) if m]
                _raise_bad_batch(err, cand, lambda p: load(tf.constant(p)), f"eval batch {b}")
            yield _shard_devices(batch, local_device_count)

    return batches()
