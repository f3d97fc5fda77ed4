r"""fbl-decouple: re-balance a finished run's classifier without training its backbone.

    fbl-decouple --method tau_norm --from runs/c10_ce --workdir runs/c10_ce_taunorm
    fbl-decouple --method crt --from runs/c10_ce --workdir runs/c10_ce_crt \
        --config.crt.epochs=5 --config.checkpoint=last

Methods: tau_norm, la_posthoc, crt, lws (see fbl_jax/decouple.py). The config defaults to
configs/decouple.py; --method and --from override config.method and config.from_run.
"""

from __future__ import annotations

import pathlib

from absl import flags
from ml_collections import config_flags

from fbl_jax import cli
from fbl_jax.decouple import METHODS

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "decouple.py"

FLAGS = flags.FLAGS


def define_flags() -> list[str]:
    flags.DEFINE_string("workdir", None, "New directory for the decoupled run.")
    flags.DEFINE_enum("method", None, list(METHODS), "Overrides config.method.")
    flags.DEFINE_string("from", None, "The source fbl-train WORKDIR; overrides config.from_run.")
    config_flags.DEFINE_config_file(
        "config",
        str(DEFAULT_CONFIG),
        "A decouple config file (configs/decouple.py).",
        lock_config=True,
    )
    flags.mark_flags_as_required(["workdir"])
    return ["method", "from", "workdir", "config"]


def main(argv: list[str]) -> None:
    config = FLAGS.config
    with config.unlocked():
        if FLAGS.method is not None:
            config.method = FLAGS.method
        if FLAGS["from"].value is not None:
            config.from_run = FLAGS["from"].value
    cli.start(argv, config.distributed)
    from fbl_jax.decouple import run_decouple  # after jax.distributed joins hosts

    run_decouple(config, FLAGS.workdir)  # bad input: one line, exit 2 (cli.run_absl)


def run() -> None:
    cli.run_absl(
        "fbl-decouple",
        main,
        __doc__,
        define_flags,
        default_config_file=str(DEFAULT_CONFIG),
        example="crt.epochs=5 --config.checkpoint=last",
    )


if __name__ == "__main__":
    run()
