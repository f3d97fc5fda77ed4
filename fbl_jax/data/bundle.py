"""``build_datasets``: the one data entry point of the trainer.

It loads a source, carves the long-tailed training subset (LDAM's recipe) and a minival from
the images the subset left unused, builds the sampler and the training pipeline (on-device for
in-memory arrays, tf.data for file lists) and the padded/masked evaluation iterators.
TensorFlow is imported only for ``pipeline="tf"`` (and tfds only for ``source="tfds"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from fbl_jax.data import sources
from fbl_jax.data.device_pipeline import DevicePipeline
from fbl_jax.data.eval_batches import eval_batches
from fbl_jax.data.long_tail import (
    class_counts_from_labels,
    long_tail_counts,
    select_long_tail_indices,
)
from fbl_jax.data.samplers import make_sampler

SOURCES = ("image_folder", "tfds", "split_list", "synthetic_digits")
PIPELINES = ("device", "tf")

Split = sources.ArraySplit | sources.FileSplit


@dataclasses.dataclass
class DataBundle:
    """Everything the trainer needs from the data side (see ``build_datasets``)."""

    num_classes: int
    class_names: list[str]
    class_counts: np.ndarray  # int64 (C,), of the actual training subset
    num_train: int
    steps_per_epoch: int
    image_shape: tuple[int, int, int]
    pipeline: str  # "device" | "tf"
    train: Any  # DevicePipeline, or the tf pipeline (``.iterator(start_step)``)
    eval_splits: tuple[str, ...]
    eval_sizes: dict[str, int]
    minival_counts: np.ndarray | None  # int64 (C,) per-class minival sizes, None if no minival
    train_indices: np.ndarray | None  # indices of the LT subset into the source train split
    _eval_factories: dict[str, Callable[[], Iterator[dict[str, np.ndarray]]]] = dataclasses.field(
        repr=False, default_factory=dict
    )

    def eval_iter(self, split_name: str) -> Iterator[dict[str, np.ndarray]]:
        """A fresh pass over an eval split: dicts ``image``, ``label``, ``mask`` (1 real, 0 pad)."""
        if split_name not in self._eval_factories:
            raise ValueError(f"unknown eval split {split_name!r}; available: {self.eval_splits}")
        return self._eval_factories[split_name]()


def _get(cfg: Mapping[str, Any] | Any, name: str, default: Any = None) -> Any:
    value = cfg.get(name, default)
    return default if value is None else value


def _require(cfg: Any, name: str, source: str) -> Any:
    value = cfg.get(name, None)
    if value in (None, ""):
        raise ValueError(f"data.{name} must be set for source={source!r}")
    return value


def _load_source(cfg: Any, source: str, pipeline: str) -> tuple[Split, dict[str, Split]]:
    """(train split, {eval name: split}) in the source's original order."""
    if source == "image_folder":
        root = _require(cfg, "root", source)
        train_name, test_name = _get(cfg, "train_split", "train"), _get(cfg, "test_split", "test")
        if pipeline == "device":
            cache = cfg.get("cache_dir", None)
            train = sources.load_image_folder_arrays(root, train_name, cache_dir=cache)
            return train, {"test": sources.load_image_folder_arrays(root, test_name, cache)}
        return sources.list_image_folder(root, train_name), {
            "test": sources.list_image_folder(root, test_name)
        }
    if source == "tfds":
        if pipeline != "device":
            raise ValueError(
                "source='tfds' loads a small dataset into memory; use pipeline='device' "
                "(for big data use source='image_folder' or 'split_list' with pipeline='tf')"
            )
        name = _require(cfg, "name", source)
        data_dir, download = cfg.get("data_dir", None), bool(_get(cfg, "download", False))
        train_name, test_name = _get(cfg, "train_split", "train"), _get(cfg, "test_split", "test")
        train = sources.load_tfds_arrays(name, train_name, data_dir, download)
        return train, {"test": sources.load_tfds_arrays(name, test_name, data_dir, download)}
    if source == "split_list":
        if pipeline != "tf":
            raise ValueError("source='split_list' reads image files of any size; use pipeline='tf'")
        root = _require(cfg, "root", source)
        c = cfg.get("num_classes", None)
        train = sources.read_split_list(_require(cfg, "train_list", source), root, c)
        evals = {"test": sources.read_split_list(_require(cfg, "test_list", source), root, c)}
        if cfg.get("val_list", None):
            evals["minival"] = sources.read_split_list(cfg.get("val_list"), root, c)
        return train, evals
    if source == "synthetic_digits":
        if pipeline != "device":
            raise ValueError("source='synthetic_digits' is in memory; use pipeline='device'")
        train, test = sources.load_synthetic_digits(
            train_fraction=_get(cfg, "train_fraction", 0.7), seed=_get(cfg, "split_seed", 0)
        )
        return train, {"test": test}
    raise ValueError(f"unknown data source {source!r}; choose one of {SOURCES}")


def carve_minival(
    labels: np.ndarray, used: np.ndarray, num_classes: int, per_class: int, seed: int
) -> np.ndarray:
    """Up to ``per_class`` indices per class among the examples NOT in ``used``, seeded.

    Classes whose images are all in the training subset (the CIFAR-LT head) get fewer or none.
    """
    unused = np.ones(len(labels), bool)
    unused[used] = False
    rng = np.random.default_rng([int(seed), 0x6D696E69])  # a stream apart from the subset's
    chosen = []
    for c in range(num_classes):
        candidates = np.flatnonzero(unused & (labels == c))
        chosen.append(rng.permutation(candidates)[:per_class])
    return np.concatenate(chosen).astype(np.int64) if chosen else np.zeros(0, np.int64)


def build_datasets(
    data_config: Any,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    local_device_count: int | None = None,
    eval_batch_size: int | None = None,
    num_epochs: int | None = None,
) -> DataBundle:
    """Build the data side of a run from ``config.data`` (see the module docstring).

    ``eval_batch_size`` (global) defaults to ``data.eval_batch_size`` or ``global_batch_size``;
    ``num_epochs`` is the T of the progressive sampler (else ``data.num_epochs``).
    """
    cfg = data_config
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    local_device_count = (
        jax.local_device_count() if local_device_count is None else local_device_count
    )
    source = _get(cfg, "source", "image_folder")
    pipeline = _get(cfg, "pipeline", "device")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; choose one of {SOURCES}")
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown data pipeline {pipeline!r}; choose one of {PIPELINES}")
    devices = process_count * local_device_count
    eval_bs = int(eval_batch_size or _get(cfg, "eval_batch_size", global_batch_size))
    if eval_bs % devices:
        raise ValueError(
            f"eval batch size {eval_bs} is not divisible by {process_count} processes x "
            f"{local_device_count} local devices = {devices}; use a multiple of {devices}"
        )
    mean, std = tuple(_get(cfg, "mean", (0.5, 0.5, 0.5))), tuple(_get(cfg, "std", (0.5, 0.5, 0.5)))

    train, evals = _load_source(cfg, source, pipeline)
    num_classes = int(_get(cfg, "num_classes", len(train.class_names)))
    if len(train.class_names) != num_classes:
        raise ValueError(
            f"data.num_classes={num_classes} but source {source!r} has "
            f"{len(train.class_names)} classes; set data.num_classes={len(train.class_names)}"
        )

    # Long-tailed subset (LDAM recipe) and minival from what it left unused.
    imbalance = cfg.get("imbalance_factor", None)
    subset_seed = int(_get(cfg, "subset_seed", 0))
    train_indices = None
    source_train = train
    if imbalance is not None and float(imbalance) != 1.0:
        source_counts = np.bincount(train.labels, minlength=num_classes)
        n_max = int(_get(cfg, "n_max", source_counts.min()))
        counts = long_tail_counts(num_classes, n_max, float(imbalance), _get(cfg, "profile", "exp"))
        train_indices = select_long_tail_indices(train.labels, counts, seed=subset_seed)
        train = train.take(train_indices)
    minival_counts = None
    if "minival" in evals:
        minival_counts = np.bincount(evals["minival"].labels, minlength=num_classes)
    else:
        per_class = int(_get(cfg, "minival_per_class", 100))
        if per_class > 0 and train_indices is not None:
            mv = carve_minival(
                source_train.labels, train_indices, num_classes, per_class, subset_seed
            )
            minival_counts = np.bincount(source_train.labels[mv], minlength=num_classes)
            if len(mv):
                evals["minival"] = source_train.take(mv)
    class_counts = class_counts_from_labels(train.labels, num_classes)

    sampler = make_sampler(
        _get(cfg, "sampler", "instance"),
        train.labels,
        class_counts,
        k=int(_get(cfg, "sampler_k", 4)),
        power=float(_get(cfg, "sampler_power", 0.5)),
        num_epochs=num_epochs or cfg.get("num_epochs", None),
    )
    pad = int(_get(cfg, "pad", 4))
    mixup_alpha = float(_get(cfg, "mixup_alpha", 0.0))
    factories: dict[str, Callable[[], Iterator[dict[str, np.ndarray]]]] = {}
    if pipeline == "device":
        h = train.images.shape[1]
        image_size = int(_get(cfg, "image_size", h))
        if image_size != h:
            raise ValueError(
                f"data.image_size={image_size} but the images are {h}x{h}; the on-device "
                f"pipeline trains and evaluates at the native size: set data.image_size={h}"
            )
        train_pipe = DevicePipeline(
            train.images,
            train.labels,
            sampler,
            global_batch_size=global_batch_size,
            mean=mean,
            std=std,
            num_devices=devices,
            pad=pad,
            crop_size=image_size,
            flip=bool(_get(cfg, "flip", True)),
            seed=seed,
            mixup_alpha=mixup_alpha,
        )
        for name, split in evals.items():
            factories[name] = lambda s=split: eval_batches(
                s.images,
                s.labels,
                global_batch=eval_bs,
                local_device_count=local_device_count,
                process_index=process_index,
                process_count=process_count,
                mean=mean,
                std=std,
            )
        image_shape = train_pipe.image_shape
    else:
        from fbl_jax.data import tf_pipeline  # TensorFlow only on this path

        image_size = int(_get(cfg, "image_size", 224))
        extra = {"augment": cfg.get("augment")} if cfg.get("augment", None) else {}
        sharding = dict(
            process_index=process_index,
            process_count=process_count,
            local_device_count=local_device_count,
        )
        train_pipe = tf_pipeline.make_train_pipeline(
            list(train.paths),
            train.labels,
            sampler=sampler,
            global_batch_size=global_batch_size,
            image_size=image_size,
            seed=seed,
            mixup_alpha=mixup_alpha,
            mean=mean,
            std=std,
            cifar_pad=pad,
            **sharding,
            **extra,
        )
        for name, split in evals.items():
            factories[name] = lambda s=split: tf_pipeline.make_eval_iterator(
                list(s.paths),
                s.labels,
                global_batch_size=eval_bs,
                image_size=image_size,
                mean=mean,
                std=std,
                **sharding,
                **extra,
            )
        image_shape = (image_size, image_size, 3)
    names = ("test", "minival")
    return DataBundle(
        num_classes=num_classes,
        class_names=list(train.class_names),
        class_counts=class_counts,
        num_train=len(train),
        steps_per_epoch=int(train_pipe.steps_per_epoch),
        image_shape=tuple(image_shape),
        pipeline=pipeline,
        train=train_pipe,
        eval_splits=tuple(n for n in names if n in factories),
        eval_sizes={n: len(evals[n]) for n in names if n in evals},
        minival_counts=minival_counts,
        train_indices=train_indices,
        _eval_factories=factories,
    )
