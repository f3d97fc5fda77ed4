"""Fast XLA settings for the CPU backend, applied by the entry points before JAX starts.

XLA's CPU backward convolutions and BatchNorm reductions are much faster with YNNPACK fusions of
element-wise and reduction work (ResNet-32 train step, batch 64, 2-core AMD EPYC: 43 → 102
images/s, see BENCHMARKS.md). The flag only affects the CPU backend. Set FBL_JAX_FAST_CPU=0 to
leave XLA_FLAGS alone.
"""

from __future__ import annotations

import os

FAST_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=eltwise,reduce",)


def apply_fast_cpu_flags() -> None:
    """Add FAST_CPU_FLAGS to XLA_FLAGS (must run before the first JAX computation)."""
    if os.environ.get("FBL_JAX_FAST_CPU", "1") == "0":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in FAST_CPU_FLAGS:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags


def with_host_devices(flags: str, devices: int) -> str:
    """`flags` (an XLA_FLAGS value) with its forced host device count replaced by `devices`.

    For subprocesses that must compile as their parent does (compiler flags can change the bits
    on some CPUs) on another number of host devices."""
    kept = [f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"])
