"""α(t) curricula for the Feature-Balanced Loss.

FBL switches its feature-norm penalty on gradually: α(t) grows from 0 so that the network first
learns ordinary features and only later is pushed to enlarge the feature norms of tail classes.
`alpha` is written with jnp ops only, so `epoch` may be a traced scalar inside jit and a changing
epoch never triggers a recompile.

Paper schedules use r = clip(t / T, 0, 1):

    parabolic        r²
    linear           r
    sine             sin(π/2 · r)
    cosine           1 − cos(π/2 · r)
    linear_decrease  1 − r
    constant         1

The authors' released code uses α = (t / (T − offset))², which is NOT capped and exceeds 1 in the
last `offset` epochs; it is kept as `authors_code` for reproduction.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

SCHEDULES: tuple[str, ...] = (
    "parabolic",
    "linear",
    "sine",
    "cosine",
    "linear_decrease",
    "constant",
    "authors_code",
)


def validate_schedule(name: str, num_epochs: float, offset: float = 10.0) -> None:
    """Raise ValueError for an unknown schedule or an impossible (num_epochs, offset) pair.

    Separate from `alpha` so configuration errors surface once, before tracing.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown α(t) curriculum {name!r}; valid choices: {SCHEDULES}")
    if not (math.isfinite(num_epochs) and num_epochs > 0):
        raise ValueError(f"num_epochs must be a positive finite number, got {num_epochs!r}")
    if name == "authors_code":
        if not math.isfinite(offset):
            raise ValueError(f"curriculum offset must be finite, got {offset!r}")
        if offset >= num_epochs:
            raise ValueError(
                f"curriculum offset ({offset!r}) must be smaller than num_epochs ({num_epochs!r}): "
                "authors_code divides by (num_epochs − offset); lower the offset"
            )


def alpha(name: str, epoch, num_epochs: float, offset: float = 10.0) -> jnp.ndarray:
    """α(t) of schedule `name` at (possibly fractional, possibly traced) `epoch` t of T epochs.

    Returns a float32 scalar (or an array shaped like `epoch`). `offset` is used only by
    `authors_code`, where it must be smaller than `num_epochs`.
    """
    validate_schedule(name, num_epochs, offset)
    t = jnp.asarray(epoch, dtype=jnp.float32)
    total = float(num_epochs)
    if name == "authors_code":
        return (t / (total - float(offset))) ** 2
    r = jnp.clip(t / total, 0.0, 1.0)
    if name == "parabolic":
        return r**2
    if name == "linear":
        return r
    if name == "sine":
        return jnp.sin(0.5 * jnp.pi * r)
    if name == "cosine":
        return 1.0 - jnp.cos(0.5 * jnp.pi * r)
    if name == "linear_decrease":
        return 1.0 - r
    return jnp.ones_like(r)  # constant


def alpha_by_index(index, epoch, num_epochs: float, offset) -> jnp.ndarray:
    """α(t) of schedule SCHEDULES[index], with `index` and `offset` traced (one run each in a
    sweep, so every curriculum of the paper's Table 4 shares one compiled program)."""
    t = jnp.asarray(epoch, dtype=jnp.float32)
    total = float(num_epochs)
    r = jnp.clip(t / total, 0.0, 1.0)
    values = {
        "parabolic": r**2,
        "linear": r,
        "sine": jnp.sin(0.5 * jnp.pi * r),
        "cosine": 1.0 - jnp.cos(0.5 * jnp.pi * r),
        "linear_decrease": 1.0 - r,
        "constant": jnp.ones_like(r),
        "authors_code": (t / (total - jnp.asarray(offset, jnp.float32))) ** 2,
    }
    stacked = jnp.stack([values[name] for name in SCHEDULES])
    return stacked[jnp.asarray(index, jnp.int32)]
