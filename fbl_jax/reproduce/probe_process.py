"""One of several timing probes running at once (fbl_jax/reproduce/probe.py), on its cores.

Started as `python -m fbl_jax.reproduce.probe_process SPEC` by the probe, never by hand; prints
its measurement as one JSON line.
"""

from __future__ import annotations

import json
import sys

from fbl_jax import pinned


def main(spec_path: str) -> int:
    spec = pinned.read_spec(spec_path)  # pinned before JAX is imported (below)
    from fbl_jax.cli import cpu_flags, xla_cache

    cpu_flags.apply_fast_cpu_flags()
    xla_cache.enable()
    from fbl_jax.reproduce.probe import _measure

    print(json.dumps(_measure(spec["config"], 1)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
