"""Where images come from: image folders, split lists, tfds, and the offline digits set.

Every source returns an :class:`ArraySplit` (decoded uint8 images in memory, for small data such
as CIFAR) or a :class:`FileSplit` (paths + labels, decoded later by the tf.data pipeline).
"Original order" is defined per source (sorted file names, list-file order, tfds example ids) so
that the long-tailed subset drawn with a seed is reproducible.

No TensorFlow at import time: tfds is imported inside :func:`load_tfds_arrays` only.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from fbl_jax.errors import DataError

# Decoded by Pillow (the in-memory path) and by tf.io.decode_image (TF >= 2.18 reads WebP).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


@dataclasses.dataclass
class ArraySplit:
    """Decoded images (N, H, W, 3) uint8, labels (N,) int64, class names, optional ids (N,)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> ArraySplit:
        """The examples at ``indices`` (in that order)."""
        ids = None if self.ids is None else self.ids[indices]
        return ArraySplit(self.images[indices], self.labels[indices], self.class_names, ids)


@dataclasses.dataclass
class FileSplit:
    """Image paths (N,) and labels (N,) int64 with class names; images decoded elsewhere."""

    paths: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> FileSplit:
        """The examples at ``indices`` (in that order)."""
        return FileSplit(self.paths[indices], self.labels[indices], self.class_names)


# ----------------------------------------------------------------------------- image folders


def list_image_folder(root: str | os.PathLike, split: str) -> FileSplit:
    """``ROOT/<split>/<class>/*.{jpg,jpeg,png,webp}``: classes = sorted folder names, files sorted.

    Extensions match case-insensitively; other files (README, .txt) are ignored.
    """
    split_dir = os.path.join(os.fspath(root), split)
    layout = (
        "ROOT/<split>/<class name>/<image>.jpg|.jpeg|.png|.webp "
        "(e.g. ROOT/train/cat/0001.jpg or ROOT/train/cat/0001.webp)"
    )
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(
            f"image folder split {split_dir!r} does not exist; expected the layout {layout}"
        )
    class_names = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not class_names:
        raise FileNotFoundError(
            f"{split_dir!r} has no class sub-folders; expected the layout {layout}"
        )
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(split_dir, name)
        files = sorted(
            e.name
            for e in os.scandir(class_dir)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths.extend(os.path.join(class_dir, f) for f in files)
        labels.extend([label] * len(files))
    if not paths:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir!r}; expected {layout}"
        )
    return FileSplit(np.asarray(paths), np.asarray(labels, np.int64), class_names)


def _decode_hint(path: str) -> str:
    """Why a file may not decode, where the cause is the Pillow build rather than the file."""
    from PIL import features

    if path.lower().endswith(".webp") and not features.check("webp"):
        return " (this Pillow build has no WebP support: pip install -U pillow)"
    return ""


def decode_images(paths: Sequence[str]) -> np.ndarray:
    """Decode image files with Pillow to one uint8 RGB array (N, H, W, 3); sizes must agree.

    RGB files (JPEG, PNG, lossless or lossy WebP) give their stored pixels unchanged; grey and
    palette images are expanded to RGB and an alpha channel is dropped (``Image.convert("RGB")``).
    """
    from PIL import Image, UnidentifiedImageError

    out: np.ndarray | None = None
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                arr = np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(f"cannot decode image {path!r}: {e}{_decode_hint(path)}") from e
        if out is None:
            out = np.empty((len(paths),) + arr.shape, np.uint8)
        elif arr.shape != out.shape[1:]:
            raise DataError(
                f"image {path!r} has shape {arr.shape} but earlier images have {out.shape[1:]}; "
                "in-memory arrays need one size (resize the data, or use pipeline='tf')"
            )
        out[i] = arr
    if out is None:
        raise ValueError("no image paths to decode")
    return out


def _cache_key(root: str, split: str, split_files: FileSplit) -> str:
    """Hash of root, split and the (relative path, size, mtime) of every file."""
    h = hashlib.sha256()
    h.update(os.path.abspath(root).encode())
    h.update(b"\0" + split.encode() + b"\0")
    for path in split_files.paths:
        st = os.stat(path)
        h.update(f"{os.path.relpath(path, root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def load_image_folder_arrays(
    root: str | os.PathLike, split: str, cache_dir: str | os.PathLike | None = None
) -> ArraySplit:
    """Decode a whole image-folder split into memory (small images such as CIFAR).

    Decoding takes ~15 s for 50k JPEGs and ~20 s for CIFAR-10's 60k lossless WebP files (on a
    2-core machine), so with ``cache_dir`` the decoded array is stored as an ``.npz`` keyed by
    root + split + file list (names, sizes, mtimes) and re-used on the next run (~3 s).
    ``ids`` are the file paths relative to ``ROOT/<split>``.
    """
    root = os.fspath(root)
    files = list_image_folder(root, split)
    ids = np.asarray([os.path.relpath(p, os.path.join(root, split)) for p in files.paths])
    cache_path = None
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        key = _cache_key(root, split, files)
        cache_path = os.path.join(os.fspath(cache_dir), f"imagefolder_{split}_{key}.npz")
        if os.path.exists(cache_path):
            with np.load(cache_path) as z:
                images = z["images"]
            if len(images) == len(files):
                return ArraySplit(images, files.labels, files.class_names, ids)
    images = decode_images(list(files.paths))
    if cache_path is not None:
        tmp = f"{cache_path}.tmp{os.getpid()}.npz"
        np.savez(tmp, images=images)
        os.replace(tmp, cache_path)
    return ArraySplit(images, files.labels, files.class_names, ids)


# ----------------------------------------------------------------------------- split lists


def read_split_list(
    list_file: str | os.PathLike, image_root: str | os.PathLike, num_classes: int | None = None
) -> FileSplit:
    """Read an OLTR/Decoupling split list: lines ``<relative path> <int label>``.

    Class names come from the parent folder of each class's first example
    (``train/airfield/x.jpg`` -> ``airfield``), else ``class_<id>``.
    """
    list_file = os.fspath(list_file)
    if not os.path.isfile(list_file):
        raise FileNotFoundError(
            f"split list {list_file!r} does not exist; expected a text file of lines "
            "'<relative image path> <integer label>'"
        )
    rel_paths: list[str] = []
    labels: list[int] = []
    with open(list_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(maxsplit=1)
            try:
                if len(parts) != 2:
                    raise ValueError
                label = int(parts[1])
            except ValueError:
                raise DataError(
                    f"{list_file}:{lineno}: cannot parse {text!r}; expected "
                    "'<relative image path> <integer label>'"
                ) from None
            rel_paths.append(parts[0])
            labels.append(label)
    if not labels:
        raise DataError(f"split list {list_file!r} has no entries")
    labels_np = np.asarray(labels, np.int64)
    c = int(labels_np.max()) + 1 if num_classes is None else int(num_classes)
    bad = np.flatnonzero((labels_np < 0) | (labels_np >= c))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{list_file}: label {labels[i]} of {rel_paths[i]!r} is outside [0, {c}) "
            f"(num_classes={c}); fix num_classes or the list"
        )
    names = [f"class_{k}" for k in range(c)]
    seen = np.zeros(c, bool)
    for rel, label in zip(rel_paths, labels):
        if not seen[label]:
            seen[label] = True
            parent = os.path.basename(os.path.dirname(rel))
            if parent:
                names[label] = parent
    paths = np.asarray([os.path.join(os.fspath(image_root), p) for p in rel_paths])
    return FileSplit(paths, labels_np, names)


# ----------------------------------------------------------------------------- tfds


def sort_order_from_ids(ids: Sequence[str | bytes]) -> np.ndarray:
    """Permutation that sorts tfds ids like ``train_00017`` by their integer; identity otherwise.

    tfds shuffles CIFAR's examples on disk; sorting by id restores the original order.
    """
    numbers = []
    for raw in ids:
        s = raw.decode() if isinstance(raw, bytes) else str(raw)
        m = re.fullmatch(r".*?(\d+)", s)
        if m is None:
            return np.arange(len(ids))
        numbers.append(int(m.group(1)))
    return np.argsort(np.asarray(numbers, np.int64), kind="stable")


def load_tfds_arrays(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None,
    download: bool = False,
    batch_size: int = 1024,
) -> ArraySplit:
    """A small tfds dataset (e.g. ``cifar10``) as uint8 arrays in original (example id) order."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ImportError(
            "source='tfds' needs tensorflow-datasets (pip install tensorflow-datasets "
            "tensorflow-cpu), or use source='image_folder'"
        ) from e
    builder = tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    if download:
        builder.download_and_prepare()
    try:
        ds = builder.as_dataset(split=split, batch_size=batch_size, shuffle_files=False)
    except AssertionError as e:
        if "could not find data" not in str(e):
            raise
        raise FileNotFoundError(
            f"tfds dataset {name!r} is not prepared in data_dir={data_dir!r}; prepare it with "
            f"`tfds build {name} --data_dir={data_dir}` or set --config.data.download=True"
        ) from e
    images, labels, ids = [], [], []
    for batch in tfds.as_numpy(ds):
        images.append(batch["image"])
        labels.append(batch["label"])
        if "id" in batch:
            ids.append(batch["id"])
    if not images:
        raise DataError(f"tfds {name!r} split {split!r} is empty")
    images_np = np.concatenate(images).astype(np.uint8)
    if images_np.ndim == 4 and images_np.shape[-1] == 1:
        images_np = np.repeat(images_np, 3, axis=-1)
    labels_np = np.concatenate(labels).astype(np.int64)
    ids_np = None
    if ids:
        ids_np = np.asarray(
            [i.decode() if isinstance(i, bytes) else str(i) for i in np.concatenate(ids)]
        )
        order = sort_order_from_ids(ids_np)
        images_np, labels_np, ids_np = images_np[order], labels_np[order], ids_np[order]
    label_feature = builder.info.features["label"]
    names = list(getattr(label_feature, "names", None) or [])
    if not names:
        names = [str(k) for k in range(int(label_feature.num_classes))]
    return ArraySplit(images_np, labels_np, names, ids_np)


# ----------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits file that ships with scikit-learn, read without importing scikit-learn.

    ``sklearn.datasets.load_digits`` returns the same arrays, but importing scikit-learn takes
    ~1.6 s on a 2-core machine: more than the demo's data needs, paid by every process.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("source='synthetic_digits' needs scikit-learn (pip install scikit-learn)")
    path = pathlib.Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.exists():
        raise ImportError(f"{path} is missing: reinstall scikit-learn (pip install scikit-learn)")
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def load_synthetic_digits(
    train_fraction: float = 0.7, seed: int = 0
) -> tuple[ArraySplit, ArraySplit]:
    """scikit-learn's bundled 8x8 digits as a tiny offline image dataset (16x16x3 uint8).

    Each class is split ``train_fraction`` / rest by a seeded permutation (stratified);
    both splits keep the original order of the 1,797 images.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    images, target = _digits_arrays()
    x = np.round(images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8), 0..16 -> 0..255
    x = np.kron(x, np.ones((1, 2, 2), np.uint8))  # (N, 16, 16)
    x = np.repeat(x[..., None], 3, axis=-1)
    y = target.astype(np.int64)
    rng = np.random.RandomState(seed)
    train_mask = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        train_mask[idx[: int(round(train_fraction * len(idx)))]] = True
    names = [str(c) for c in range(10)]
    ids = np.arange(len(y))
    train = ArraySplit(x[train_mask], y[train_mask], names, ids[train_mask])
    test = ArraySplit(x[~train_mask], y[~train_mask], names, ids[~train_mask])
    return train, test
