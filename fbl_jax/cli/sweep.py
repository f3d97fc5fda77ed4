r"""fbl-sweep: train the cartesian product of --set values, as few compiled programs as possible.

    fbl-sweep --config=configs/cifar10_lt.py --workdir=runs/c10_table4 \
        --config.data.root=$HOME/data/cifar10 \
        --set seed=0,1,2 --set loss.curriculum=parabolic,linear,sine,cosine,linear_decrease

Each combination becomes an ordinary run directory WORKDIR/<key=value,...>/ (what fbl-train
writes, so fbl-report and fbl-decouple read it). Runs that differ only in the seed or the loss
(kind, numbers, α(t) schedule) train together in one program, through the same loop as
fbl-train: on accelerators vmapped in one call, on the CPU each run its own call (and then each
run equals its fbl-train run bit for bit). Other differences start another program, and the log
says how many and why. The same command resumes a killed sweep.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from fbl_jax import cli

FLAGS = flags.FLAGS


def define_flags() -> list[str]:
    flags.DEFINE_string("workdir", None, "Directory of the sweep: one run directory per setting.")
    config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
    flags.DEFINE_multi_string(
        "set", [], "KEY=V1,V2,...: a config field and its values (repeat for a product)."
    )
    flags.mark_flags_as_required(["config", "workdir"])
    return ["config", "workdir", "set"]


def main(argv: list[str]) -> None:
    cli.start(argv, FLAGS.config.distributed)
    from fbl_jax.train import train_sweep  # after jax.distributed joins hosts
    from fbl_jax.train.programs import parse_set

    sets = [parse_set(text) for text in FLAGS.set]
    train_sweep(FLAGS.config, sets, FLAGS.workdir)


def run() -> None:
    cli.run_absl("fbl-sweep", main, __doc__, define_flags)


if __name__ == "__main__":
    run()
