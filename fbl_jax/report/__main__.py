"""`python -m fbl_jax.report RUN_DIR ... --out DIR` (the same as fbl-report)."""

from fbl_jax.report import run

run()
