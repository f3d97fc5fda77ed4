"""TensorFlow image transforms for the per-host tf.data pipeline.

All randomness is *stateless* (an explicit ``seed`` tensor of shape (2,)), so an example's
augmentation is a pure function of (run seed, global step, position in the global batch) and a
resumed or re-sharded run reproduces it exactly. Images enter as uint8 HWC tensors; the
geometric transforms keep the 0–255 scale (as float32 after resizing) and ``normalize`` maps it to
(x/255 − mean)/std at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

try:  # Keep TensorFlow off the accelerators: JAX owns their memory.
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # already initialised or no GPU support: nothing to hide
    pass

AUGMENTS = ("imagenet", "cifar", "none")

# Default random-resized-crop parameters (torchvision's RandomResizedCrop defaults).
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_ATTEMPTS = 10


def check_augment(augment: str) -> str:
    """Validate an augmentation name early, with the valid choices in the message."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment={augment!r} is not supported; choose one of {AUGMENTS}")
    return augment


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """Derive ``num`` independent stateless seeds (each shape (2,)) from one."""
    seeds = tf.random.experimental.stateless_split(seed, num)
    return [seeds[i] for i in range(num)]


def normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """(x/255 − mean)/std per channel, float32; mean/std are in 0–1 scale (config convention)."""
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean={mean} and std={std} must each have 3 (RGB) values")
    if min(std) <= 0:
        raise ValueError(f"std={std} must be positive")
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Mirror left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def random_resized_crop_window(
    height: tf.Tensor,
    width: tf.Tensor,
    seed: tf.Tensor,
    scale: Sequence[float] = RRC_SCALE,
    ratio: Sequence[float] = RRC_RATIO,
    attempts: int = RRC_ATTEMPTS,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Crop window (top, left, crop_h, crop_w) as torchvision's RandomResizedCrop picks it.

    Up to ``attempts`` candidates: area fraction ~ U(scale), log aspect ~ U(log ratio),
    w = round(sqrt(A·s·r)), h = round(sqrt(A·s/r)); the first that fits wins, at a uniform
    offset. When none fits, the fallback is the centre crop of the whole image clamped to the
    ratio range. The attempts are drawn all at once (vectorised), which keeps the result a pure
    function of ``seed``.
    """
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale={tuple(scale)} must satisfy 0 < min <= max")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio={tuple(ratio)} must satisfy 0 < min <= max")
    if attempts < 1:
        raise ValueError(f"attempts={attempts} must be >= 1")
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    h_f = tf.cast(height, tf.float32)
    w_f = tf.cast(width, tf.float32)
    s_area, s_ratio, s_top, s_left = split_seed(seed, 4)
    area = h_f * w_f
    target = area * tf.random.stateless_uniform(
        [attempts], s_area, minval=scale[0], maxval=scale[1]
    )
    log_r = tf.random.stateless_uniform(
        [attempts], s_ratio, minval=math.log(ratio[0]), maxval=math.log(ratio[1])
    )
    aspect = tf.exp(log_r)
    cw = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
    ch = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
    valid = (cw > 0) & (ch > 0) & (cw <= width) & (ch <= height)
    first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)
    ch_a, cw_a = ch[first], cw[first]
    # Uniform integer offsets in [0, H − h] and [0, W − w] (torchvision's randint(0, H−h+1)).
    u_top = tf.random.stateless_uniform([attempts], s_top)[first]
    u_left = tf.random.stateless_uniform([attempts], s_left)[first]
    top_a = tf.minimum(
        tf.cast(tf.floor(u_top * tf.cast(height - ch_a + 1, tf.float32)), tf.int32),
        height - ch_a,
    )
    left_a = tf.minimum(
        tf.cast(tf.floor(u_left * tf.cast(width - cw_a + 1, tf.float32)), tf.int32),
        width - cw_a,
    )
    # Fallback: whole image, clamped to the aspect range, centred.
    in_ratio = w_f / h_f
    narrow = in_ratio < ratio[0]
    wide = in_ratio > ratio[1]
    cw_fb = tf.where(wide, tf.cast(tf.round(h_f * ratio[1]), tf.int32), width)
    ch_fb = tf.where(narrow, tf.cast(tf.round(w_f / ratio[0]), tf.int32), height)
    top_fb = (height - ch_fb) // 2
    left_fb = (width - cw_fb) // 2
    ok = tf.reduce_any(valid)
    return (
        tf.where(ok, top_a, top_fb),
        tf.where(ok, left_a, left_fb),
        tf.where(ok, ch_a, ch_fb),
        tf.where(ok, cw_a, cw_fb),
    )


def resize(image: tf.Tensor, size: Sequence[int] | tf.Tensor, antialias: bool = True) -> tf.Tensor:
    """Bilinear resize to (h, w) as float32 in the input's 0–255 scale (antialiased like PIL)."""
    return tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=antialias)


def random_resized_crop(
    image: tf.Tensor,
    seed: tf.Tensor,
    image_size: int,
    scale: Sequence[float] = RRC_SCALE,
    ratio: Sequence[float] = RRC_RATIO,
    attempts: int = RRC_ATTEMPTS,
    antialias: bool = True,
) -> tf.Tensor:
    """Random-resized crop of a decoded HWC image to (image_size, image_size), float32 0–255."""
    shape = tf.shape(image)
    top, left, ch, cw = random_resized_crop_window(shape[0], shape[1], seed, scale, ratio, attempts)
    crop = tf.image.crop_to_bounding_box(image, top, left, ch, cw)
    return resize(crop, [image_size, image_size], antialias)


def decode_random_resized_crop(
    contents: tf.Tensor,
    seed: tf.Tensor,
    image_size: int,
    scale: Sequence[float] = RRC_SCALE,
    ratio: Sequence[float] = RRC_RATIO,
    attempts: int = RRC_ATTEMPTS,
    antialias: bool = True,
) -> tf.Tensor:
    """Decode + random-resized crop; JPEGs decode only the crop window (much faster on ImageNet).

    Same window as ``random_resized_crop`` on the fully decoded image, so both paths agree.
    """

    def jpeg() -> tf.Tensor:
        shape = tf.io.extract_jpeg_shape(contents)
        top, left, ch, cw = random_resized_crop_window(
            shape[0], shape[1], seed, scale, ratio, attempts
        )
        crop = tf.io.decode_and_crop_jpeg(contents, tf.stack([top, left, ch, cw]), channels=3)
        return resize(crop, [image_size, image_size], antialias)

    def other() -> tf.Tensor:
        image = decode(contents)
        return random_resized_crop(image, seed, image_size, scale, ratio, attempts, antialias)

    return tf.cond(tf.io.is_jpeg(contents), jpeg, other)


def imagenet_train_augment(
    contents: tf.Tensor,
    seed: tf.Tensor,
    image_size: int,
    scale: Sequence[float] = RRC_SCALE,
    ratio: Sequence[float] = RRC_RATIO,
    attempts: int = RRC_ATTEMPTS,
    antialias: bool = True,
) -> tf.Tensor:
    """ImageNet train transform on encoded bytes: random-resized crop then random flip."""
    s_crop, s_flip = split_seed(seed, 2)
    image = decode_random_resized_crop(
        contents, s_crop, image_size, scale, ratio, attempts, antialias
    )
    return random_flip(image, s_flip)


def cifar_crop_flip(
    image: tf.Tensor, offset_y: tf.Tensor, offset_x: tf.Tensor, flip: tf.Tensor, pad: int = 4
) -> tf.Tensor:
    """Zero-pad ``pad`` pixels, crop the original size at (offset_y, offset_x), mirror if ``flip``.

    Offsets index the padded image, so (pad, pad) without flip is the identity.
    """
    shape = tf.shape(image)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    crop = tf.image.crop_to_bounding_box(padded, offset_y, offset_x, shape[0], shape[1])
    return tf.cond(tf.cast(flip, tf.bool), lambda: tf.reverse(crop, axis=[1]), lambda: crop)


def cifar_augment(image: tf.Tensor, seed: tf.Tensor, pad: int = 4) -> tf.Tensor:
    """CIFAR train transform: pad ``pad`` zeros, random crop back to the input size, random flip."""
    if pad < 0:
        raise ValueError(f"pad={pad} must be >= 0")
    s_off, s_flip = split_seed(seed, 2)
    offsets = tf.random.stateless_uniform([2], s_off, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    flip = tf.random.stateless_uniform([], s_flip) < 0.5
    return cifar_crop_flip(image, offsets[0], offsets[1], flip, pad)


def resize_to(image: tf.Tensor, image_size: int, antialias: bool = True) -> tf.Tensor:
    """Resize to (image_size, image_size) only when needed (identity keeps exact pixel values)."""
    shape = tf.shape(image)
    same = (shape[0] == image_size) & (shape[1] == image_size)
    return tf.cond(
        same,
        lambda: tf.cast(image, tf.float32),
        lambda: resize(image, [image_size, image_size], antialias),
    )


def eval_resize_size(image_size: int) -> int:
    """Shorter-side size before the centre crop: image_size·256/224 (256 for 224)."""
    return int(round(image_size * 256 / 224))


def resize_shorter_center_crop(
    image: tf.Tensor, image_size: int, resize_size: int | None = None, antialias: bool = True
) -> tf.Tensor:
    """Eval transform: shorter side → resize_size (long side truncated as torchvision), centre crop."""
    resize_size = eval_resize_size(image_size) if resize_size is None else resize_size
    if resize_size < image_size:
        raise ValueError(f"resize_size={resize_size} must be >= image_size={image_size}")
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    short = tf.reduce_min(shape)
    new_hw = tf.cast(tf.floor(shape * (resize_size / short)), tf.int32)
    # The shorter side is exactly resize_size (floor could lose it to rounding error).
    new_hw = tf.where(shape == short, resize_size, new_hw)
    resized = resize(image, new_hw, antialias)
    top = tf.cast(tf.round(tf.cast(new_hw[0] - image_size, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_hw[1] - image_size, tf.float32) / 2.0), tf.int32)
    return tf.image.crop_to_bounding_box(resized, top, left, image_size, image_size)


def decode(contents: tf.Tensor) -> tf.Tensor:
    """Decode JPEG/PNG/GIF/BMP bytes to uint8 HWC with 3 channels (first frame of animations)."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def train_transform(
    contents: tf.Tensor,
    seed: tf.Tensor,
    *,
    augment: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    cifar_pad: int = 4,
    scale: Sequence[float] = RRC_SCALE,
    ratio: Sequence[float] = RRC_RATIO,
) -> tf.Tensor:
    """Encoded bytes → normalised float32 (image_size, image_size, 3) training image.

    "cifar"/"none" first resize to image_size if the file has another size (no-op otherwise).
    """
    check_augment(augment)
    if augment == "imagenet":
        image = imagenet_train_augment(contents, seed, image_size, scale, ratio)
    elif augment == "cifar":
        image = cifar_augment(resize_to(decode(contents), image_size), seed, cifar_pad)
    else:
        image = resize_to(decode(contents), image_size)
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return normalize(image, mean, std)


def eval_transform(
    contents: tf.Tensor,
    *,
    augment: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> tf.Tensor:
    """Encoded bytes → normalised float32 eval image (resize+centre crop for "imagenet")."""
    check_augment(augment)
    image = decode(contents)
    if augment == "imagenet":
        image = resize_shorter_center_crop(image, image_size)
    else:
        image = resize_to(image, image_size)
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return normalize(image, mean, std)
