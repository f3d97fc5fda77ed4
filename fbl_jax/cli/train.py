r"""fbl-train: train and evaluate one configuration in one work directory.

    fbl-train --config=configs/cifar10_lt.py --workdir=runs/c10_fbl \
        --config.data.root=$HOME/data/cifar10 --config.loss.name=ce

Restarting the same command resumes from the workdir's latest checkpoint; SIGTERM writes a
checkpoint and exits 143. Bad input (an unknown config field, a missing data root) exits 2.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from fbl_jax import cli

FLAGS = flags.FLAGS


def define_flags() -> list[str]:
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config.")
    config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
    flags.mark_flags_as_required(["config", "workdir"])
    return ["config", "workdir"]


def main(argv: list[str]) -> None:
    cli.start(argv, FLAGS.config.distributed)
    from fbl_jax.train import train_and_evaluate  # after jax.distributed joins hosts

    train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run() -> None:
    cli.run_absl("fbl-train", main, __doc__, define_flags)


if __name__ == "__main__":
    run()
