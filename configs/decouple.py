"""fbl-decouple's default config: τ-norm / post-hoc LA grids and the cRT / LWS schedules.

    fbl-decouple --method tau_norm --from runs/c10_ce --workdir runs/c10_ce_taunorm
    fbl-decouple --method crt --from runs/c10_ce --workdir runs/c10_ce_crt --config.crt.epochs=5
    fbl-decouple --method tau_norm --from results/.../seed=0,loss.name=ce --workdir runs/t \
        --config.checkpoint=last --config.data.root=$HOME/data/cifar10   # a run kept in results/

The data, model and class counts come from the source run's config.json; config.data.root (and
cache_dir) say where its data is on this machine, for a run trained on another one. The data
read must be the run's: its data.json fingerprints (sha256 of the decoded pixels) are checked.
"""

from fbl_jax.decouple import default_config


def get_config():
    return default_config()
