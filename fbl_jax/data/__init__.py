"""Data: long-tailed subsets, sources, samplers, the on-device pipeline, eval batches.

The trainer calls :func:`build_datasets` only. Importing this package never imports
TensorFlow: the tf.data pipeline (``pipeline="tf"``) and tfds are loaded lazily.
"""

from fbl_jax.data.bundle import DataBundle, build_datasets, carve_minival
from fbl_jax.data.device_pipeline import DevicePipeline, cifar_augment_numpy
from fbl_jax.data.eval_batches import eval_batches, num_eval_batches
from fbl_jax.data.long_tail import (
    class_counts_from_labels,
    long_tail_counts,
    select_long_tail_indices,
    shot_groups,
)
from fbl_jax.data.samplers import SAMPLER_NAMES, make_sampler
from fbl_jax.data.sources import (
    ArraySplit,
    FileSplit,
    list_image_folder,
    load_image_folder_arrays,
    load_synthetic_digits,
    load_tfds_arrays,
    read_split_list,
)

__all__ = [
    "SAMPLER_NAMES",
    "ArraySplit",
    "DataBundle",
    "DevicePipeline",
    "FileSplit",
    "build_datasets",
    "carve_minival",
    "cifar_augment_numpy",
    "class_counts_from_labels",
    "eval_batches",
    "list_image_folder",
    "load_image_folder_arrays",
    "load_synthetic_digits",
    "load_tfds_arrays",
    "long_tail_counts",
    "make_sampler",
    "num_eval_batches",
    "read_split_list",
    "select_long_tail_indices",
    "shot_groups",
]
