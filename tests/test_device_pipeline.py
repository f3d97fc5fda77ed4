"""On-device pipeline (geometry, determinism across device counts, epochs, statistics, mixup)
and the padded/masked eval batches. References are NumPy written here from the recipe."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fbl_jax.data.device_pipeline import DevicePipeline, cifar_augment_numpy
from fbl_jax.data.eval_batches import eval_batches, num_eval_batches
from fbl_jax.data.samplers import make_sampler

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


def _reference(image, oy, ox, flip, pad, crop, mean=MEAN, std=STD):
    """Zero-pad in pixel space, crop at (oy, ox), mirror, normalise -- from the recipe."""
    h, w, _ = image.shape
    padded = np.zeros((h + 2 * pad, w + 2 * pad, 3), np.float64)
    padded[pad : pad + h, pad : pad + w] = image
    out = padded[oy : oy + crop, ox : ox + crop]
    if flip:
        out = out[:, ::-1]
    return (out / 255.0 - np.array(mean)) / np.array(std)


def _find_params(out, image, pad, crop):
    """All (oy, ox, flip) whose reference equals `out` (to float32 precision)."""
    hits = []
    for oy in range(image.shape[0] + 2 * pad - crop + 1):
        for ox in range(image.shape[1] + 2 * pad - crop + 1):
            for flip in (False, True):
                if np.allclose(out, _reference(image, oy, ox, flip, pad, crop), atol=1e-4):
                    hits.append((oy, ox, flip))
    return hits


def _dataset(n, size, seed=0):
    """Random images (pixels 1..255, so zero padding is recognisable); label = example index."""
    rng = np.random.RandomState(seed)
    images = rng.randint(1, 256, size=(n, size, size, 3)).astype(np.uint8)
    return images, np.arange(n)


def _pipeline(images, labels, *, sampler="instance", counts=None, **kw):
    counts = np.bincount(labels) if counts is None else counts
    s = make_sampler(sampler, labels, counts)
    kw.setdefault("mean", MEAN)
    kw.setdefault("std", STD)
    return DevicePipeline(images, labels, s, **kw)


def _pmap_batch(pipe, data, step, n_dev):
    """The trainer's call: device_index = axis_index inside pmap; parts concatenated."""
    fn = jax.pmap(
        lambda d, s, _: pipe.batch(d, s, jax.lax.axis_index("i")),
        axis_name="i",
        in_axes=(None, None, 0),
    )
    out = fn(data, jnp.int32(step), jnp.arange(n_dev))
    return {k: (np.asarray(v)[0] if v.ndim == 1 else np.concatenate(v)) for k, v in out.items()}


def test_cifar_augment_numpy_hand_values():
    image = np.array([[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [100, 110, 120]]], np.uint8)
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    # Padded by 1 -> 4x4; crop 2x2 at (0, 0): zeros except the bottom-right = image[0, 0].
    out = cifar_augment_numpy(image, 0, 0, False, mean, std, pad=1, crop=2) * 255.0
    np.testing.assert_allclose(out[..., 0], [[0, 0], [0, 10]], atol=1e-4)
    # At (1, 1) the crop is the image itself; flipped it mirrors the columns.
    out = cifar_augment_numpy(image, 1, 1, True, mean, std, pad=1, crop=2) * 255.0
    np.testing.assert_allclose(out[..., 1], [[50, 20], [110, 80]], atol=1e-4)
    out = cifar_augment_numpy(image, 1, 1, False, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), pad=1)
    np.testing.assert_allclose(out[0, 0], (np.array([10, 20, 30]) / 255 - 0.5) / 0.25, atol=1e-5)
    with pytest.raises(ValueError, match=r"offsets \(3, 0\)"):
        cifar_augment_numpy(image, 3, 0, False, mean, std, pad=1, crop=2)


def test_geometry_padding_and_epoch_coverage():
    images, labels = _dataset(16, 8)
    pipe = _pipeline(images, labels, global_batch_size=4, num_devices=1, pad=2, seed=3)
    assert pipe.steps_per_epoch == 4
    fn = jax.jit(pipe.batch)
    data = pipe.device_data()
    params, epochs = [], []
    for step in range(16):
        out = fn(data, jnp.int32(step), jnp.int32(0))
        assert out["image"].shape == (4, 8, 8, 3) and out["image"].dtype == jnp.float32
        assert out["label"].dtype == jnp.int32
        for x, i in zip(np.asarray(out["image"]), np.asarray(out["label"])):
            hits = _find_params(x, images[i], pad=2, crop=8)
            assert len(hits) == 1, (step, i, hits)
            params.append(hits[0])
        if step % 4 == 3:
            epochs.append(np.concatenate([fn(data, step - j, 0)["label"] for j in (3, 2, 1, 0)]))
    # Every example exactly once per epoch, in a new order each epoch.
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(16))
    assert len({tuple(o) for o in epochs}) == 4
    oy, ox, flip = np.array(params).T
    # Offsets cover [0, 2 pad] and the flip is a fair coin (64 draws).
    assert set(oy) == set(range(5)) and set(ox) == set(range(5))
    assert 0.25 < flip.mean() < 0.75


@functools.cache
def _cifar_like():
    images, labels = _dataset(64, 32, seed=1)
    counts = np.bincount(labels % 4)
    return images, labels % 4, counts


@functools.cache
def _plain_one_device():
    """CIFAR-sized pipeline on 1 device and its compiled batch function (shared by tests)."""
    images, labels, counts = _cifar_like()
    pipe = _pipeline(images, labels, counts=counts, global_batch_size=16, num_devices=1, seed=5)
    return pipe, jax.jit(pipe.batch)


def test_global_batch_does_not_depend_on_device_count():
    images, labels, counts = _cifar_like()
    p1, fn1 = _plain_one_device()
    p4 = _pipeline(images, labels, counts=counts, global_batch_size=16, num_devices=4, seed=5)
    assert p4.per_device_batch == 4
    data = p1.device_data()
    for step in (0, 5):  # epoch 0 and epoch 1 (4 steps per epoch)
        one = {k: np.asarray(v) for k, v in fn1(data, jnp.int32(step), jnp.int32(0)).items()}
        four = _pmap_batch(p4, data, step, 4)
        np.testing.assert_array_equal(one["label"], four["label"])
        np.testing.assert_allclose(one["image"], four["image"], atol=1e-6)
    # Real CIFAR geometry (32x32, pad 4): each output is a shifted/mirrored source image.
    x = one["image"][0]
    hits = [h for src in images for h in _find_params(x, src, pad=4, crop=32)]
    assert len(hits) == 1


def test_mixup_mixes_each_example_with_the_previous_one_of_the_global_batch():
    """4 devices' parts (device_index 0..3) against the 1-device batch without mixup."""
    images, labels, counts = _cifar_like()
    plain, plain_fn = _plain_one_device()
    mix4 = _pipeline(
        images, labels, counts=counts, global_batch_size=16, num_devices=4, seed=5, mixup_alpha=0.4
    )
    data = plain.device_data()
    base = {k: np.asarray(v) for k, v in plain_fn(data, 6, 0).items()}
    fn4 = jax.jit(mix4.batch)
    parts = [{k: np.asarray(v) for k, v in fn4(data, 6, d).items()} for d in range(4)]
    lams = {float(p["mix_lam"]) for p in parts}
    assert len(lams) == 1  # one lambda per global batch
    lam = lams.pop()
    assert 0.0 < lam < 1.0
    mixed = np.concatenate([p["image"] for p in parts])
    partner = np.roll(base["image"], 1, axis=0)  # example g is mixed with g - 1 (wrapping)
    np.testing.assert_allclose(mixed, lam * base["image"] + (1 - lam) * partner, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]), base["label"])
    np.testing.assert_array_equal(
        np.concatenate([p["label_b"] for p in parts]), np.roll(base["label"], 1)
    )
    # lam ~ Beta(0.4, 0.4): mean 1/2, variance 0.16 / (0.64 * 1.8) = 0.139 (uniform: 0.083).
    lam_steps = np.array([float(fn4(data, s, 0)["mix_lam"]) for s in range(300)])
    assert abs(lam_steps.mean() - 0.5) < 0.07
    assert abs(lam_steps.var() - 0.16 / (0.64 * 1.8)) < 0.03


def test_normalised_statistics():
    images, labels = _dataset(16, 8, seed=2)
    # pad 0, crop = H: only flips, so one epoch's channel means equal the data's exactly.
    pipe = _pipeline(images, labels, global_batch_size=8, num_devices=1, pad=0)
    fn = jax.jit(pipe.batch)
    data = pipe.device_data()
    out = np.concatenate([np.asarray(fn(data, s, 0)["image"]) for s in (0, 1)])
    expected = (images.reshape(-1, 3).mean(0) / 255.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), expected, atol=1e-4)
    # White images, pad 2 on 8x8: the in-image fraction of a crop is E[(8 - |o - 2|) / 8]^2
    # for offsets o uniform in 0..4, the rest is zero padding.
    white = np.full((64, 8, 8, 3), 255, np.uint8)
    pipe = _pipeline(white, np.arange(64) % 2, global_batch_size=64, num_devices=1, pad=2)
    out = np.asarray(jax.jit(pipe.batch)(pipe.device_data(), 0, 0)["image"])
    frac = (1 - np.mean([abs(o - 2) for o in range(5)]) / 8) ** 2
    pixel = out * np.array(STD) + np.array(MEAN)  # back on the 0-1 scale
    assert set(np.round(np.unique(pixel), 4)) <= {0.0, 1.0}
    assert abs(pixel.mean() - frac) < 0.04  # 64 crops: sd of the mean ~ 0.01


def test_bad_configuration_errors():
    images, labels = _dataset(16, 8)
    with pytest.raises(ValueError, match=r"global batch size 6 is not divisible by the 4 devices"):
        _pipeline(images, labels, global_batch_size=6, num_devices=4)
    with pytest.raises(ValueError, match="0-1 scale"):
        _pipeline(images, labels, global_batch_size=4, num_devices=1, mean=(125, 123, 114))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        _pipeline(images, labels, global_batch_size=32, num_devices=1)
    with pytest.raises(ValueError, match="uint8"):
        _pipeline(images.astype(np.float32), labels, global_batch_size=4, num_devices=1)


@pytest.mark.parametrize("n, process_count, local_devices, gb", [(29, 3, 2, 12), (8, 2, 2, 8)])
def test_eval_batches_cover_every_example_once(n, process_count, local_devices, gb):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(n, 4, 4, 3)).astype(np.uint8)
    labels = np.arange(n)  # the label names the example
    seen = []
    per_host_batches = set()
    for p in range(process_count):
        batches = list(
            eval_batches(
                images,
                labels,
                global_batch=gb,
                local_device_count=local_devices,
                process_index=p,
                process_count=process_count,
                mean=MEAN,
                std=STD,
            )
        )
        per_host_batches.add(len(batches))
        for b in batches:
            assert b["image"].shape == (
                local_devices,
                gb // process_count // local_devices,
                4,
                4,
                3,
            )
            x = b["image"].reshape(-1, 4, 4, 3)
            y, m = b["label"].reshape(-1), b["mask"].reshape(-1)
            for xi, yi, mi in zip(x, y, m):
                if mi == 1:
                    seen.append(yi)
                    ref = (images[yi] / 255.0 - np.array(MEAN)) / np.array(STD)
                    np.testing.assert_allclose(xi, ref, atol=1e-5)
                else:
                    assert mi == 0 and not xi.any()
    assert per_host_batches == {-(-n // gb)} == {num_eval_batches(n, gb)}
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))


def test_eval_batches_bad_batch():
    with pytest.raises(ValueError, match=r"eval global batch 10 .* 2 processes x 2 local"):
        next(
            eval_batches(
                np.zeros((4, 2, 2, 3), np.uint8),
                np.zeros(4, int),
                global_batch=10,
                local_device_count=2,
                process_index=0,
                process_count=2,
                mean=MEAN,
                std=STD,
            )
        )
