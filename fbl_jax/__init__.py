"""fbl-jax: the Feature-Balanced Loss for long-tailed visual recognition, in JAX/Flax."""

__version__ = "0.1.0"
