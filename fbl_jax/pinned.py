"""Child processes pinned to their own cores, for the CPU layouts that train (or time) several
runs side by side: a sweep wave's processes (train/processes.py) and fbl-reproduce's timing
probes (reproduce/probe.py).

No JAX here: a child reads its spec and pins itself before it imports JAX, so that the thread
pools JAX and oneDNN size from the CPUs a process may use see only its own cores.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from fbl_jax import hugepages


def spawn(
    module: str, specs: Sequence[dict[str, Any]], tmp: pathlib.Path, **popen: Any
) -> list[subprocess.Popen]:
    """One `python -m MODULE SPEC` child per spec (a picklable dict with the child's cores
    under "cpus"), with as many OpenMP threads as it has cores and malloc's huge pages
    (hugepages.py); `popen`: Popen's keywords."""
    children = []
    for i, spec in enumerate(specs):
        path = pathlib.Path(tmp) / f"child{i}.pkl"
        path.write_bytes(pickle.dumps(spec))
        env = {**hugepages.with_tunable(os.environ), "OMP_NUM_THREADS": str(len(spec["cpus"]))}
        cmd = [sys.executable, "-m", module, str(path)]
        children.append(subprocess.Popen(cmd, env=env, **popen))
    return children


def read_spec(path: str) -> dict[str, Any]:
    """The spec `spawn` gave this child, with this process pinned to its cores: call it
    before importing JAX."""
    spec = pickle.loads(pathlib.Path(path).read_bytes())
    os.sched_setaffinity(0, spec["cpus"])
    return spec
