"""``build_datasets``: the one data entry point of the trainer.

It loads a source, carves the long-tailed training subset (LDAM's recipe) and a minival from
the images the subset left unused, builds the sampler and the training pipeline (on-device for
in-memory arrays, tf.data for file lists) and the padded/masked evaluation iterators.
TensorFlow is imported only for ``pipeline="tf"`` (and tfds only for ``source="tfds"``).
"""

from __future__ import annotations

import dataclasses
import logging
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
from fbl_jax.data.provenance import data_provenance
from fbl_jax.data.samplers import make_sampler
from fbl_jax.errors import DataError

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
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)  # data.json of a run
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
        raise DataError(f"data.{name} must be set for source={source!r}")
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
            raise DataError(
                "source='tfds' loads a small dataset into memory; use pipeline='device' "
                "(for big data use source='image_folder' or 'split_list' with pipeline='tf')"
            )
        name = _require(cfg, "name", source)
        data_dir, download = cfg.get("data_dir", None), bool(_get(cfg, "download", False))
        train_name, test_name = _get(cfg, "train_split", "train"), _get(cfg, "test_split", "test")
        train = sources.load_tfds_arrays(name, train_name, data_dir, download)
        return train, {"test": sources.load_tfds_arrays(name, test_name, data_dir, download)}
    if source == "split_list":
        root = _require(cfg, "root", source)
        c = cfg.get("num_classes", None)
        train = sources.read_split_list(_require(cfg, "train_list", source), root, c)
        evals = {"test": sources.read_split_list(_require(cfg, "test_list", source), root, c)}
        if cfg.get("val_list", None):
            evals["minival"] = sources.read_split_list(cfg.get("val_list"), root, c)
        if pipeline == "device":  # small images (a packed CIFAR-LT subset): decode into memory
            return _decoded(train), {k: _decoded(v) for k, v in evals.items()}
        return train, evals
    if source == "synthetic_digits":
        if pipeline != "device":
            raise DataError("source='synthetic_digits' is in memory; use pipeline='device'")
        train, test = sources.load_synthetic_digits(
            train_fraction=_get(cfg, "train_fraction", 0.7), seed=_get(cfg, "split_seed", 0)
        )
        return train, {"test": test}
    raise DataError(f"unknown data source {source!r}; choose one of {SOURCES}")


def _check_listed_subset(cfg: Any, source: str, train: Split, num_classes: int, imbalance) -> None:
    """A train list that already is the LT subset must have the profile's class counts."""
    if source != "split_list":
        raise DataError(
            f"data.list_is_subset=True is for source='split_list' (a packed subset), not "
            f"{source!r}; set it to False"
        )
    have = np.bincount(train.labels, minlength=num_classes)
    if imbalance is None:
        return
    want = np.asarray(
        long_tail_counts(num_classes, int(have.max()), float(imbalance), cfg.get("profile", "exp"))
    )
    if not np.array_equal(have, want):
        raise DataError(
            f"data.list_is_subset=True but the train list's class counts {have.tolist()} are not "
            f"the IF {imbalance:g} profile {want.tolist()}; set data.imbalance_factor to the list's "
            "or pack the list again (fbl-reproduce pack)"
        )


def _decoded(split: sources.FileSplit) -> sources.ArraySplit:
    images = sources.decode_images(list(split.paths))
    return sources.ArraySplit(images, split.labels, split.class_names, np.asarray(split.paths))


BALANCE_TOLERANCE = 1.1  # a source split counts as balanced if max/min class size <= this


def long_tail_profile(
    cfg: Any, labels: np.ndarray, class_names: list[str], imbalance_factor: float
) -> list[int]:
    """Per-class counts of the long-tailed subset to carve from the source training split.

    LDAM's recipe carves from a BALANCED training set, with ``n_max`` = its images per class
    (default: the smallest class, which allows near-balanced sources such as the digits).

    A training POOL (``data.train_pool=True``) is a split that holds, per class, a seeded random
    sample of the full set large enough for the subsets it was built for (e.g. a CIFAR-100 copy
    that ships min(500, n_i(IF 50) + 100) images of class i). Its class sizes say nothing about
    the full set, so ``data.n_max`` must be given, and every class must hold the images the
    profile asks for (and leave the minival the full set would: :func:`check_pool_minival`).
    The subset is then drawn from the pool with the same recipe
    (:func:`select_long_tail_indices`): the same class counts and an equally unbiased choice, but
    NOT the images the full set gives at the same ``subset_seed`` (a seeded random pool cannot
    hold those). An unbalanced split without ``train_pool`` is an error, never a silent
    ``n_max`` = its smallest class; so is one with a class short of ``data.n_max``
    (:func:`check_full_set`).
    """
    num_classes = len(class_names)
    source_counts = np.bincount(labels, minlength=num_classes)
    profile = _get(cfg, "profile", "exp")
    n_max_cfg = cfg.get("n_max", None)
    lo, hi = int(source_counts.min()), int(source_counts.max())
    smallest = int(np.argmin(source_counts))
    if not bool(_get(cfg, "train_pool", False)):
        if n_max_cfg is not None:
            check_full_set(source_counts, class_names, int(n_max_cfg))
        if hi > BALANCE_TOLERANCE * lo:
            raise DataError(
                f"data.imbalance_factor={imbalance_factor:g} carves a long-tailed subset from a "
                f"balanced training split (LDAM's recipe), but this one has {lo} to {hi} images "
                f"per class (class {smallest} {class_names[smallest]!r} has {lo}). If it is a "
                "training pool holding per class the images the long-tailed subsets need (see "
                "the dataset's README), set data.train_pool=True and data.n_max=<images per "
                "class of the FULL training set, e.g. 500 for CIFAR-100>; the subset is then "
                "drawn from the pool (same class counts, not the same images the full set gives "
                "at this subset_seed). If the split is already long-tailed, leave "
                "data.imbalance_factor unset. Otherwise use the full training set."
            )
        n_max = lo if n_max_cfg is None else int(n_max_cfg)
        return long_tail_counts(num_classes, n_max, imbalance_factor, profile)
    if n_max_cfg is None:
        raise DataError(
            "data.train_pool=True needs data.n_max: the images per class of the FULL training "
            "set the pool was drawn from (500 for CIFAR-100, 5000 for CIFAR-10); a pool's own "
            "class sizes do not say it"
        )
    n_max = int(n_max_cfg)
    if hi > n_max:
        big = int(np.argmax(source_counts))
        raise DataError(
            f"data.n_max={n_max} but class {big} {class_names[big]!r} of the training pool has "
            f"{hi} images; n_max is the images per class of the full training set (>= any "
            "pool class)"
        )
    counts = long_tail_counts(num_classes, n_max, imbalance_factor, profile)
    short = [c for c in range(num_classes) if source_counts[c] < counts[c]]
    if short:
        c = short[0]
        raise DataError(
            f"the training pool is too small for data.imbalance_factor={imbalance_factor:g} "
            f"(n_max={n_max}, profile {profile!r}): {len(short)} classes hold fewer images "
            f"than the profile asks for, e.g. class {c} {class_names[c]!r} has "
            f"{source_counts[c]}, needs {counts[c]}. A pool holds only the images of the "
            "subsets it was built for (see its README); for this imbalance factor use the full "
            "training set with data.train_pool=False"
        )
    if lo == n_max:  # every class complete: this is the full set, and the usual subset
        logging.getLogger(__name__).info(
            "data.train_pool: the training split holds all n_max=%d images of every class (the "
            "full set); the IF %g subset is the full set's",
            n_max,
            imbalance_factor,
        )
        return counts
    logging.getLogger(__name__).warning(
        "data.train_pool: drawing the IF %g subset (%d images) from a training pool of %d "
        "(%d to %d per class), n_max=%d; same class counts as the full set, not the same images",
        imbalance_factor,
        sum(counts),
        len(labels),
        lo,
        hi,
        n_max,
    )
    return counts


def check_full_set(source_counts: np.ndarray, class_names: list[str], n_max: int) -> None:
    """With ``data.n_max`` and no ``train_pool``, every class must hold ``n_max`` images.

    The config then says the split IS the full training set (e.g. CIFAR-100's 500 per class).
    A split short of that is a pool or a partial copy (the lossless CIFAR-100 part 1 without
    part 2): its subset would not be the full set's, so say so instead of training on it.
    """
    short = np.flatnonzero(source_counts < n_max)
    if not short.size:
        return
    c = int(short[np.argmin(source_counts[short])])
    raise DataError(
        f"data.train_pool=False and data.n_max={n_max} say the training split is the full set "
        f"with {n_max} images per class, but {short.size} of its {len(source_counts)} classes "
        f"hold fewer (e.g. class {c} {class_names[c]!r} has {int(source_counts[c])}; "
        f"{int(source_counts.sum())} images in all): it is a pool or a partial copy, e.g. "
        "part 1 of the lossless CIFAR-100 copy alone. Extract the rest into the same folder "
        "(tar -xzf cifar100-lossless-part2.tar.gz -C <data.root>) for the full training set, or "
        "set data.train_pool=True to draw the subset from the pool (same class counts, not the "
        "same images)"
    )


def check_pool_minival(
    minival_counts: np.ndarray,
    subset_labels: np.ndarray,
    n_max: int,
    per_class: int,
    pool: Split,
) -> None:
    """A pool must leave the minival the full set would: min(per_class, n_max - n_c) per class.

    (E.g. a pool built for IF >= 50 holds enough images for an IF 10 training subset but not
    the 100 unused images per class a minival needs.)
    """
    num_classes = len(minival_counts)
    subset = np.bincount(subset_labels, minlength=num_classes)
    want = np.minimum(per_class, n_max - subset)
    short = np.flatnonzero(minival_counts < want)
    if short.size:
        c = int(short[0])
        raise DataError(
            f"the training pool leaves too few unused images for the minival: {short.size} "
            f"classes get fewer than the full training set would give, e.g. class {c} "
            f"{pool.class_names[c]!r}: {minival_counts[c]} instead of {want[c]} "
            f"(data.minival_per_class={per_class}). A pool holds only the images of the subsets "
            "it was built for (see its README); for this imbalance factor use the full training "
            "set with data.train_pool=False (or set data.minival_per_class=0: no minival)"
        )


def _check_tf_decodes(train: Split, evals: dict[str, Split]) -> None:
    """WebP files need a TensorFlow whose tf.io.decode_image reads WebP (TF >= 2.18)."""
    import tensorflow as tf

    if hasattr(tf.io, "decode_webp"):
        return
    for split in (train, *evals.values()):
        webp = next((str(p) for p in split.paths if str(p).lower().endswith(".webp")), None)
        if webp is not None:
            raise DataError(
                f"pipeline='tf' cannot decode WebP files such as {webp!r} with TensorFlow "
                f"{tf.__version__} (tf.io.decode_image reads WebP from TF 2.18); use "
                "pipeline='device' (Pillow) for small images, or upgrade TensorFlow"
            )


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
        raise DataError(f"unknown data source {source!r}; choose one of {SOURCES}")
    if pipeline not in PIPELINES:
        raise DataError(f"unknown data pipeline {pipeline!r}; choose one of {PIPELINES}")
    devices = process_count * local_device_count
    eval_bs = int(eval_batch_size or _get(cfg, "eval_batch_size", global_batch_size))
    if eval_bs % devices:
        raise DataError(
            f"eval batch size {eval_bs} is not divisible by {process_count} processes x "
            f"{local_device_count} local devices = {devices}; use a multiple of {devices}"
        )
    mean, std = tuple(_get(cfg, "mean", (0.5, 0.5, 0.5))), tuple(_get(cfg, "std", (0.5, 0.5, 0.5)))

    train, evals = _load_source(cfg, source, pipeline)
    num_classes = int(_get(cfg, "num_classes", len(train.class_names)))
    if len(train.class_names) != num_classes:
        raise DataError(
            f"data.num_classes={num_classes} but source {source!r} has "
            f"{len(train.class_names)} classes; set data.num_classes={len(train.class_names)}"
        )

    # Long-tailed subset (LDAM recipe) and minival from what it left unused.
    imbalance = cfg.get("imbalance_factor", None)
    subset_seed = int(_get(cfg, "subset_seed", 0))
    train_indices = None
    source_train = train
    if bool(_get(cfg, "train_pool", False)) and (imbalance is None or float(imbalance) == 1.0):
        raise DataError(
            "data.train_pool=True says the training split is a pool to draw a long-tailed subset "
            "from, but data.imbalance_factor is not set; set it (e.g. 100), or set "
            "data.train_pool=False to train on the split as it is"
        )
    if bool(_get(cfg, "list_is_subset", False)):
        _check_listed_subset(cfg, source, train, num_classes, imbalance)
    elif imbalance is not None and float(imbalance) != 1.0:
        counts = long_tail_profile(cfg, train.labels, train.class_names, float(imbalance))
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
            if bool(_get(cfg, "train_pool", False)):
                check_pool_minival(
                    minival_counts, train.labels, int(cfg.n_max), per_class, source_train
                )
            if len(mv):
                evals["minival"] = source_train.take(mv)
    class_counts = class_counts_from_labels(train.labels, num_classes)
    provenance = data_provenance(cfg, source_train, train, evals)

    sampler = make_sampler(
        _get(cfg, "sampler", "instance"),
        train.labels,
        class_counts,
        k=int(_get(cfg, "sampler_k", 4)),
        power=float(_get(cfg, "sampler_power", 0.5)),
        num_epochs=num_epochs or cfg.get("num_epochs", None),
    )
    # BBN's re-balancing branch: a second stream of the same length as the main sampler's epoch
    second_name = _get(cfg, "second_sampler", "") or ""
    second_sampler = None
    if second_name:
        if pipeline != "device":
            raise DataError(
                f"data.second_sampler={second_name!r} needs data.pipeline='device' (the tf "
                "pipeline has one stream)"
            )
        second_sampler = make_sampler(
            second_name,
            train.labels,
            class_counts,
            num_samples=sampler.num_samples,
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
            raise DataError(
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
            second_sampler=second_sampler,
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

        _check_tf_decodes(train, evals)

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
        provenance=provenance,
        _eval_factories=factories,
    )
