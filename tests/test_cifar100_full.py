"""configs/cifar100_lt.py on the lossless CIFAR-100 copy: both parts in one folder give the full
training set and LDAM's subset of it; part 1 alone is refused with the fix named (or, asked for,
used as the LT pool). Decoding is stubbed out: these tests are about which images are chosen,
and 60,000 WebP decodes would take most of a minute on 2 cores."""

import pathlib
import re
import subprocess

import numpy as np
import pytest

from fbl_jax.data import build_datasets, sources
from fbl_jax.data.long_tail import long_tail_counts
from fbl_jax.defaults import config_from_file

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "cifar100_lt.py"
PART2_TRAIN_IMAGES = 27_714  # the dataset README


def _extract(shared_dir: pathlib.Path, root: pathlib.Path, *parts: int) -> pathlib.Path:
    for part in parts:
        archive = shared_dir / "data" / "cifar100-lossless" / f"cifar100-lossless-part{part}.tar.gz"
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(root)], check=True)
    return root


@pytest.fixture(scope="module")
def part1_root(shared_dir, tmp_path_factory) -> pathlib.Path:
    return _extract(shared_dir, tmp_path_factory.mktemp("c100_part1"), 1)


@pytest.fixture(scope="module")
def full_root(part1_root, shared_dir, tmp_path_factory) -> pathlib.Path:
    """Part 1 (hard links to part1_root's files, not a second extraction) with part 2 added."""
    root = tmp_path_factory.mktemp("c100_full")
    subprocess.run(["cp", "-al", f"{part1_root}/.", str(root)], check=True)
    return _extract(shared_dir, root, 2)


@pytest.fixture
def no_decode(monkeypatch):
    """Blank 32x32 images instead of decoding every file (counts and indices are the point)."""
    monkeypatch.setattr(
        sources, "decode_images", lambda paths: np.zeros((len(paths), 32, 32, 3), np.uint8)
    )


def _build(root: pathlib.Path, **data_overrides):
    data = config_from_file(CONFIG).data
    data.root = str(root)
    data.update(data_overrides)
    kw = dict(process_index=0, process_count=1, local_device_count=1, eval_batch_size=500)
    return build_datasets(data, global_batch_size=64, seed=0, num_epochs=200, **kw)


def test_defaults_are_the_full_set_protocol():
    data = config_from_file(CONFIG).data
    assert (data.train_pool, data.n_max, data.num_classes) == (False, 500, 100)
    assert data.imbalance_factor == 100.0 and data.minival_per_class == 100


def test_full_set_if100_subset_has_table1_counts(full_root, part1_root, no_decode):
    train = sources.list_image_folder(full_root, "train")
    np.testing.assert_array_equal(np.bincount(train.labels), [500] * 100)
    bundle = _build(full_root)
    want = np.asarray(long_tail_counts(100, 500, 100))
    assert want.sum() == 10_847 and (want[0], want[-1]) == (500, 5)
    np.testing.assert_array_equal(bundle.class_counts, want)
    np.testing.assert_array_equal(np.bincount(train.labels[bundle.train_indices]), want)
    assert len(set(bundle.train_indices.tolist())) == 10_847
    np.testing.assert_array_equal(bundle.minival_counts, np.minimum(100, 500 - want))
    assert bundle.eval_sizes["test"] == 10_000
    # Drawn from the full set, part 2's images included: not the part-1 pool's subset.
    part1 = {p.relative_to(part1_root).as_posix() for p in part1_root.rglob("*.webp")}
    rel = [pathlib.Path(p).relative_to(full_root).as_posix() for p in train.paths]
    part2 = set(rel) - part1
    assert len(part2) == PART2_TRAIN_IMAGES
    chosen_from_part2 = sum(rel[i] in part2 for i in bundle.train_indices)
    assert 0 < chosen_from_part2 < 10_847


def test_part1_alone_with_the_full_set_config_is_refused(part1_root, no_decode):
    with pytest.raises(ValueError) as err:
        _build(part1_root)
    message = str(err.value)
    pool = np.minimum(500, np.add(long_tail_counts(100, 500, 50), 100))  # the README's pool
    assert f"{(pool < 500).sum()} of its 100 classes hold fewer" in message
    assert re.search(rf"class \d+ '\w+' has {pool.min()}; {pool.sum()} images", message)
    assert "cifar100-lossless-part2.tar.gz" in message and "data.train_pool=True" in message
    # The LT-pool mode, asked for, still draws Table 1's counts from part 1.
    bundle = _build(part1_root, train_pool=True)
    np.testing.assert_array_equal(bundle.class_counts, long_tail_counts(100, 500, 100))
