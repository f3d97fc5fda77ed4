"""fbl-reproduce pack: a packed folder read back through data_flags gives the image-folder path's
long-tailed subset (LDAM's counts, the same images, labels and order), minival and test set."""

import argparse
import json
import pathlib

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags
from PIL import Image

from fbl_jax.data import build_datasets
from fbl_jax.data.long_tail import long_tail_counts
from fbl_jax.defaults import ConfigError, get_default_config
from fbl_jax.reproduce.pack import MANIFEST, add_pack_arguments, data_flags, pack

NUM_CLASSES, PER_CLASS, TEST_PER_CLASS = 10, 6, 2
KW = dict(
    global_batch_size=1,
    seed=0,
    process_index=0,
    process_count=1,
    local_device_count=1,
    eval_batch_size=8,
    num_epochs=4,
)


def _write_tree(root: pathlib.Path, split: str, per_class: list[int], seed: int) -> list:
    """Random 32x32 lossless WebP images; returns each class's arrays."""
    rng = np.random.default_rng(seed)
    written = []
    for c, n in enumerate(per_class):
        d = root / split / f"class{c}"
        d.mkdir(parents=True)
        arrays = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]
        for i, arr in enumerate(arrays):
            Image.fromarray(arr).save(d / f"img{i:02d}.webp", format="WEBP", lossless=True)
        written.append(arrays)
    return written


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_pack_arguments(parser)
    return parser.parse_args(list(argv))


def _config_from_flags(argv: list[str]):
    """The default config with command-line overrides, parsed as fbl-train parses them."""
    values, argv = flags.FlagValues(), ["fbl-train", *argv]
    config_flags.DEFINE_config_dict(
        "config", get_default_config(), flag_values=values, sys_argv=argv
    )
    values(argv)
    return values.config


def test_packed_subset_reads_back_as_the_image_folder_subset(tmp_path):
    root, out = tmp_path / "data", tmp_path / "packed"
    train = _write_tree(root, "train", [PER_CLASS] * NUM_CLASSES, seed=0)
    _write_tree(root, "test", [TEST_PER_CLASS] * NUM_CLASSES, seed=1)
    args = _args("--dataset", "cifar10_lt", "--root", str(root), "--out", str(out))
    args.imbalance_factors = "5,2"  # the tiny tree's 6 per class: IF 100 would empty classes
    assert pack(args) == 0

    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["imbalance_factors"] == [5.0, 2.0] and manifest["num_classes"] == NUM_CLASSES
    assert manifest["checked_equal_to_image_folder"] is True
    # Every training image is in a subset or its minival (100 per class > the unused ones).
    assert manifest["files"] == NUM_CLASSES * (PER_CLASS + TEST_PER_CLASS)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    images = {p for p in on_disk if p.endswith(".webp")}
    assert len(images) == manifest["files"]
    assert on_disk - images == {MANIFEST, "test.txt", *manifest["lists"]}

    for imbalance in (5, 2):
        want = long_tail_counts(NUM_CLASSES, PER_CLASS, imbalance)
        split = manifest["splits"][f"if{imbalance}"]
        assert split["train_counts"] == want and split["train"] == sum(want)
        assert split["minival_counts"] == [PER_CLASS - n for n in want]

        packed = build_datasets(_config_from_flags(data_flags(out, imbalance)).data, **KW)
        folder_cfg = get_default_config().data
        folder_cfg.update(root=str(root), imbalance_factor=float(imbalance))
        folder = build_datasets(folder_cfg, **KW)

        assert packed.train_indices is None  # read as the listed subset, not carved again
        np.testing.assert_array_equal(packed.class_counts, want)
        labels, pixels = packed.train.labels, packed.train.images
        np.testing.assert_array_equal(np.bincount(labels, minlength=NUM_CLASSES), want)
        # Each packed image is one of its class's originals, none twice.
        for c in range(NUM_CLASSES):
            originals = {a.tobytes() for a in train[c]}
            mine = [a.tobytes() for a in pixels[labels == c]]
            assert len(set(mine)) == len(mine) and set(mine) <= originals
        # ... and the image-folder path's subset, in its order, with its minival and test set.
        np.testing.assert_array_equal(pixels, folder.train.images)
        np.testing.assert_array_equal(labels, folder.train.labels)
        assert packed.eval_sizes == folder.eval_sizes
        assert packed.eval_sizes["minival"] == NUM_CLASSES * PER_CLASS - sum(want)
        for name in ("test", "minival"):
            for u, v in zip(packed.eval_iter(name), folder.eval_iter(name), strict=True):
                for key in ("image", "label", "mask"):
                    np.testing.assert_array_equal(u[key], v[key])

    with pytest.raises(ConfigError, match=r"holds no IF 10 subset \(packed: 5, 2\)"):
        data_flags(out, 10)
    assert pack(args) == 0  # an earlier pack may be written again


def test_bad_input_is_a_config_error(tmp_path):
    out = tmp_path / "packed"
    with pytest.raises(ConfigError, match=r"--root .*missing is not a directory"):
        pack(_args("--root", str(tmp_path / "missing"), "--out", str(out), "--no-check"))
    root = tmp_path / "data"
    _write_tree(root, "train", [4] * 9 + [1], seed=0)  # not balanced, not declared a pool
    _write_tree(root, "test", [1] * 10, seed=1)
    with pytest.raises(ConfigError, match=r"1 to 4 images per class.*data.train_pool=True"):
        pack(_args("--root", str(root), "--out", str(out), "--no-check"))
    with pytest.raises(ConfigError, match=r"numbers > 1"):
        pack(_args("--root", str(root), "--out", str(out), "--imbalance-factors", "100,x"))
    with pytest.raises(ConfigError, match=r"has 10 training classes .* data.num_classes=100"):
        pack(_args("--dataset", "cifar100_lt", "--root", str(root), "--out", str(out)))
    assert not out.exists()  # bad input leaves nothing behind
    out.mkdir()
    (out / "notes.txt").write_text("someone else's")
    with pytest.raises(ConfigError, match=r"holds files and no manifest.json"):
        pack(_args("--root", str(root), "--out", str(out), "--imbalance-factors", "2"))
