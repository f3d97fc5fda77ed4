"""The shared default (CIFAR-10-LT-shaped). Every config file starts from it.

fbl-train --config=configs/default.py --workdir=runs/x --config.data.root=DIR
"""

from fbl_jax.defaults import get_default_config


def get_config():
    return get_default_config()
