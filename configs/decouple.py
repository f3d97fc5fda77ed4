"""fbl-decouple's default config: τ-norm / post-hoc LA grids and the cRT / LWS schedules.

    fbl-decouple --method tau_norm --from runs/c10_ce --workdir runs/c10_ce_taunorm
    fbl-decouple --method crt --from runs/c10_ce --workdir runs/c10_ce_crt --config.crt.epochs=5

The data, model and class counts come from the source run's config.json.
"""

from fbl_jax.decouple import default_config


def get_config():
    return default_config()
