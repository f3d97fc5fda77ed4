"""Long-tail profiles (paper Table 1), LDAM-style subset selection, class counts, shot groups."""

import numpy as np
import pytest

from fbl_jax.data.long_tail import (
    class_counts_from_labels,
    long_tail_counts,
    select_long_tail_indices,
    shot_groups,
)


@pytest.mark.parametrize(
    "num_classes, n_max, imbalance, total, head, tail",
    [
        # FBL paper Table 1 (CIFAR-10-LT / CIFAR-100-LT training set sizes).
        (10, 5000, 100, 12406, 5000, 50),
        (10, 5000, 50, 13996, 5000, 100),
        (100, 500, 100, 10847, 500, 5),
        (100, 500, 50, 12608, 500, 10),
    ],
)
def test_table1_counts(num_classes, n_max, imbalance, total, head, tail):
    counts = long_tail_counts(num_classes, n_max, imbalance)
    assert len(counts) == num_classes
    assert sum(counts) == total
    assert counts[0] == head and counts[-1] == tail
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_cifar10_if100_per_class_counts_as_ldam():
    # The per-class numbers printed by LDAM-DRW's IMBALANCECIFAR10 at imb_factor 0.01.
    assert long_tail_counts(10, 5000, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_step_profile():
    assert long_tail_counts(10, 5000, 100, "step") == [5000] * 5 + [50] * 5
    assert long_tail_counts(100, 500, 10, "step") == [500] * 50 + [50] * 50
    # Odd C: the first C // 2 are head classes, every other class is a tail class.
    assert long_tail_counts(5, 40, 4, "step") == [40, 40, 10, 10, 10]


def test_balanced_and_single_class():
    assert long_tail_counts(4, 7, 1) == [7, 7, 7, 7]
    assert long_tail_counts(1, 9, 100) == [9]


@pytest.mark.parametrize("bad", [0.5, 0.0, -3.0, float("nan")])
def test_imbalance_below_one_is_an_error(bad):
    with pytest.raises(ValueError, match="imbalance_factor"):
        long_tail_counts(10, 5000, bad)


def test_bad_profile_and_class_count():
    with pytest.raises(ValueError, match="exp"):
        long_tail_counts(10, 5000, 10, "linear")
    with pytest.raises(ValueError, match="num_classes"):
        long_tail_counts(0, 5000, 10)


def _ldam_reference(labels, counts, seed):
    """LDAM's gen_imbalanced_data, with the legacy global NumPy generator as it is written."""
    np.random.seed(seed)  # noqa: NPY002 (as LDAM writes it)
    out = []
    for c, n_c in zip(np.unique(labels), counts):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)  # noqa: NPY002
        out.append(idx[:n_c])
    return np.concatenate(out)


def _balanced_labels(num_classes=10, per_class=60, seed=3):
    rng = np.random.RandomState(seed)
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


def test_subset_matches_ldam_reference():
    labels = _balanced_labels()
    counts = long_tail_counts(10, 60, 20)
    for seed in (0, 1, 123):
        got = select_long_tail_indices(labels, counts, seed=seed)
        np.testing.assert_array_equal(got, _ldam_reference(labels, counts, seed))
        assert np.array_equal(np.bincount(labels[got], minlength=10), counts)
        assert len(np.unique(got)) == len(got)


def test_subset_deterministic_and_seed_dependent():
    labels = _balanced_labels()
    counts = long_tail_counts(10, 60, 10)
    a = select_long_tail_indices(labels, counts, seed=0)
    b = select_long_tail_indices(labels, counts, seed=0)
    c = select_long_tail_indices(labels, counts, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.sort(a), np.sort(c))
    assert np.array_equal(np.bincount(labels[c], minlength=10), counts)


def test_subset_too_few_examples_names_class_and_numbers():
    labels = np.array([0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"class 1 has only 2 .* asks for 3"):
        select_long_tail_indices(labels, [3, 3])


def test_class_counts_from_labels():
    counts = class_counts_from_labels(np.array([2, 0, 2, 1, 2]), 3)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [1, 1, 3])
    with pytest.raises(ValueError, match="class 1 has no training examples"):
        class_counts_from_labels(np.array([0, 2, 2]), 3)
    with pytest.raises(ValueError, match="label 5"):
        class_counts_from_labels(np.array([0, 5]), 3)


def test_shot_groups_boundaries():
    groups = shot_groups(np.array([500, 101, 100, 20, 19, 1]))
    np.testing.assert_array_equal(groups["many"], [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(groups["medium"], [0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(groups["few"], [0, 0, 0, 0, 1, 1])
