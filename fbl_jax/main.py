r"""fbl-train: train and evaluate one configuration in one work directory.

    fbl-train --config=configs/cifar10_lt.py --workdir=runs/c10_fbl \
        --config.data.root=/data/cifar10-lossless --config.loss.name=ce

Restarting the same command resumes from the workdir's latest checkpoint; SIGTERM writes a
checkpoint and exits 143. Bad input (an unknown config field, a missing data root) exits 2.
"""

from __future__ import annotations

import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

from fbl_jax import cli, cpu_flags, distributed

FLAGS = flags.FLAGS


def define_flags() -> list[str]:
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config.")
    config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
    flags.mark_flags_as_required(["config", "workdir"])
    return ["config", "workdir"]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # absl at WARNING keeps orbax quiet; fbl_jax's own logger reports progress at INFO.
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("fbl_jax").setLevel(std_logging.INFO)
    cpu_flags.apply_fast_cpu_flags()
    distributed.maybe_initialize(FLAGS.config.distributed)
    from fbl_jax.train import train_and_evaluate  # after jax.distributed joins hosts

    train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run() -> None:
    cli.run_absl("fbl-train", main, __doc__, define_flags)


if __name__ == "__main__":
    run()
