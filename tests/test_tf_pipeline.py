"""Tests for the per-host tf.data pipeline and its TF augmentations.

Every image i of the tiny file list has a constant red channel 6·i + 3 (textured green/blue), so
its identity survives any geometric augmentation and can be read back from the batch.
"""

from __future__ import annotations

import itertools
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from fbl_jax.data import device_pipeline as dp
from fbl_jax.data import samplers

tf = aug = tp = None  # TensorFlow and the modules on it, imported by the fixture below


@pytest.fixture(scope="module", autouse=True)
def _tensorflow():
    """Import TensorFlow (~6 s) in the test process that runs this file, not in every process
    that only collects it."""
    global tf, aug, tp
    import tensorflow as tf  # a test dependency (pip install -e '.[test]'): missing is a failure

    from fbl_jax.data import tf_augment as aug
    from fbl_jax.data import tf_pipeline as tp


N = 40
SIZE = 24
NUM_CLASSES = 5
MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)


def image_array(i: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(i)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    img[..., 0] = 6 * i + 3
    return img


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[int]]:
    root = tmp_path_factory.mktemp("imgs")
    paths = []
    for i in range(N):
        path = root / f"img_{i:03d}.png"
        Image.fromarray(image_array(i)).save(path)
        paths.append(str(path))
    labels = [i % NUM_CLASSES for i in range(N)]
    return paths, labels


class PermSampler:
    """Minimal sampler with the samplers-module interface: a fresh permutation every epoch."""

    def __init__(self, n: int, num_samples: int | None = None) -> None:
        self.n = n
        self.num_samples = n if num_samples is None else num_samples

    def indices(self, key: jax.Array, epoch: int) -> jax.Array:
        return jax.random.permutation(key, self.n)[: self.num_samples]


def reference_order(seed: int, epoch: int, n: int = N) -> np.ndarray:
    return np.asarray(
        jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(seed), epoch), n)
    )


def denorm(image: np.ndarray) -> np.ndarray:
    return (image * np.asarray(STD) + np.asarray(MEAN)) * 255.0


def ids(image: np.ndarray) -> np.ndarray:
    """Example ids from (..., H, W, 3) normalised images via the constant red channel."""
    red = np.median(denorm(image)[..., 0], axis=(-2, -1))
    return np.rint((red - 3) / 6).astype(int)


def pipeline(files, **kw) -> tp.TrainPipeline:
    paths, labels = files
    args = dict(
        sampler=PermSampler(N),
        global_batch_size=8,
        process_index=0,
        process_count=1,
        local_device_count=1,
        image_size=SIZE,
        seed=3,
        mean=MEAN,
        std=STD,
        augment="none",
    )
    args.update(kw)
    return tp.make_train_pipeline(paths, labels, **args)


def take(p: tp.TrainPipeline, n: int, start: int = 0) -> list[dict[str, np.ndarray]]:
    return list(itertools.islice(p.iterator(start_step=start), n))


def flat(x: np.ndarray) -> np.ndarray:
    return x.reshape((-1,) + x.shape[2:])


@pytest.mark.parametrize("process_count", [2, 3])
def test_hosts_are_disjoint_and_cover_the_global_batch(files, process_count):
    paths, labels = files
    B, ldc, steps = 12, 2, 5  # 40 // 12 = 3 steps per epoch: crosses into epoch 1
    hosts = [
        take(
            pipeline(
                files,
                global_batch_size=B,
                process_index=p,
                process_count=process_count,
                local_device_count=ldc,
            ),
            steps,
        )
        for p in range(process_count)
    ]
    spe = N // B
    for step in range(steps):
        epoch, g = divmod(step, spe)
        expected = reference_order(3, epoch)[g * B : (g + 1) * B]
        got = []
        for p in range(process_count):
            batch = hosts[p][step]
            per_dev = B // process_count // ldc
            assert batch["image"].shape == (ldc, per_dev, SIZE, SIZE, 3)
            assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
            assert batch["label"].shape == (ldc, per_dev)
            got.append(ids(flat(batch["image"])))
            # The host's slice is exactly the contiguous part of the global batch.
            lo = p * B // process_count
            host_idx = expected[lo : lo + B // process_count]
            np.testing.assert_array_equal(flat(batch["label"]), np.asarray(labels)[host_idx])
            ref = np.stack([(image_array(i) / 255.0 - MEAN) / STD for i in host_idx])
            np.testing.assert_allclose(flat(batch["image"]), ref, atol=1e-5)
        got = np.concatenate(got)
        assert len(set(got.tolist())) == B  # disjoint hosts
        np.testing.assert_array_equal(got, expected)


def test_steps_per_epoch_uses_sampler_num_samples(files):
    assert (
        pipeline(files, sampler=PermSampler(N, num_samples=30), global_batch_size=8).steps_per_epoch
        == 3
    )
    assert pipeline(files, global_batch_size=12).steps_per_epoch == 3


def test_real_class_balanced_sampler_defines_the_batches(files):
    paths, labels = files
    sampler = samplers.make_sampler(
        "class_balanced", np.asarray(labels), np.bincount(labels), num_samples=36
    )
    p = pipeline(files, sampler=sampler, global_batch_size=8, local_device_count=2)
    assert p.steps_per_epoch == 4  # 36 // 8: the last partial batch is dropped
    for step, batch in enumerate(take(p, 6)):
        epoch, g = divmod(step, 4)
        key = jax.random.fold_in(jax.random.PRNGKey(3), epoch)
        order = np.asarray(sampler.indices(key, epoch))
        np.testing.assert_array_equal(ids(flat(batch["image"])), order[g * 8 : (g + 1) * 8])


@pytest.mark.parametrize("augment", ["imagenet", "cifar"])
def test_restart_replays_the_uninterrupted_stream(files, augment):
    kw = dict(
        augment=augment,
        image_size=16 if augment == "imagenet" else SIZE,
        mixup_alpha=0.4,
        local_device_count=2,
    )
    full = take(pipeline(files, **kw), 8)  # 5 steps per epoch: steps 3..7 cross an epoch
    resumed = take(pipeline(files, **kw), 5, start=3)
    for a, b in zip(full[3:], resumed):
        assert a.keys() == b.keys() == {"image", "label", "label_b", "mix_lam"}
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    # Augmentation is on: the same example looks different in different epochs.
    plain = take(pipeline(files, **{**kw, "mixup_alpha": 0.0}), 10)
    first = {i: img for b in plain[:5] for i, img in zip(ids(flat(b["image"])), flat(b["image"]))}
    second = {i: img for b in plain[5:] for i, img in zip(ids(flat(b["image"])), flat(b["image"]))}
    assert sorted(first) == sorted(second) == list(range(N))
    assert sum(not np.allclose(first[i], second[i]) for i in range(N)) > N // 2


def test_global_batch_independent_of_hosts_and_devices(files):
    kw = dict(augment="cifar", mixup_alpha=0.3, global_batch_size=8)
    ref = take(pipeline(files, local_device_count=1, **kw), 3)
    four = take(pipeline(files, local_device_count=4, **kw), 3)
    two_hosts = [
        take(pipeline(files, local_device_count=2, process_count=2, process_index=p, **kw), 3)
        for p in range(2)
    ]
    for s in range(3):
        for k in ("image", "label", "label_b"):
            assert four[s][k].shape[:2] == (4, 2)
            np.testing.assert_array_equal(flat(ref[s][k]), flat(four[s][k]))
            joined = np.concatenate([flat(two_hosts[p][s][k]) for p in range(2)])
            np.testing.assert_array_equal(flat(ref[s][k]), joined)
        # One λ per step, the same on every device of every host.
        assert four[s]["mix_lam"].shape == (4,) and two_hosts[1][s]["mix_lam"].shape == (2,)
        lams = [ref[s], four[s], *(two_hosts[p][s] for p in range(2))]
        assert len({float(v) for b in lams for v in b["mix_lam"]}) == 1


def test_mixup_matches_numpy_mix_of_the_unmixed_batch(files):
    kw = dict(augment="cifar", global_batch_size=8, local_device_count=2)
    plain = take(pipeline(files, **kw), 3)
    mixed = take(pipeline(files, mixup_alpha=0.5, **kw), 3)
    lams = []
    for p, m in zip(plain, mixed):
        x, y = flat(p["image"]), flat(p["label"])
        lam = m["mix_lam"]
        assert lam.shape == (2,) and lam.dtype == np.float32
        assert np.all(lam == lam[0]) and 0.0 < lam[0] < 1.0
        partner = np.arange(8) ^ 1  # 0↔1, 2↔3, ...
        np.testing.assert_array_equal(flat(m["label"]), y)
        np.testing.assert_array_equal(flat(m["label_b"]), y[partner])
        np.testing.assert_allclose(
            flat(m["image"]), lam[0] * x + (1 - lam[0]) * x[partner], atol=1e-5
        )
        lams.append(lam[0])
    assert len(set(lams)) == 3  # λ is drawn per step


@pytest.mark.parametrize("augment", ["none", "cifar"])
def test_eval_covers_every_example_once(files, augment):
    paths, labels = files
    n, B, P, ldc = 37, 8, 2, 2
    seen, pads = [], 0
    for p in range(P):
        batches = list(
            tp.make_eval_iterator(
                paths[:n],
                labels[:n],
                global_batch_size=B,
                process_index=p,
                process_count=P,
                local_device_count=ldc,
                image_size=SIZE,
                mean=MEAN,
                std=STD,
                augment=augment,
            )
        )
        assert len(batches) == 5  # ceil(37 / 8)
        for b, batch in enumerate(batches):
            assert batch["image"].shape == (ldc, B // P // ldc, SIZE, SIZE, 3)
            img, lab, mask = flat(batch["image"]), flat(batch["label"]), flat(batch["mask"])
            pos = b * B + p * (B // P) + np.arange(B // P)  # contiguous host part, in order
            np.testing.assert_array_equal(mask, (pos < n).astype(int))
            real = pos[pos < n]
            np.testing.assert_array_equal(ids(img[mask == 1]), real)
            np.testing.assert_array_equal(lab[mask == 1], np.asarray(labels)[real])
            ref = np.stack([(image_array(i) / 255.0 - MEAN) / STD for i in real])
            np.testing.assert_allclose(img[mask == 1], ref, atol=1e-5)  # eval never augments
            assert np.all(img[mask == 0] == 0)
            seen += real.tolist()
            pads += int((mask == 0).sum())
    assert sorted(seen) == list(range(n)) and pads == 5 * B - n


def np_cifar(img: np.ndarray, oy: int, ox: int, flip: bool, pad: int = 4) -> np.ndarray:
    padded = np.zeros((img.shape[0] + 2 * pad, img.shape[1] + 2 * pad, 3), img.dtype)
    padded[pad:-pad, pad:-pad] = img
    out = padded[oy : oy + img.shape[0], ox : ox + img.shape[1]]
    return out[:, ::-1] if flip else out


def test_cifar_crop_flip_vs_numpy():
    img = np.random.default_rng(0).integers(1, 256, (10, 12, 3), dtype=np.uint8)
    for oy, ox, flip in [(0, 0, False), (3, 5, True), (8, 8, False), (4, 4, False), (8, 1, True)]:
        out = aug.cifar_crop_flip(tf.constant(img), oy, ox, flip, pad=4).numpy()
        np.testing.assert_array_equal(out, np_cifar(img, oy, ox, flip))


def test_cifar_augment_is_a_padded_crop_with_uniform_offsets():
    img = np.random.default_rng(1).integers(1, 256, (8, 8, 3), dtype=np.uint8)
    cands = {
        (oy, ox, f): np_cifar(img, oy, ox, f) for oy in range(9) for ox in range(9) for f in (0, 1)
    }
    seen = []
    for s in range(120):
        out = aug.cifar_augment(tf.constant(img), tf.constant([7, s], tf.int64)).numpy()
        match = [k for k, c in cands.items() if np.array_equal(out, c)]
        assert len(match) == 1
        seen.append(match[0])
    oys = np.array([k[0] for k in seen])
    assert set(oys.tolist()) == set(range(9))  # every offset reachable
    assert abs(oys.mean() - 4.0) < 0.6 and 0.35 < np.mean([k[2] for k in seen]) < 0.65


def test_random_resized_crop_window_properties():
    H, W = 30, 40
    fracs = []
    for s in range(100):
        top, left, h, w = (
            int(v) for v in aug.random_resized_crop_window(H, W, tf.constant([1, s]))
        )
        assert 0 <= top and top + h <= H and 0 <= left and left + w <= W and h > 0 and w > 0
        # Rounding of h and w to integers loosens the bounds slightly.
        assert 0.08 * H * W * 0.8 <= h * w <= H * W
        assert 0.75 * 0.85 <= w / h <= 4 / 3 * 1.15
        fracs.append(h * w / (H * W))
    assert np.min(fracs) < 0.3 and np.max(fracs) > 0.7  # spans the scale range


@pytest.mark.parametrize(
    "hw, window",
    [
        ((40, 10), (13, 0, 13, 10)),  # too narrow: w = W, h = round(10 / (3/4)) = 13, centred
        ((10, 40), (0, 13, 10, 13)),  # too wide: h = H, w = round(10 · 4/3) = 13, centred
        ((20, 20), (0, 0, 20, 20)),
    ],  # in range: the whole image
)
def test_random_resized_crop_fallback_is_torchvision_centre_crop(hw, window):
    # A scale above 1 never fits, so every attempt fails and the fallback is used.
    got = aug.random_resized_crop_window(*hw, tf.constant([0, 1]), scale=(2.0, 3.0))
    assert tuple(int(v) for v in got) == window


def test_random_resized_crop_output_and_jpeg_fast_path(tmp_path: pathlib.Path):
    img = np.random.default_rng(2).integers(20, 200, (30, 40, 3), dtype=np.uint8)
    seed = tf.constant([4, 5], tf.int64)
    out = aug.random_resized_crop(tf.constant(img), seed, 16).numpy()
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    assert out.min() >= 20 - 1e-3 and out.max() <= 199 + 1e-3
    top, left, h, w = (int(v) for v in aug.random_resized_crop_window(30, 40, seed))
    ref = tf.image.resize(
        img[top : top + h, left : left + w].astype(np.float32), [16, 16], antialias=True
    ).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-3)
    # JPEG bytes take the decode-and-crop path; PNG bytes decode fully, then crop.
    smooth = np.clip(
        np.add.outer(np.arange(32) * 4, np.arange(48) * 3)[..., None] + [0, 30, 60], 0, 255
    ).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    jpeg = tf.io.read_file(str(tmp_path / "a.jpg"))
    for s in range(4):
        seed = tf.constant([4, s], tf.int64)
        fast = aug.decode_random_resized_crop(jpeg, seed, 16).numpy()
        slow = aug.random_resized_crop(tf.io.decode_image(jpeg, channels=3), seed, 16).numpy()
        assert np.abs(fast - slow).mean() < 0.1  # another window differs by > 3


def test_eval_resize_centre_crop_vs_pil():
    yy, xx = np.mgrid[0:30, 0:40]
    img = np.stack([yy * 7, xx * 5, (yy + xx) * 3], -1) % 256
    img = np.clip(img + np.random.default_rng(3).integers(-10, 10, img.shape), 0, 255).astype(
        np.uint8
    )
    out = aug.resize_shorter_center_crop(tf.constant(img), 16).numpy()
    # 16·256/224 = 18.3 → 18; short side 30 → 18, long 40 → int(18·40/30) = 24;
    # centre crop 16: top = round(2/2) = 1, left = round(8/2) = 4.
    ref = np.asarray(Image.fromarray(img).resize((24, 18), Image.BILINEAR), np.float32)[1:17, 4:20]
    assert out.shape == (16, 16, 3)
    assert np.abs(out - ref).mean() < 1.0 and np.abs(out - ref).max() < 3  # off-by-one: > 5


def test_normalize_matches_formula():
    img = np.random.default_rng(4).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    got = aug.normalize(tf.constant(img), MEAN, STD).numpy()
    np.testing.assert_allclose(got, (img / 255.0 - np.asarray(MEAN)) / np.asarray(STD), rtol=1e-5)


@pytest.mark.parametrize("pad, same", [(4, True), (2, False)])
def test_cifar_augment_statistics_match_device_pipeline(files, pad, same):
    """Same images, both CIFAR augmentations: per-channel mean/std of the normalised outputs agree
    (and a TF pad of 2 instead of 4 is detected, so the check has teeth)."""
    paths, labels = files
    labels = np.asarray(labels)
    sampler = samplers.make_sampler("instance", labels, np.bincount(labels))
    tf_pipe = pipeline(files, sampler=sampler, global_batch_size=N, augment="cifar", cifar_pad=pad)
    tf_out = np.concatenate([flat(b["image"]) for b in take(tf_pipe, 5)])
    imgs = np.stack([image_array(i) for i in range(N)])
    device = dp.DevicePipeline(
        imgs, labels, sampler, global_batch_size=N, mean=MEAN, std=STD, num_devices=1, seed=3
    )
    batch = jax.jit(device.batch)
    jax_out = np.concatenate(
        [np.asarray(batch(device.device_data(), s, 0)["image"]) for s in range(5)]
    )
    assert tf_out.shape == jax_out.shape == (5 * N, SIZE, SIZE, 3)
    d_mean = np.abs(tf_out.mean((0, 1, 2)) - jax_out.mean((0, 1, 2)))
    d_std = np.abs(tf_out.std((0, 1, 2)) - jax_out.std((0, 1, 2)))
    # Seeds 0-2 gave |Δmean| <= 0.024, |Δstd| <= 0.015 for pad 4; pad 2 gives Δmean >= 0.11.
    assert (d_mean.max() < 0.06 and d_std.max() < 0.03) == same, (d_mean, d_std)


def test_undecodable_file_is_named(files, tmp_path: pathlib.Path):
    paths, labels = files
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not an image")
    bad_paths = list(paths)
    bad_paths[17] = str(bad)
    with pytest.raises(tp.BadImageError, match="broken.jpg"):
        take(pipeline((bad_paths, labels), global_batch_size=8), 5)
    with pytest.raises(tp.BadImageError, match="broken.jpg"):
        list(
            tp.make_eval_iterator(
                bad_paths,
                labels,
                global_batch_size=8,
                process_index=0,
                process_count=1,
                local_device_count=1,
                image_size=SIZE,
                mean=MEAN,
                std=STD,
                augment="imagenet",
            )
        )
    missing = list(paths)
    missing[0] = str(tmp_path / "nowhere.png")
    with pytest.raises(tp.BadImageError, match="nowhere.png"):
        take(pipeline((missing, labels), global_batch_size=8), 5)


def test_bad_arguments_raise_clear_errors(files):
    with pytest.raises(
        ValueError, match=r"global_batch_size=10 .*process_count=2.*local_device_count=4"
    ):
        pipeline(files, global_batch_size=10, process_count=2, local_device_count=4)
    with pytest.raises(ValueError, match="global_batch_size=12.*use a multiple of 8"):
        tp.make_eval_iterator(
            *files,
            global_batch_size=12,
            process_index=0,
            process_count=2,
            local_device_count=4,
            mean=MEAN,
            std=STD,
        )
    with pytest.raises(ValueError, match="augment='random'.*imagenet"):
        pipeline(files, augment="random")
    with pytest.raises(ValueError, match="process_index=2"):
        pipeline(files, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="labels has shape"):
        tp.make_train_pipeline(
            files[0],
            files[1][:-1],
            sampler=PermSampler(N),
            global_batch_size=8,
            process_index=0,
            process_count=1,
            local_device_count=1,
            mean=MEAN,
            std=STD,
        )
