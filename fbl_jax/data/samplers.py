"""Training-set samplers as pure JAX functions of (key, epoch).

One epoch's list of example indices is ``sampler.indices(key, epoch)``: traceable, so the
on-device pipeline computes it inside ``jit``/``pmap`` and the tf.data pipeline calls it once per
epoch on the host. Same key -> same list, which makes the data position a function of the step.

Names: ``instance`` (a permutation of all examples), ``class_balanced`` (class uniform, then an
example uniform within it), ``sqrt`` (class probability proportional to n_c ** power),
``class_aware`` (Decoupling's ClassAwareSampler: k examples per visited class, classes and the
examples of each class cycled in shuffled order), ``progressive`` (Decoupling's
progressively-balanced sampling, instance -> class-balanced over ``num_epochs``) and ``reversed``
(BBN's reversed sampler: class probability p_i = (1/n_i) / sum_j (1/n_j), then an example uniform
within the class, with replacement).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SAMPLER_NAMES = ("instance", "class_balanced", "sqrt", "class_aware", "progressive", "reversed")


class Sampler:
    """Common state: labels grouped by class (``order``, ``offsets``) and the epoch length."""

    name = "base"

    def __init__(self, labels: np.ndarray, class_counts: np.ndarray, num_samples: int):
        self.labels = labels
        self.class_counts = class_counts
        self.num_classes = len(class_counts)
        self.num_examples = len(labels)
        self.num_samples = int(num_samples)
        # order[offsets[c] : offsets[c] + n_c] are the indices of class c, in original order.
        self._order = jnp.asarray(np.argsort(labels, kind="stable"), jnp.int32)
        self._offsets = jnp.asarray(np.concatenate([[0], np.cumsum(class_counts)[:-1]]), jnp.int32)
        self._counts = jnp.asarray(class_counts, jnp.int32)

    def indices(self, key: jax.Array, epoch: jax.Array | int) -> jax.Array:
        """The epoch's example indices, int32 (num_samples,)."""
        raise NotImplementedError

    def _draw_from_class_probs(self, key: jax.Array, probs: jax.Array) -> jax.Array:
        """With replacement: class ~ probs (inverse CDF), then an example uniform in the class.

        One uniform draw per (sample, stage) keeps the compiled program small.
        """
        u = jax.random.uniform(key, (2, self.num_samples))
        cdf = jnp.cumsum(probs)
        cdf = cdf / cdf[-1]
        cls = jnp.searchsorted(cdf, u[0], side="right")
        cls = jnp.minimum(cls, self.num_classes - 1)
        n_c = self._counts[cls]
        within = jnp.minimum((u[1] * n_c).astype(jnp.int32), n_c - 1)
        return self._order[self._offsets[cls] + within]


class InstanceSampler(Sampler):
    """Every training example exactly once per epoch, in a random order."""

    name = "instance"

    def indices(self, key: jax.Array, epoch: jax.Array | int = 0) -> jax.Array:
        return jax.random.permutation(key, self.num_examples).astype(jnp.int32)


class ClassProbSampler(Sampler):
    """Fixed class probabilities p_c ∝ n_c ** power (class-balanced: power 0; square-root: 0.5;
    BBN's reversed sampler: -1)."""

    def __init__(self, labels, class_counts, num_samples, power: float, name: str):
        super().__init__(labels, class_counts, num_samples)
        self.name = name
        self.power = float(power)
        counts = np.asarray(class_counts, np.float64)
        weights = np.where(counts > 0, np.power(np.maximum(counts, 1.0), self.power), 0.0)
        self.class_probs = weights / weights.sum()

    def indices(self, key: jax.Array, epoch: jax.Array | int = 0) -> jax.Array:
        return self._draw_from_class_probs(key, jnp.asarray(self.class_probs, jnp.float32))


class ProgressiveSampler(Sampler):
    """p_c(t) = (1 - t/T) n_c / N + (t/T) / C, with t = epoch (clipped to [0, T])."""

    name = "progressive"

    def __init__(self, labels, class_counts, num_samples, num_epochs: int):
        super().__init__(labels, class_counts, num_samples)
        self.num_epochs = int(num_epochs)
        counts = np.asarray(class_counts, np.float64)
        self.instance_probs = counts / counts.sum()
        present = counts > 0
        self.balanced_probs = present / present.sum()

    def class_probs(self, epoch: jax.Array | int) -> jax.Array:
        """The class distribution used in ``epoch``."""
        t = jnp.clip(jnp.asarray(epoch, jnp.float32) / self.num_epochs, 0.0, 1.0)
        inst = jnp.asarray(self.instance_probs, jnp.float32)
        bal = jnp.asarray(self.balanced_probs, jnp.float32)
        return (1.0 - t) * inst + t * bal

    def indices(self, key: jax.Array, epoch: jax.Array | int) -> jax.Array:
        return self._draw_from_class_probs(key, self.class_probs(epoch))


class ClassAwareSampler(Sampler):
    """Decoupling's ClassAwareSampler (``num_samples_cls = k``), restarted every epoch.

    The classes are visited in cycles, each cycle a fresh shuffle of all (non-empty) classes;
    a visit takes the next ``k`` examples from that class's own stream, which walks through
    successive fresh shuffles of the class's examples. Unlike the PyTorch iterators the streams
    restart each epoch (so the epoch's list is a pure function of the key).
    """

    name = "class_aware"

    def __init__(self, labels, class_counts, num_samples, k: int):
        super().__init__(labels, class_counts, num_samples)
        self.k = int(k)
        present = np.flatnonzero(np.asarray(class_counts) > 0)
        self._present = jnp.asarray(present, jnp.int32)
        num_present = len(present)
        visits = math.ceil(self.num_samples / self.k)
        self._cycles = math.ceil(visits / num_present)  # visits to each class this epoch
        per_class = self._cycles * self.k  # positions taken from each class stream
        min_count = int(np.asarray(class_counts)[present].min())
        self._reshuffles = math.ceil(per_class / min_count)  # shuffles of the smallest class

    def indices(self, key: jax.Array, epoch: jax.Array | int = 0) -> jax.Array:
        n, num_present = self.num_examples, self._present.shape[0]
        bits = jax.random.bits(key, (self._reshuffles * n + self._cycles * num_present,))
        # Independent shuffles inside every class, laid out in class blocks: sort by
        # (label, random key). Row r is the r-th pass through each class's examples.
        labels = jnp.asarray(self.labels, jnp.int32)
        shuffle_keys = bits[: self._reshuffles * n].reshape(self._reshuffles, n)
        shuffles = jax.vmap(lambda u: jnp.lexsort((u, labels)))(shuffle_keys).astype(jnp.int32)
        # Class visits: cycle m is a random order of the non-empty classes.
        cycle_keys = bits[self._reshuffles * n :].reshape(self._cycles, num_present)
        cls = self._present[jnp.argsort(cycle_keys, axis=1)][:, :, None]  # (cycles, C', 1)
        visit = jnp.arange(self._cycles)[:, None, None]  # the m-th visit of that class
        pos = visit * self.k + jnp.arange(self.k)[None, None, :]  # position in its stream
        n_c = self._counts[cls]
        idx = shuffles[pos // n_c, self._offsets[cls] + pos % n_c]
        return idx.reshape(-1)[: self.num_samples]


def make_sampler(
    name: str,
    labels: np.ndarray,
    class_counts: np.ndarray,
    *,
    num_samples: int | None = None,
    k: int = 4,
    power: float = 0.5,
    num_epochs: int | None = None,
    **unused: Any,
) -> Sampler:
    """Build a sampler by name (see ``SAMPLER_NAMES``); ``num_samples`` defaults to N.

    ``k``: examples per class visit (``class_aware``); ``power``: exponent of ``sqrt``;
    ``num_epochs``: the T of ``progressive``. Extra keyword arguments are ignored so that the
    caller can pass every sampler option from a config.
    """
    if name not in SAMPLER_NAMES:
        raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLER_NAMES}")
    labels = np.asarray(labels, np.int64)
    counts = np.asarray(class_counts, np.int64)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(counts):
        raise ValueError(
            f"labels span [{labels.min()}, {labels.max()}] but class_counts has {len(counts)} classes"
        )
    actual = np.bincount(labels, minlength=len(counts))
    if not np.array_equal(actual, counts):
        c = int(np.flatnonzero(actual != counts)[0])
        raise ValueError(
            f"class_counts[{c}] = {counts[c]} but the labels hold {actual[c]} examples of class {c}; "
            "pass class_counts of the same training subset"
        )
    n = len(labels)
    if num_samples is None:
        num_samples = n
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if name == "instance":
        if num_samples != n:
            raise ValueError(
                f"the instance sampler yields each of the N={n} examples once per epoch; "
                f"num_samples={num_samples} must be N (or None)"
            )
        return InstanceSampler(labels, counts, n)
    if name == "class_balanced":
        return ClassProbSampler(labels, counts, num_samples, power=0.0, name=name)
    if name == "sqrt":
        return ClassProbSampler(labels, counts, num_samples, power=power, name=name)
    if name == "reversed":
        return ClassProbSampler(labels, counts, num_samples, power=-1.0, name=name)
    if name == "class_aware":
        if int(k) < 1:
            raise ValueError(f"class_aware needs k >= 1 examples per class visit, got k={k}")
        return ClassAwareSampler(labels, counts, num_samples, k=k)
    if num_epochs is None or int(num_epochs) < 1:
        raise ValueError(
            f"the progressive sampler needs num_epochs >= 1 (the T in t/T), got {num_epochs!r}"
        )
    return ProgressiveSampler(labels, counts, num_samples, num_epochs=num_epochs)
