"""On-device CIFAR training pipeline: the whole uint8 train set lives on every device.

Each step's batch is a pure function of (seed, step, device index): the epoch's index list is
``sampler.indices(fold_in(key(seed), epoch), epoch)``, the step takes its slice of it, and each
device its contiguous part. Per-example augmentation randomness comes from the step and the
example's position in the GLOBAL batch, so the global batch is the same on 1 or 64 devices,
and a resumed run replays the exact data. No TensorFlow, no host-side input pipeline.

Augmentation (the standard CIFAR recipe): pad the uint8 image with ``pad`` zero pixels, random
``crop x crop`` crop (offsets uniform in ``[0, H + 2 pad - crop]``), horizontal flip with p = 0.5,
then ``(x / 255 - mean) / std`` with ``mean``/``std`` given on the 0-1 scale.

A ``second_sampler`` (BBN's re-balancing branch) adds a second stream to every batch:
``image_rb``/``label_rb``, drawn from its own epoch list (key ``fold_in(key(seed),
_SECOND_STREAM)`` folded with the epoch) and augmented like the main stream with its own keys,
so it too is a pure function of (seed, step, device index).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fbl_jax.data.samplers import Sampler

# fold_in(key(seed), _AUG_STREAM) seeds augmentation; epochs (the sampler's fold_in data)
# never reach this value, so the two streams do not collide.
_AUG_STREAM = 2**31 - 1
# fold_in(key(seed), _SECOND_STREAM) is the base key of the second sampler's stream.
_SECOND_STREAM = 2**31 - 2


def _check_mean_std(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    mean_np = np.asarray(mean, np.float32).reshape(-1)
    std_np = np.asarray(std, np.float32).reshape(-1)
    if mean_np.shape != (3,) or std_np.shape != (3,):
        raise ValueError(f"mean and std need 3 per-channel values, got {mean!r} and {std!r}")
    if np.any(mean_np > 1.0) or np.any(std_np > 1.0) or np.any(std_np <= 0):
        raise ValueError(
            f"mean={mean!r}, std={std!r} must be on the 0-1 scale with std > 0 "
            "(e.g. CIFAR-10 mean (0.4914, 0.4822, 0.4465)); divide 0-255 values by 255"
        )
    return mean_np, std_np


def cifar_augment_numpy(
    image: np.ndarray,
    offset_y: int,
    offset_x: int,
    flip: bool,
    mean: Sequence[float],
    std: Sequence[float],
    pad: int = 4,
    crop: int | None = None,
) -> np.ndarray:
    """NumPy reference of one example's augmentation (for tests and the tf pipeline).

    Zero-pad the uint8 image by ``pad``, crop ``crop x crop`` at ``(offset_y, offset_x)`` of the
    padded image, mirror left-right if ``flip``, then ``(x / 255 - mean) / std``.
    """
    mean_np, std_np = _check_mean_std(mean, std)
    h, w = image.shape[:2]
    crop = h if crop is None else crop
    max_off = h + 2 * pad - crop
    if not (0 <= offset_y <= max_off and 0 <= offset_x <= w + 2 * pad - crop):
        raise ValueError(
            f"crop offsets ({offset_y}, {offset_x}) must lie in [0, {max_off}] for a {h}x{w} "
            f"image with pad={pad} and crop={crop}"
        )
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    out = padded[offset_y : offset_y + crop, offset_x : offset_x + crop]
    if flip:
        out = out[:, ::-1]
    return ((out.astype(np.float32) / 255.0 - mean_np) / std_np).astype(np.float32)


class DevicePipeline:
    """Traceable batches from a device-resident uint8 train set (see the module docstring).

    Args:
      images: uint8 (N, H, W, 3) training images.
      labels: int (N,) labels.
      sampler: a :mod:`fbl_jax.data.samplers` sampler over these N examples.
      global_batch_size: examples per step over all devices of all hosts.
      mean, std: per-channel normalisation on the 0-1 scale.
      num_devices: total devices over all hosts (default ``jax.device_count()``).
      pad, crop_size, flip: augmentation (crop_size defaults to H).
      seed: the data seed; mixup_alpha > 0 adds batch mixup (lam ~ Beta(alpha, alpha)).
      second_sampler: a sampler of a second stream (``image_rb``, ``label_rb``; BBN), with at
        least as many samples per epoch as ``sampler``; not combined with mixup.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        sampler: Sampler,
        *,
        global_batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        num_devices: int | None = None,
        pad: int = 4,
        crop_size: int | None = None,
        flip: bool = True,
        seed: int = 0,
        mixup_alpha: float = 0.0,
        second_sampler: Sampler | None = None,
    ):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {labels.shape} does not match {images.shape[0]} images")
        if sampler.num_examples != images.shape[0]:
            raise ValueError(
                f"the sampler was built for {sampler.num_examples} examples, the images have "
                f"{images.shape[0]}"
            )
        self.mean, self.std = _check_mean_std(mean, std)
        num_devices = jax.device_count() if num_devices is None else int(num_devices)
        if global_batch_size < 1 or global_batch_size % num_devices:
            raise ValueError(
                f"global batch size {global_batch_size} is not divisible by the {num_devices} "
                f"devices; use a multiple of {num_devices} (e.g. "
                f"{max(1, round(global_batch_size / num_devices)) * num_devices})"
            )
        if sampler.num_samples < global_batch_size:
            raise ValueError(
                f"an epoch has {sampler.num_samples} samples, fewer than one global batch of "
                f"{global_batch_size}; lower the batch size"
            )
        h, w = images.shape[1:3]
        self.crop_size = h if crop_size is None else int(crop_size)
        if pad < 0 or self.crop_size < 1 or self.crop_size > min(h, w) + 2 * pad:
            raise ValueError(
                f"crop_size={self.crop_size} with pad={pad} does not fit {h}x{w} images; "
                f"need 1 <= crop_size <= {min(h, w) + 2 * pad} and pad >= 0"
            )
        if mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0 disables mixup), got {mixup_alpha}")
        if second_sampler is not None:
            if mixup_alpha > 0:
                raise ValueError("a second sampler stream (BBN) does not combine with mixup")
            if second_sampler.num_examples != images.shape[0]:
                raise ValueError(
                    f"the second sampler was built for {second_sampler.num_examples} examples, "
                    f"the images have {images.shape[0]}"
                )
            if second_sampler.num_samples < sampler.num_samples:
                raise ValueError(
                    f"the second sampler's epoch has {second_sampler.num_samples} samples, fewer "
                    f"than the main sampler's {sampler.num_samples}"
                )
        self.images = images
        self.labels = labels.astype(np.int32)
        self.sampler = sampler
        self.global_batch_size = int(global_batch_size)
        self.num_devices = num_devices
        self.per_device_batch = self.global_batch_size // num_devices
        self.pad = int(pad)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.mixup_alpha = float(mixup_alpha)
        self.second_sampler = second_sampler
        self.steps_per_epoch = sampler.num_samples // self.global_batch_size
        self.image_shape = (self.crop_size, self.crop_size, 3)

    def device_data(self) -> dict[str, np.ndarray]:
        """The pytree to place on every local device: ``images`` uint8, ``labels`` int32."""
        return {"images": self.images, "labels": self.labels}

    def _augment(self, image: jax.Array, key: jax.Array) -> jax.Array:
        h, w = image.shape[:2]
        # One draw of 3 words per example: crop offsets and the flip bit (modulo bias < 1e-8).
        bits = jax.random.bits(key, (3,))
        oy = (bits[0] % jnp.uint32(h + 2 * self.pad - self.crop_size + 1)).astype(jnp.int32)
        ox = (bits[1] % jnp.uint32(w + 2 * self.pad - self.crop_size + 1)).astype(jnp.int32)
        padded = jnp.pad(image, ((self.pad, self.pad), (self.pad, self.pad), (0, 0)))
        out = jax.lax.dynamic_slice(padded, (oy, ox, 0), (self.crop_size, self.crop_size, 3))
        if self.flip:
            out = jnp.where(bits[2] >= jnp.uint32(2**31), out[:, ::-1], out)
        x = out.astype(jnp.float32) / 255.0
        return (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)

    def batch(
        self,
        data: dict[str, jax.Array],
        step: jax.Array | int,
        device_index: jax.Array | int,
        seed: jax.Array | int | None = None,
    ) -> dict[str, jax.Array]:
        """This device's part of the step's global batch (traceable under jit/pmap).

        Returns ``image`` float32 (per_device, crop, crop, 3), ``label`` int32 (per_device,),
        and with mixup also ``label_b`` (the partner's label) and ``mix_lam`` (scalar); with a
        second sampler also ``image_rb`` and ``label_rb`` (the same shapes as the main stream).
        ``device_index`` is the GLOBAL device index (process offset + local index). ``seed``
        (traceable; default the pipeline's) lets a sweep give each run its own data stream.
        """
        step = jnp.asarray(step, jnp.int32)
        device_index = jnp.asarray(device_index, jnp.int32)
        base = jax.random.key(self.seed if seed is None else seed)
        epoch = step // self.steps_per_epoch
        epoch_indices = self.sampler.indices(jax.random.fold_in(base, epoch), epoch)
        gb, pd = self.global_batch_size, self.per_device_batch
        batch_start = (step % self.steps_per_epoch) * gb
        first = device_index * pd  # position of this device's first example in the global batch
        mix = self.mixup_alpha > 0
        # With mixup, example g is mixed with g - 1 (a roll of the global batch), so compute
        # the one example before this device's part too.
        positions = jnp.arange(-1 if mix else 0, pd) + first
        positions = jnp.mod(positions, gb)
        idx = epoch_indices[batch_start + positions]
        step_key = jax.random.fold_in(jax.random.fold_in(base, _AUG_STREAM), step)
        keys = jax.vmap(lambda p: jax.random.fold_in(step_key, p))(positions)
        images = jax.vmap(self._augment)(data["images"][idx], keys)
        labels = data["labels"][idx].astype(jnp.int32)
        if self.second_sampler is not None:
            base_rb = jax.random.fold_in(base, _SECOND_STREAM)
            rb_indices = self.second_sampler.indices(jax.random.fold_in(base_rb, epoch), epoch)
            idx_rb = rb_indices[batch_start + positions]
            rb_key = jax.random.fold_in(jax.random.fold_in(base_rb, _AUG_STREAM), step)
            keys_rb = jax.vmap(lambda p: jax.random.fold_in(rb_key, p))(positions)
            return {
                "image": images,
                "label": labels,
                "image_rb": jax.vmap(self._augment)(data["images"][idx_rb], keys_rb),
                "label_rb": data["labels"][idx_rb].astype(jnp.int32),
            }
        if not mix:
            return {"image": images, "label": labels}
        lam_key = jax.random.fold_in(step_key, gb)  # positions are < gb: a separate stream
        # lam ~ Beta(a, a) as G0 / (G0 + G1) with G ~ Gamma(a), in log space (stable for a << 1).
        log_g = jax.random.loggamma(lam_key, self.mixup_alpha, (2,))
        lam = jax.nn.sigmoid(log_g[0] - log_g[1]).astype(jnp.float32)
        mixed = lam * images[1:] + (1.0 - lam) * images[:-1]
        return {"image": mixed, "label": labels[1:], "label_b": labels[:-1], "mix_lam": lam}
