"""A persistent XLA compilation cache for the entry points, on by default.

A restart after preemption, the next seed of a sweep or a rerun of the same config then loads
its compiled programs instead of compiling them again (a ResNet train step takes tens of
seconds to compile on a CPU, minutes for large models). Where the cache lives:
FBL_JAX_COMPILATION_CACHE=DIR, else JAX's own JAX_COMPILATION_CACHE_DIR, else
~/.cache/fbl_jax/xla. FBL_JAX_COMPILATION_CACHE=0 turns it off.
"""

from __future__ import annotations

import os
import pathlib

DEFAULT_DIR = pathlib.Path("~/.cache/fbl_jax/xla")


def cache_dir() -> pathlib.Path | None:
    """The directory the entry points use, or None when the cache is off."""
    setting = os.environ.get("FBL_JAX_COMPILATION_CACHE", "")
    if setting == "0":
        return None
    path = setting or os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(DEFAULT_DIR)
    return pathlib.Path(path).expanduser()


def enable() -> pathlib.Path | None:
    """Point JAX at the cache directory (before the first compilation)."""
    import jax

    path = cache_dir()
    if path is None:
        return None
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Cache every program, not only those that took a second (JAX's default): a run also
    # compiles small programs (initialisation, optimizer set-up) that a restart would otherwise
    # compile again; part of the start-up gain in BENCHMARKS.md's tiny-run table.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
