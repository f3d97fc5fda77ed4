"""Transparent huge pages for glibc's malloc, set by the entry points before Python starts work.

XLA's CPU runtime takes each compiled call's temporary buffers (hundreds of MB for a ResNet-32
train call) from malloc, which maps them afresh: ~79,000 page faults a call of four steps, a
fixed cost of a fifth of a second under a hypervisor. With glibc's `glibc.malloc.hugetlb=1`
tunable malloc asks for 2 MB pages and the faults fall by ~85 %: +7 % train images/s for two
pinned one-thread processes on a 2-core Xeon (BENCHMARKS.md, CPU-8). The kernel serves them
where transparent huge pages are `always` or `madvise` (the usual default); elsewhere, and on
a C library that is not glibc, nothing changes.

glibc reads its tunables only when a process starts, so the console scripts start themselves
again once with the setting (`reexec`), and child processes get it in their environment
(`with_tunable`). FBL_JAX_HUGEPAGES=0 leaves the environment alone.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb=1"


def with_tunable(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with TUNABLE added to GLIBC_TUNABLES (kept as is where the user set hugetlb, or
    FBL_JAX_HUGEPAGES=0)."""
    env = dict(env)
    current = env.get("GLIBC_TUNABLES", "")
    if env.get("FBL_JAX_HUGEPAGES") == "0" or "glibc.malloc.hugetlb" in current:
        return env
    env["GLIBC_TUNABLES"] = f"{current}:{TUNABLE}" if current else TUNABLE
    return env


def reexec() -> None:
    """Start this command again with TUNABLE in its environment, once, on Linux with glibc;
    call it first thing in a console script (nothing has run yet that would run twice)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    env = with_tunable(os.environ)
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return  # set already (by us, by the user), or turned off
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
