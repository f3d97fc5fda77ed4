"""Sources (image folders incl. WebP and the real CIFAR copies, split lists, tfds, digits), the
minival, training pools, and build_datasets end to end."""

import os
import pathlib
import subprocess

import numpy as np
import pytest
from PIL import Image

from fbl_jax.data import build_datasets, sources
from fbl_jax.data.bundle import carve_minival
from fbl_jax.data.device_pipeline import DevicePipeline

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


# ----------------------------------------------------------------------------- split lists


def test_places_lt_lists(shared_dir):
    lists = shared_dir / "data" / "splits" / "Places_LT"
    train = sources.read_split_list(lists / "Places_LT_train.txt", "/images")
    counts = np.bincount(train.labels)
    assert len(train) == 62_500 and len(counts) == 365
    assert counts.max() == 4_980 and counts.min() == 5
    assert len(train.class_names) == 365 and train.class_names[0] == "airfield"
    assert train.paths[0] == "/images/train/airfield/00004851.jpg"
    val = sources.read_split_list(lists / "Places_LT_val.txt", "/images", num_classes=365)
    assert len(val) == 7_300 and set(np.bincount(val.labels)) == {20}


def test_split_list_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "list.txt"
    bad.write_text("a/x.jpg 0\nb/y.jpg 1\nc/z.jpg one\n")
    with pytest.raises(ValueError, match=rf"{bad}:3: cannot parse 'c/z.jpg one'"):
        sources.read_split_list(bad, "/root")
    bad.write_text("a/x.jpg 0\nnolabel\n")
    with pytest.raises(ValueError, match=rf"{bad}:2"):
        sources.read_split_list(bad, "/root")
    bad.write_text("a/x.jpg 0\nb/y.jpg 3\n")
    with pytest.raises(ValueError, match=r"label 3 of 'b/y.jpg' is outside \[0, 2\)"):
        sources.read_split_list(bad, "/root", num_classes=2)
    with pytest.raises(FileNotFoundError, match="relative image path"):
        sources.read_split_list(tmp_path / "missing.txt", "/root")


def test_split_list_class_name_fallback(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("x.jpg 0\nfolder/cat/y.jpg 1\nfolder/cat/z.jpg 1\n")
    split = sources.read_split_list(f, "root", num_classes=3)
    assert split.class_names == ["class_0", "cat", "class_2"]
    np.testing.assert_array_equal(split.labels, [0, 1, 1])
    assert list(split.paths) == [
        os.path.join("root", p) for p in ("x.jpg", "folder/cat/y.jpg", "folder/cat/z.jpg")
    ]


# ----------------------------------------------------------------------------- image folders


@pytest.fixture(scope="session")
def cifar10_root(shared_dir, tmp_path_factory):
    """The real CIFAR-10 JPEG copy, extracted once per session."""
    root = tmp_path_factory.mktemp("cifar10")
    archive = shared_dir / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(root)], check=True)
    return root


def test_cifar10_image_folder(cifar10_root):
    train = sources.list_image_folder(cifar10_root, "train")
    test = sources.list_image_folder(cifar10_root, "test")
    assert train.class_names == CIFAR10_CLASSES == test.class_names
    assert len(train) == 50_000 and len(test) == 10_000
    np.testing.assert_array_equal(np.bincount(train.labels), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
    # Original order: classes in label order, files sorted by name.
    assert train.paths[0].endswith(os.path.join("train", "airplane", "0000.jpg"))
    assert train.paths[5001].endswith(os.path.join("train", "automobile", "0001.jpg"))
    # Every 10th image (500 per class): channel means match the README's full-set values.
    images = sources.decode_images(list(train.paths[::10]))
    assert images.shape == (5000, 32, 32, 3) and images.dtype == np.uint8
    mean = images.reshape(-1, 3).mean(0) / 255.0
    np.testing.assert_allclose(mean, [0.4913, 0.4821, 0.4465], atol=0.006)


def _write_folder(root, split, spec):
    """spec: {class: [(file name, pixel array)]}; PNG (lossless) so pixels round-trip."""
    for cls, files in spec.items():
        d = root / split / cls
        d.mkdir(parents=True, exist_ok=True)
        for name, arr in files:
            Image.fromarray(arr).save(d / name, format="PNG")


def _tiny_spec(num_classes=3, per_class=(6, 5, 4), size=4, seed=0):
    rng = np.random.RandomState(seed)
    return {
        f"c{c}": [
            (
                f"{i:02d}.PNG" if i % 2 else f"{i:02d}.png",
                rng.randint(0, 256, (size, size, 3)).astype(np.uint8),
            )
            for i in range(per_class[c])
        ]
        for c in range(num_classes)
    }


def test_image_folder_arrays_order_and_cache(tmp_path, monkeypatch):
    spec = _tiny_spec()
    _write_folder(tmp_path, "train", spec)
    (tmp_path / "train" / "c0" / "notes.txt").write_text("not an image")
    cache = tmp_path / "cache"
    split = sources.load_image_folder_arrays(tmp_path, "train", cache_dir=cache)
    expected = np.stack([arr for cls in sorted(spec) for _, arr in sorted(spec[cls])])
    np.testing.assert_array_equal(split.images, expected)
    np.testing.assert_array_equal(split.labels, [0] * 6 + [1] * 5 + [2] * 4)
    assert split.class_names == ["c0", "c1", "c2"]
    assert len(list(cache.glob("*.npz"))) == 1

    def no_decode(paths):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(sources, "decode_images", no_decode)
    again = sources.load_image_folder_arrays(tmp_path, "train", cache_dir=cache)
    np.testing.assert_array_equal(again.images, expected)
    # A changed file list is a cache miss.
    _write_folder(tmp_path, "train", {"c2": [("99.png", np.zeros((4, 4, 3), np.uint8))]})
    with pytest.raises(AssertionError, match="decoded again"):
        sources.load_image_folder_arrays(tmp_path, "train", cache_dir=cache)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ROOT/<split>/<class name>"):
        sources.list_image_folder(tmp_path, "train")
    _write_folder(tmp_path, "train", _tiny_spec())
    broken = tmp_path / "train" / "c1" / "zz.jpg"
    broken.write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match=r"cannot decode image .*zz\.jpg"):
        sources.load_image_folder_arrays(tmp_path, "train")


# ----------------------------------------------------------------------------- WebP


def _write_webp_tree(root, split, per_class, size=5, seed=0):
    """Random uint8 RGB images as lossless WebP; returns the arrays in (class, file name) order."""
    rng = np.random.default_rng(seed)
    written = []
    for c, n in enumerate(per_class):
        d = root / split / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            name = f"{i:03d}.WEBP" if i % 3 == 1 else f"{i:03d}.webp"  # case-insensitive
            Image.fromarray(arr).save(d / name, format="WEBP", lossless=True)
            written.append(arr)
    return np.stack(written)


def test_image_folder_reads_lossless_webp_exactly(tmp_path, monkeypatch):
    expected = _write_webp_tree(tmp_path, "train", (4, 3, 5))
    # Pillow decodes lossless WebP of RGB pixels as mode RGB (no alpha, no palette).
    with Image.open(tmp_path / "train" / "class0" / "000.webp") as im:
        assert (im.format, im.mode) == ("WEBP", "RGB")
    files = sources.list_image_folder(tmp_path, "train")
    assert len(files) == 12 and all(p.lower().endswith(".webp") for p in files.paths)
    cache = tmp_path / "cache"
    split = sources.load_image_folder_arrays(tmp_path, "train", cache_dir=cache)
    assert split.images.dtype == np.uint8 and split.images.shape == (12, 5, 5, 3)
    np.testing.assert_array_equal(split.images, expected)
    np.testing.assert_array_equal(split.labels, [0] * 4 + [1] * 3 + [2] * 5)
    assert split.ids[0] == os.path.join("class0", "000.webp")
    monkeypatch.setattr(sources, "decode_images", lambda paths: pytest.fail("cache not used"))
    again = sources.load_image_folder_arrays(tmp_path, "train", cache_dir=cache)
    np.testing.assert_array_equal(again.images, expected)


def test_webp_with_alpha_keeps_rgb_and_layout_errors_name_webp(tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = rng.integers(1, 256, (4, 4))  # no fully transparent pixel
    d = tmp_path / "train" / "a"
    d.mkdir(parents=True)
    Image.fromarray(rgba, "RGBA").save(d / "x.webp", format="WEBP", lossless=True, exact=True)
    with Image.open(d / "x.webp") as im:
        assert im.mode == "RGBA"
    np.testing.assert_array_equal(sources.decode_images([str(d / "x.webp")])[0], rgba[..., :3])
    (tmp_path / "test" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"\.webp.*ROOT/train/cat/0001\.webp"):
        sources.list_image_folder(tmp_path, "test")
    (d / "y.webp").write_bytes(b"RIFF not a webp")
    with pytest.raises(ValueError, match=r"cannot decode image .*y\.webp"):
        sources.decode_images([str(d / "y.webp")])


@pytest.fixture(scope="session")
def cifar10_lossless_root(shared_dir, tmp_path_factory):
    """The lossless CIFAR-10 copy (WebP), extracted once per session (~3 s)."""
    root = tmp_path_factory.mktemp("cifar10_lossless")
    archive = shared_dir / "data" / "cifar10-lossless" / "cifar10-lossless.tar.gz"
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(root)], check=True)
    return root


def test_cifar10_lossless_counts_and_exact_pixels(cifar10_lossless_root):
    """Against ../shared/data/cifar10-lossless/README.md: layout, counts, test pixel sum."""
    train = sources.list_image_folder(cifar10_lossless_root, "train")
    assert train.class_names == CIFAR10_CLASSES
    np.testing.assert_array_equal(np.bincount(train.labels), [5000] * 10)
    assert train.paths[0].endswith(os.path.join("train", "airplane", "aeroplane_s_000004.webp"))
    some = sources.decode_images(list(train.paths[::5000]))  # the first image of each class
    assert some.shape == (10, 32, 32, 3) and some.dtype == np.uint8
    test = sources.load_image_folder_arrays(cifar10_lossless_root, "test")
    assert test.class_names == CIFAR10_CLASSES
    np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
    assert test.images.shape == (10_000, 32, 32, 3) and test.images.dtype == np.uint8
    assert int(test.images.sum(dtype=np.int64)) == 3_733_375_634  # the README's sum: exact
    # a run's data.json fingerprint of these pixels: the README's sum, and the hash moves with
    # a single changed pixel value
    from fbl_jax.data.provenance import split_fingerprint

    fingerprint = split_fingerprint(test)
    assert fingerprint["pixel_sum"] == 3_733_375_634 and fingerprint["images"] == 10_000
    test.images[9999, 31, 31, 2] ^= 1
    assert split_fingerprint(test)["sha256"] != fingerprint["sha256"]
    test.images[9999, 31, 31, 2] ^= 1
    assert split_fingerprint(test)["sha256"] == fingerprint["sha256"]


@pytest.fixture(scope="session")
def cifar100_pool_root(shared_dir, tmp_path_factory):
    """Part 1 of the lossless CIFAR-100 copy (test set + the LT training pool), ~2 s."""
    root = tmp_path_factory.mktemp("cifar100_lossless")
    archive = shared_dir / "data" / "cifar100-lossless" / "cifar100-lossless-part1.tar.gz"
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(root)], check=True)
    return root


def test_cifar100_lossless_pool_serves_if50_and_if100(cifar100_pool_root):
    """The pool keeps min(500, n_i(IF 50) + 100) images of class i (its README): enough for
    the IF 50/100 subsets and a 100-per-class minival, only with train_pool + n_max=500."""
    import ml_collections

    from fbl_jax.data.bundle import check_pool_minival, long_tail_profile
    from fbl_jax.data.long_tail import long_tail_counts, select_long_tail_indices

    pool = sources.list_image_folder(cifar100_pool_root, "train")
    test = sources.list_image_folder(cifar100_pool_root, "test")
    assert len(pool.class_names) == 100 == len(test.class_names)
    assert pool.class_names == test.class_names
    assert (pool.class_names[0], pool.class_names[-1]) == ("apple", "worm")
    np.testing.assert_array_equal(np.bincount(test.labels), [100] * 100)
    pool_counts = np.bincount(pool.labels)
    if50 = long_tail_counts(100, 500, 50)
    np.testing.assert_array_equal(pool_counts, np.minimum(500, np.add(if50, 100)))
    assert len(pool) == 22_286 and pool_counts[0] == 500 and pool_counts[99] == 110

    cfg = ml_collections.ConfigDict(dict(profile="exp", n_max=None, train_pool=False))
    with pytest.raises(ValueError, match=r"110 to 500 images per class.*data.train_pool=True"):
        long_tail_profile(cfg, pool.labels, pool.class_names, 100.0)
    cfg.train_pool = True
    with pytest.raises(ValueError, match=r"needs data.n_max"):
        long_tail_profile(cfg, pool.labels, pool.class_names, 100.0)
    cfg.n_max = 500
    for imbalance in (50.0, 100.0):
        counts = long_tail_profile(cfg, pool.labels, pool.class_names, imbalance)
        assert counts == long_tail_counts(100, 500, imbalance)  # Table 1's counts
        chosen = select_long_tail_indices(pool.labels, counts, seed=0)
        np.testing.assert_array_equal(np.bincount(pool.labels[chosen], minlength=100), counts)
        mv = carve_minival(pool.labels, chosen, 100, per_class=100, seed=0)
        # The minival the full training set would give: min(100, 500 - n_c) per class.
        want = np.minimum(100, 500 - np.asarray(counts))
        np.testing.assert_array_equal(np.bincount(pool.labels[mv], minlength=100), want)
    # IF 10: the training subset fits in the pool, but its minival would be short (the README:
    # "imbalance factors below 50 need part 2"); build_datasets refuses it.
    counts = long_tail_profile(cfg, pool.labels, pool.class_names, 10.0)
    chosen = select_long_tail_indices(pool.labels, counts, seed=0)
    mv = carve_minival(pool.labels, chosen, 100, per_class=100, seed=0)
    with pytest.raises(ValueError, match=r"too few unused images for the minival"):
        check_pool_minival(
            np.bincount(pool.labels[mv], minlength=100), pool.labels[chosen], 500, 100, pool
        )


# ----------------------------------------------------------------------------- tfds


def test_sort_order_from_ids():
    np.testing.assert_array_equal(
        sources.sort_order_from_ids([b"train_00017", "train_00002", "train_10"]), [1, 2, 0]
    )
    np.testing.assert_array_equal(sources.sort_order_from_ids(["b", "a"]), [0, 1])


def test_tfds_arrays_under_mock_data_sorted_by_id(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    tf = pytest.importorskip("tensorflow")
    order = [3, 0, 4, 1, 2]  # the on-disk (shuffled) order of example ids

    def as_dataset(self, split, **kwargs):
        images = np.stack([np.full((32, 32, 3), 10 * i, np.uint8) for i in order])
        return tf.data.Dataset.from_tensor_slices(
            {
                "id": [f"{split}_{i:05d}" for i in order],
                "image": images,
                "label": np.array(order, np.int64) % 10,
            }
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        split = sources.load_tfds_arrays("cifar10", "train", data_dir=tmp_path, batch_size=2)
    assert list(split.ids) == [f"train_{i:05d}" for i in range(5)]
    assert split.images.dtype == np.uint8 and split.images.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(split.images[:, 0, 0, 0], [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(split.labels, [0, 1, 2, 3, 4])
    assert len(split.class_names) == 10
    # The default random mock data, too.
    with tfds.testing.mock_data(num_examples=6):
        split = sources.load_tfds_arrays("cifar10", "test", data_dir=tmp_path)
    assert split.images.shape == (6, 32, 32, 3) and split.labels.shape == (6,)
    assert ((split.labels >= 0) & (split.labels < 10)).all()


def test_tfds_not_prepared_says_how(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError, match=r"tfds build cifar10 --data_dir=.*download=True"):
        sources.load_tfds_arrays("cifar10", "train", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------- minival + bundle


def test_carve_minival_disjoint_bounded_deterministic():
    labels = np.repeat(np.arange(4), [10, 6, 3, 8])
    used = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 19, 20])  # class 0 fully used
    mv = carve_minival(labels, used, 4, per_class=4, seed=0)
    assert not set(mv) & set(used)
    unused_per_class = np.bincount(np.delete(labels, used), minlength=4)  # [0, 4, 2, 6]
    np.testing.assert_array_equal(
        np.bincount(labels[mv], minlength=4), np.minimum(4, unused_per_class)
    )
    assert len(np.unique(mv)) == len(mv)
    np.testing.assert_array_equal(mv, carve_minival(labels, used, 4, per_class=4, seed=0))
    other = [tuple(carve_minival(labels, used, 4, per_class=4, seed=s)) for s in range(1, 6)]
    assert any(o != tuple(mv) for o in other)


def _digits_config(**overrides):
    import ml_collections

    c = ml_collections.ConfigDict(
        dict(
            source="synthetic_digits",
            num_classes=10,
            imbalance_factor=10.0,
            profile="exp",
            subset_seed=0,
            minival_per_class=20,
            pipeline="device",
            sampler="instance",
            sampler_k=4,
            mean=(0.3, 0.3, 0.3),
            std=(0.4, 0.4, 0.4),
            pad=2,
            image_size=16,
            mixup_alpha=0.0,
            cache_dir=None,
        )
    )
    c.update(overrides)
    return c


def test_digits_are_scikit_learns_upsampled_to_16px():
    from sklearn.datasets import load_digits

    ref = load_digits()
    train, test = sources.load_synthetic_digits()
    images = np.concatenate([train.images, test.images])[np.argsort(np.r_[train.ids, test.ids])]
    labels = np.concatenate([train.labels, test.labels])[np.argsort(np.r_[train.ids, test.ids])]
    np.testing.assert_array_equal(labels, ref.target)
    want = np.round(ref.images * 255.0 / 16.0).astype(np.uint8)  # 0..16 -> 0..255
    assert images.shape == (1797, 16, 16, 3)
    for dy, dx, c in [(0, 0, 0), (1, 1, 2), (0, 1, 1)]:  # each 8x8 pixel becomes a 2x2 block
        np.testing.assert_array_equal(images[:, dy::2, dx::2, c], want)


def test_build_datasets_synthetic_digits_end_to_end():
    kw = dict(global_batch_size=32, seed=0, process_index=0, process_count=1, local_device_count=4)
    bundle = build_datasets(_digits_config(), eval_batch_size=64, **kw)
    source, test = sources.load_synthetic_digits()
    source_counts = np.bincount(source.labels)
    # Training subset: LDAM exp profile with n_max = the smallest source class.
    n_max = source_counts.min()
    expected = np.array([int(n_max * 0.1 ** (i / 9)) for i in range(10)])
    np.testing.assert_array_equal(bundle.class_counts, expected)
    np.testing.assert_array_equal(
        np.bincount(source.labels[bundle.train_indices], minlength=10), bundle.class_counts
    )
    assert bundle.class_counts.dtype == np.int64
    assert bundle.num_train == expected.sum() and bundle.image_shape == (16, 16, 3)
    assert bundle.class_names == [str(c) for c in range(10)]
    assert isinstance(bundle.train, DevicePipeline) and bundle.pipeline == "device"
    assert bundle.steps_per_epoch == expected.sum() // 32
    np.testing.assert_array_equal(bundle.train.labels, source.labels[bundle.train_indices])
    # Minival: min(20, unused) per class from the images the subset left out.
    np.testing.assert_array_equal(bundle.minival_counts, np.minimum(20, source_counts - expected))
    assert bundle.eval_splits == ("test", "minival")
    assert bundle.eval_sizes == {"test": len(test), "minival": int(bundle.minival_counts.sum())}
    for name in bundle.eval_splits:
        labels = [b["label"][b["mask"] == 1] for b in bundle.eval_iter(name)]
        counts = np.bincount(np.concatenate(labels), minlength=10)
        want = bundle.minival_counts if name == "minival" else np.bincount(test.labels)
        np.testing.assert_array_equal(counts, want)
    # Same config, same subset; another subset seed, another subset.
    again = build_datasets(_digits_config(), eval_batch_size=64, **kw)
    np.testing.assert_array_equal(again.train_indices, bundle.train_indices)
    other = build_datasets(_digits_config(subset_seed=1), eval_batch_size=64, **kw)
    assert set(other.train_indices) != set(bundle.train_indices)


def test_build_datasets_image_folder_balanced_and_errors(tmp_path):
    _write_folder(tmp_path, "train", _tiny_spec(per_class=(6, 6, 6), size=8))
    _write_folder(tmp_path, "test", _tiny_spec(per_class=(2, 2, 2), size=8, seed=1))
    kw = dict(global_batch_size=4, seed=0, process_index=0, process_count=1, local_device_count=2)
    cfg = _digits_config(
        source="image_folder",
        root=str(tmp_path),
        num_classes=3,
        imbalance_factor=None,
        image_size=8,
        train_split="train",
        test_split="test",
    )
    bundle = build_datasets(cfg, **kw)
    np.testing.assert_array_equal(bundle.class_counts, [6, 6, 6])
    assert bundle.eval_splits == ("test",) and bundle.minival_counts is None
    assert bundle.class_names == ["c0", "c1", "c2"]
    with pytest.raises(ValueError, match="unknown data source 'cifar'.*image_folder"):
        build_datasets(_digits_config(source="cifar"), **kw)
    with pytest.raises(ValueError, match="data.num_classes=5 but source 'image_folder' has 3"):
        build_datasets(_digits_config(**{**cfg.to_dict(), "num_classes": 5}), **kw)
    with pytest.raises(ValueError, match="image_size=32 but the images are 8x8"):
        build_datasets(_digits_config(**{**cfg.to_dict(), "image_size": 32}), **kw)
    with pytest.raises(ValueError, match="eval batch size 3 is not divisible"):
        build_datasets(cfg, eval_batch_size=3, **kw)
    with pytest.raises(FileNotFoundError, match="split list 'a' does not exist"):
        build_datasets(_digits_config(source="split_list", root="/x", train_list="a"), **kw)


def test_split_list_with_the_device_pipeline_decodes_the_listed_images(tmp_path):
    """A packed subset (fbl-reproduce pack) read as split lists: exactly the listed
    files, in the listed order, with the val list as the minival."""
    train = _write_webp_tree(tmp_path, "train", (4, 3, 2), size=8)
    test = _write_webp_tree(tmp_path, "test", (2, 2, 2), size=8, seed=1)
    files = sources.list_image_folder(tmp_path, "train")
    rel = [pathlib.Path(p).relative_to(tmp_path).as_posix() for p in files.paths]
    order = [5, 0, 8, 2, 6]  # a subset in a chosen order
    (tmp_path / "train.txt").write_text("".join(f"{rel[i]} {files.labels[i]}\n" for i in order))
    (tmp_path / "val.txt").write_text(f"{rel[1]} {files.labels[1]}\n{rel[7]} {files.labels[7]}\n")
    tfiles = sources.list_image_folder(tmp_path, "test")
    trel = [pathlib.Path(p).relative_to(tmp_path).as_posix() for p in tfiles.paths]
    (tmp_path / "test.txt").write_text("".join(f"{r} {y}\n" for r, y in zip(trel, tfiles.labels)))
    cfg = _digits_config(
        source="split_list", root=str(tmp_path), train_list=str(tmp_path / "train.txt"),
        val_list=str(tmp_path / "val.txt"), test_list=str(tmp_path / "test.txt"),
        imbalance_factor=None, num_classes=3, image_size=8,
    )  # fmt: skip
    kw = dict(global_batch_size=2, seed=0, process_index=0, process_count=1, local_device_count=1)
    bundle = build_datasets(cfg, **kw)
    np.testing.assert_array_equal(bundle.train.images, train[order])
    np.testing.assert_array_equal(bundle.train.labels, files.labels[order])
    np.testing.assert_array_equal(
        bundle.class_counts, np.bincount(files.labels[order], minlength=3)
    )
    assert bundle.class_names == ["class0", "class1", "class2"]
    assert bundle.eval_sizes == {"test": 6, "minival": 2}
    got = np.concatenate([b["image"][b["mask"] > 0] for b in bundle.eval_iter("test")])
    mean, std = np.asarray(cfg.mean, np.float32), np.asarray(cfg.std, np.float32)
    np.testing.assert_allclose(got, (test / np.float32(255.0) - mean) / std, rtol=1e-6, atol=1e-6)


def test_build_datasets_training_pool_explicit_and_checked(tmp_path):
    """An unbalanced WebP train split is a pool only when the config says so (with n_max)."""
    _write_webp_tree(tmp_path, "train", (8, 6, 4), size=8)
    _write_webp_tree(tmp_path, "test", (2, 2, 2), size=8, seed=1)
    kw = dict(global_batch_size=4, seed=0, process_index=0, process_count=1, local_device_count=2)
    base = _digits_config(
        source="image_folder",
        root=str(tmp_path),
        num_classes=3,
        imbalance_factor=4.0,
        minival_per_class=2,
        image_size=8,
        train_split="train",
        test_split="test",
    ).to_dict()
    with pytest.raises(ValueError, match=r"4 to 8 images per class.*data.train_pool=True"):
        build_datasets(_digits_config(**base), **kw)
    with pytest.raises(ValueError, match=r"train_pool=True needs data.n_max"):
        build_datasets(_digits_config(**base, train_pool=True), **kw)
    bundle = build_datasets(_digits_config(**base, train_pool=True, n_max=8), **kw)
    np.testing.assert_array_equal(bundle.class_counts, [8, 4, 2])  # int(8 * 4 ** (-i / 2))
    np.testing.assert_array_equal(bundle.minival_counts, [0, 2, 2])  # min(2, 8 - n_c)
    assert bundle.eval_sizes == {"test": 6, "minival": 4}
    # IF 2 ([8, 5, 4]) fits, but classes 1 and 2 would get a shorter minival than the full set.
    with pytest.raises(ValueError, match=r"too few unused images for the minival.*'class1'"):
        build_datasets(
            _digits_config(**{**base, "imbalance_factor": 2.0}, train_pool=True, n_max=8), **kw
        )
    with pytest.raises(ValueError, match=r"too small .* class 0 'class0' has 8, needs 10"):
        build_datasets(_digits_config(**base, train_pool=True, n_max=10), **kw)
    with pytest.raises(ValueError, match=r"data.n_max=6 but class 0 'class0' .* has 8"):
        build_datasets(_digits_config(**base, train_pool=True, n_max=6), **kw)
    with pytest.raises(ValueError, match=r"train_pool=True .* data.imbalance_factor is not set"):
        build_datasets(_digits_config(**{**base, "imbalance_factor": None}, train_pool=True), **kw)


def test_a_listed_subset_is_checked_against_its_profile(tmp_path):
    """data.list_is_subset: the train list is the LT subset; its counts must be IF's profile."""
    _write_webp_tree(tmp_path, "train", (4, 3, 2), size=8)
    _write_webp_tree(tmp_path, "test", (1, 1, 1), size=8, seed=1)
    files = sources.list_image_folder(tmp_path, "train")
    rel = [pathlib.Path(p).relative_to(tmp_path).as_posix() for p in files.paths]

    def write(name, idx):
        (tmp_path / name).write_text("".join(f"{rel[i]} {files.labels[i]}\n" for i in idx))

    write("exp4.txt", [0, 1, 2, 3, 4, 5, 7])  # counts 4, 2, 1: IF 4 (exp, 3 classes)
    tfiles = sources.list_image_folder(tmp_path, "test")
    trel = [pathlib.Path(p).relative_to(tmp_path).as_posix() for p in tfiles.paths]
    (tmp_path / "test.txt").write_text("".join(f"{r} {y}\n" for r, y in zip(trel, tfiles.labels)))
    kw = dict(global_batch_size=1, seed=0, process_index=0, process_count=1, local_device_count=1)

    def cfg(**o):
        return _digits_config(
            source="split_list", root=str(tmp_path), train_list=str(tmp_path / "exp4.txt"),
            test_list=str(tmp_path / "test.txt"), num_classes=3, image_size=8,
            list_is_subset=True, **o,
        )  # fmt: skip

    bundle = build_datasets(cfg(imbalance_factor=4.0), **kw)
    np.testing.assert_array_equal(bundle.class_counts, [4, 2, 1])
    with pytest.raises(ValueError, match=r"not the IF 10 profile \[4, 1, 0\]"):
        build_datasets(cfg(imbalance_factor=10.0), **kw)
    with pytest.raises(ValueError, match="list_is_subset=True is for source='split_list'"):
        build_datasets(_digits_config(list_is_subset=True), **kw)
