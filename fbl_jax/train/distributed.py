"""Joining hosts with jax.distributed before any JAX computation."""

from __future__ import annotations

import logging
import os
from typing import Any

import jax

log = logging.getLogger("fbl_jax")


def _multi_process_environment() -> bool:
    """True under Slurm with several tasks, or on a multi-worker Cloud TPU VM."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return "," in workers


def maybe_initialize(dist_config: Any) -> None:
    """Call jax.distributed.initialize() when the config or the environment asks for it.

    "explicit" needs coordinator_address, num_processes and process_id; "auto" uses them when
    given, else lets JAX read Slurm / TPU pod settings; "never" stays single-process.
    """
    mode = dist_config.initialize
    explicit = dist_config.coordinator_address is not None
    if mode == "never" or (mode == "auto" and not explicit and not _multi_process_environment()):
        return
    if mode == "explicit" and not explicit:
        raise ValueError(
            "config.distributed.initialize='explicit' needs config.distributed.coordinator_address, "
            "num_processes and process_id"
        )
    kwargs = {}
    if explicit:
        if dist_config.num_processes is None or dist_config.process_id is None:
            raise ValueError(
                "config.distributed.coordinator_address is set: also set "
                "config.distributed.num_processes and config.distributed.process_id"
            )
        kwargs = dict(
            coordinator_address=dist_config.coordinator_address,
            num_processes=dist_config.num_processes,
            process_id=dist_config.process_id,
        )
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
        # Cross-process collectives on the CPU backend (tests, CPU clusters).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    log.info(
        "joined %d processes: this is process %d with %d of %d devices",
        jax.process_count(),
        jax.process_index(),
        jax.local_device_count(),
        jax.device_count(),
    )
