"""Training: run set-up, the one loop every run goes through, steps, checkpoints, writers."""
