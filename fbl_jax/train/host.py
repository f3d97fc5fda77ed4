"""What a stretch of training ran on, in the words a results table needs.

A long run is stopped and resumed many times, often on other machines (a preempted TPU slice, a
cluster's next free node, a cloud VM of another CPU kind), so its wall time is
only meaningful per machine. The description is recorded with every stretch of every run
(timing.json) and keys fbl-reproduce's timing probe, so an estimate never comes from another
machine.
"""

from __future__ import annotations

import os
import pathlib
import platform
from typing import Any

import jax

# the instruction-set extensions that change the CPU speed of this project's kernels
NOTABLE_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """Model name, family/model and notable flags of the first CPU in /proc/cpuinfo (or
    `cpuinfo`, its text); `platform` where there is no such file."""
    if cpuinfo is None:
        try:
            cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    info = {
        "cpu": fields.get("model name") or platform.processor() or platform.machine(),
        "cpu_flags": [f for f in NOTABLE_CPU_FLAGS if f in flags],
    }
    if "cpu family" in fields and "model" in fields:
        info["cpu_family_model"] = f"{fields['cpu family']}/{fields['model']}"
    return info


def describe() -> dict[str, Any]:
    """This process's machine: the backend and its devices; on the CPU, the CPU and the cores
    this process may use of the machine's."""
    backend = jax.default_backend()
    info: dict[str, Any] = {"backend": backend, "devices": jax.local_device_count()}
    if jax.process_count() > 1:
        info["processes"] = jax.process_count()
    if backend == "cpu":
        info.update(cpu_info())
        info["cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        info["cores_total"] = os.cpu_count()
    else:
        info["device_kind"] = jax.local_devices()[0].device_kind
    return info


def label(info: dict[str, Any], cores: bool = True) -> str:
    """One line, e.g. 'Intel(R) Xeon(R) Processor (6/167; avx512f amx_tile), 1 of 2 cores' or
    '8× TPU v4 (tpu), 4 processes'; `cores=False` leaves out how many cores this process has."""
    if info.get("backend") == "cpu":
        extra = "; ".join(
            x for x in (info.get("cpu_family_model"), " ".join(info.get("cpu_flags", []))) if x
        )
        text = info.get("cpu", "CPU") + (f" ({extra})" if extra else "")
        if cores and info.get("cores") and info.get("cores_total"):
            text += f", {info['cores']} of {info['cores_total']} cores"
        elif info.get("cores_total"):
            text += f", {info['cores_total']} cores"
    else:
        text = f"{info.get('devices', 1)}× {info.get('device_kind', '?')} ({info.get('backend')})"
    if info.get("processes", 1) > 1:
        text += f", {info['processes']} processes"
    return text
