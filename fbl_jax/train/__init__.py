"""Training: run set-up, the one loop every run goes through, steps, checkpoints, writers."""

from fbl_jax.train.runs import train_and_evaluate, train_sweep

__all__ = ["train_and_evaluate", "train_sweep"]
