"""The loss formulas as pure functions: FBL and the long-tailed baselines it is compared with.

FBL (Li, Cheung & Jiang, ICME 2022) trains on logits that are lowered, for every class j, by a
class-dependent amount that shrinks as the feature norm grows:

    z_j^b = z_j − α(t) · λ_j / (‖f‖₂ + ε),   λ_j = log n_max − log n_j,

so tail classes (large λ_j) can only win the softmax with large-norm features; the penalty pushes
tail features to larger norms. Prediction uses the plain logits z.

Every function is pure and jittable; class counts and hyper-parameters are Python values, while
`epoch` (DRW) may be traced, so schedules never recompile. Labels are integer class ids of shape
(B,). The loss kinds (losses/kinds/) build their single-run formulas from these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# ----------------------------------------------------------------------------- validation helpers


def checked_counts(class_counts: Sequence[float] | np.ndarray) -> np.ndarray:
    """Class counts as float64 NumPy, rejecting shapes/values that make the losses meaningless."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(
            f"class_counts must be a non-empty 1-D sequence (one count per class), "
            f"got shape {counts.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(counts) | (counts <= 0))
    if bad.size:
        raise ValueError(
            f"class_counts must all be positive (every class needs ≥ 1 training example); "
            f"classes {bad.tolist()} have counts {counts[bad].tolist()}: drop those classes or "
            "fix the split"
        )
    return counts


def check_weights(class_weights: Array | None, num_classes: int) -> None:
    """Class weights, when given, must be one per class."""
    if class_weights is not None and jnp.shape(class_weights) != (num_classes,):
        raise ValueError(
            f"class_weights must have shape ({num_classes},) to match the logits, "
            f"got {jnp.shape(class_weights)}"
        )


def check_gamma(gamma: float) -> None:
    """Focal γ: (1 − p)^γ is a down-weighting only for finite γ ≥ 0."""
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"focal gamma must be a finite number ≥ 0, got {gamma!r}")


def check_positive(what: str, value: float) -> None:
    """LDAM's margin and scale: zero or negative values silently undo the method."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")


def check_scale(scale: float) -> None:
    """FBL's A: a negative scale would favour the head classes instead of the tail."""
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"fbl scale must be a finite number ≥ 0, got {scale!r}")


def check_beta(beta: float) -> None:
    """Class-balanced β: the effective number (1 − β^n)/(1 − β) needs β in [0, 1)."""
    if not (math.isfinite(beta) and 0.0 <= beta < 1.0):
        raise ValueError(f"cb beta must lie in [0, 1), got {beta!r}")


def check_start_epoch(drw_start_epoch: float) -> None:
    """DRW's start: an epoch of the run (≥ 0)."""
    if not (math.isfinite(drw_start_epoch) and drw_start_epoch >= 0):
        raise ValueError(f"drw_start_epoch must be a finite number ≥ 0, got {drw_start_epoch!r}")


def check_tau(tau: float) -> None:
    """Logit-adjustment τ: any finite value (negative τ is a valid ablation)."""
    if not math.isfinite(tau):
        raise ValueError(f"logit-adjustment tau must be finite, got {tau!r}")


def check_classes(logits: Array, num_classes: int) -> None:
    """Logits must have one column per class the loss was built for (a clear error, not NaN)."""
    if logits.shape[-1] != num_classes:
        raise ValueError(
            f"logits have {logits.shape[-1]} classes but class_counts has {num_classes}: "
            "build the loss with the training set's class counts"
        )


def _float_dtype(*xs: Array) -> jnp.dtype:
    """Compute dtype: at least float32 (bf16 logits are upcast), float64 kept when enabled."""
    return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


def _log_prior(class_counts) -> np.ndarray:
    counts = checked_counts(class_counts)
    return np.log(counts / counts.sum())


# ----------------------------------------------------------------------------- cross-entropy


def cross_entropy_loss(logits: Array, labels: Array, class_weights: Array | None = None) -> Array:
    """Softmax cross-entropy, mean over the batch.

    With `class_weights` w it is PyTorch's weighted mean Σ w_{y_i} ℓ_i / Σ w_{y_i}, the
    convention of the CB/LDAM reference code.
    """
    dtype = _float_dtype(logits)
    logits = jnp.asarray(logits, dtype)
    check_weights(class_weights, logits.shape[-1])
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return _weighted_mean(nll, labels, class_weights, dtype)


def _weighted_mean(per_example: Array, labels: Array, class_weights, dtype) -> Array:
    if class_weights is None:
        return jnp.mean(per_example)
    w = jnp.asarray(class_weights, dtype)[labels]
    return jnp.sum(w * per_example) / jnp.sum(w)


# ----------------------------------------------------------------------------- FBL


def fbl_lambda(
    class_counts: Sequence[float] | np.ndarray, normalize: bool = False, scale: float = 1.0
) -> Array:
    """Per-class FBL strength λ_j = log n_max − log n_j (0 for the largest class), times `scale`.

    `normalize=False, scale=1` is the paper; `normalize=True, scale=A` is the authors' code
    (λ / max λ · A, A = 60 on CIFAR, 150 on large datasets). A balanced set has max λ = 0;
    normalising then gives zeros rather than NaN.
    """
    counts = checked_counts(class_counts)
    check_scale(scale)
    lam = np.log(counts.max()) - np.log(counts)
    if normalize:
        top = lam.max()
        lam = lam / top if top > 0 else np.zeros_like(lam)
    return jnp.asarray(lam * scale, dtype=jnp.float32)


def feature_balanced_logits(
    logits: Array, features: Array, lam: Array, alpha: Array | float, eps: float = 1e-12
) -> Array:
    """Training logits z_j − α·λ_j / (‖f‖₂ + ε), shape (B, C).

    The norm uses a guarded square root so an all-zero feature vector gives a finite value and
    finite (zero) gradients instead of NaN.
    """
    dtype = _float_dtype(logits, features)
    logits = jnp.asarray(logits, dtype)
    features = jnp.asarray(features, dtype).reshape(features.shape[0], -1)
    lam = jnp.asarray(lam, dtype)
    if lam.shape != (logits.shape[-1],):
        raise ValueError(
            f"lam must have one entry per class, shape ({logits.shape[-1]},), got {lam.shape}"
        )
    sq = jnp.sum(features * features, axis=-1, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return logits - jnp.asarray(alpha, dtype) * lam[None, :] / (norm + eps)


def feature_balanced_loss(
    logits: Array,
    features: Array,
    labels: Array,
    lam: Array,
    alpha: Array | float,
    class_weights: Array | None = None,
) -> Array:
    """FBL: (optionally weighted) mean softmax cross-entropy on the feature-balanced logits."""
    return cross_entropy_loss(
        feature_balanced_logits(logits, features, lam, alpha), labels, class_weights
    )


# ----------------------------------------------------------------------------- baselines


def focal_loss(
    logits: Array, labels: Array, gamma: float = 1.0, class_weights: Array | None = None
) -> Array:
    """Focal loss −(1 − p_t)^γ log p_t (Lin et al. 2017), mean over the batch.

    With class weights it is Σ w_{y_i} FL_i / Σ w_{y_i}, like the weighted CE. γ = 0 is CE.
    """
    check_gamma(gamma)
    dtype = _float_dtype(logits)
    logits = jnp.asarray(logits, dtype)
    check_weights(class_weights, logits.shape[-1])
    logp = jax.nn.log_softmax(logits, axis=-1)
    logp_t = jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if gamma == 0:
        per_example = -logp_t
    else:
        # 1 − p_t computed stably; clamped away from 0 so (·)^γ has a finite gradient for γ < 1.
        base = jnp.maximum(-jnp.expm1(logp_t), jnp.finfo(dtype).tiny)
        per_example = -(base**gamma) * logp_t
    return _weighted_mean(per_example, labels, class_weights, dtype)


def class_balanced_weights(
    class_counts: Sequence[float] | np.ndarray, beta: float = 0.9999
) -> Array:
    """Class-balanced weights by effective number (Cui et al. 2019): (1 − β) / (1 − β^{n_j}).

    Normalised so Σ_j w_j = C, as in the CB/LDAM code. β = 0 gives all ones.
    """
    counts = checked_counts(class_counts)
    check_beta(beta)
    w = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return jnp.asarray(w / w.sum() * counts.size, dtype=jnp.float32)


def drw_weights(
    class_counts: Sequence[float] | np.ndarray,
    epoch: Array | float,
    drw_start_epoch: float = 160.0,
    beta: float = 0.9999,
) -> Array:
    """Deferred re-weighting (Cao et al. 2019): ones before `drw_start_epoch`, CB weights from it.

    `epoch` may be traced; the switch is a jnp.where, so it never recompiles.
    """
    check_start_epoch(drw_start_epoch)
    cb = class_balanced_weights(class_counts, beta)
    on = jnp.asarray(epoch, jnp.float32) >= drw_start_epoch
    return jnp.where(on, cb, jnp.ones_like(cb))


def ldam_margins(class_counts: Sequence[float] | np.ndarray, max_m: float = 0.5) -> Array:
    """LDAM margins m_j ∝ n_j^(−1/4), scaled so the largest margin is `max_m`."""
    counts = checked_counts(class_counts)
    check_positive("ldam max_m", max_m)
    m = counts**-0.25
    return jnp.asarray(m * (max_m / m.max()), dtype=jnp.float32)


def ldam_loss(
    logits: Array,
    labels: Array,
    class_counts: Sequence[float] | np.ndarray,
    max_m: float = 0.5,
    s: float = 30.0,
    class_weights: Array | None = None,
) -> Array:
    """LDAM (Cao et al. 2019) on cosine logits: CE(s · (z − m_y · onehot(y))).

    The margin is subtracted from the target logit only; `s` rescales cosines to logits.
    """
    check_positive("ldam s", s)
    dtype = _float_dtype(logits)
    logits = jnp.asarray(logits, dtype)
    margins = jnp.asarray(ldam_margins(class_counts, max_m), dtype)
    if margins.shape[0] != logits.shape[-1]:
        raise ValueError(
            f"class_counts has {margins.shape[0]} classes but logits have {logits.shape[-1]}"
        )
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=dtype)
    adjusted = logits - onehot * margins[labels][:, None]
    return cross_entropy_loss(s * adjusted, labels, class_weights)


def logit_adjusted_loss(
    logits: Array,
    labels: Array,
    class_counts: Sequence[float] | np.ndarray,
    tau: float = 1.0,
    class_weights: Array | None = None,
) -> Array:
    """Logit-adjusted loss (Menon et al. 2021): CE on z + τ · log π, π_j = n_j / Σ n."""
    check_tau(tau)
    dtype = _float_dtype(logits)
    log_prior = jnp.asarray(_log_prior(class_counts), dtype)
    return cross_entropy_loss(jnp.asarray(logits, dtype) + tau * log_prior, labels, class_weights)


def balanced_softmax_loss(
    logits: Array,
    labels: Array,
    class_counts: Sequence[float] | np.ndarray,
    class_weights: Array | None = None,
) -> Array:
    """Balanced softmax (Ren et al. 2020): CE on z + log π."""
    return logit_adjusted_loss(logits, labels, class_counts, 1.0, class_weights)


def posthoc_logit_adjust(
    logits: Array, class_counts: Sequence[float] | np.ndarray, tau: float = 1.0
) -> Array:
    """Prediction-time logit adjustment z − τ · log π (Menon et al. 2021)."""
    check_tau(tau)
    dtype = _float_dtype(logits)
    return jnp.asarray(logits, dtype) - tau * jnp.asarray(_log_prior(class_counts), dtype)
