"""One child process of a sweep wave (fbl_jax/train/processes.py): its runs, on its cores.

Started as `python -m fbl_jax.cli.sweep_process SPEC` by the parent, never by hand: SPEC is the
parent's pickled list of runs, work directory, timing file name and cores.
"""

from __future__ import annotations

import pathlib
import sys

from fbl_jax import pinned


def main(spec_path: str) -> int:
    spec = pinned.read_spec(spec_path)  # pinned before JAX is imported (below)
    from fbl_jax.cli import cpu_flags, xla_cache
    from fbl_jax.cli.logs import setup_logging

    setup_logging(label=",".join(name for name, _, _ in spec["runs"]))
    cpu_flags.apply_fast_cpu_flags()
    from fbl_jax.train.loop import Run, train_program
    from fbl_jax.train.preemption import PREEMPTED_EXIT_CODE, Preempted, stop_scope

    xla_cache.enable()
    runs = [Run(name, config, pathlib.Path(d)) for name, config, d in spec["runs"]]
    with stop_scope():
        try:
            train_program(runs, pathlib.Path(spec["workdir"]), spec["timing"])
        except Preempted:
            return PREEMPTED_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
