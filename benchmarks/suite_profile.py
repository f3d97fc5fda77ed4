"""Where the test suite's time goes, per test file: wall time, XLA compilations (count, seconds,
persistent-cache misses and hits), tracing and lowering, read from JAX's monitoring events.

As a pytest plugin (each xdist worker writes its own JSON), then the per-file table:

    rm -rf .pytest_cache
    PYTHONPATH=benchmarks SUITE_PROFILE_DIR=/tmp/suite_profile \
        python -m pytest -q -n 2 --dist loadfile tests -p suite_profile
    python benchmarks/suite_profile.py /tmp/suite_profile

Work done in subprocesses (the CLI tests, the kill campaign, two-process runs) counts as wall
time only.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import sys
import time

import pytest

_current = {"test": "<collection>"}
_stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def _on_duration(event: str, seconds: float, **_: object) -> None:
    stats = _stats[_current["test"]]
    if event.endswith("backend_compile_duration"):
        stats["compile_s"] += seconds
        stats["compiles"] += 1
    elif event.endswith("jaxpr_trace_duration"):
        stats["trace_s"] += seconds
    elif event.endswith("jaxpr_to_mlir_module_duration"):
        stats["lower_s"] += seconds


def _on_event(event: str, **_: object) -> None:
    if event.endswith("cache_misses"):
        _stats[_current["test"]]["misses"] += 1
    elif event.endswith("cache_hits"):
        _stats[_current["test"]]["hits"] += 1


def pytest_configure(config: object) -> None:
    from jax import monitoring

    monitoring.register_event_duration_secs_listener(_on_duration)
    monitoring.register_event_listener(_on_event)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):  # noqa: ANN001 (pytest's signature)
    _current["test"] = item.nodeid
    start = time.time()
    yield
    _stats[item.nodeid]["wall_s"] += time.time() - start


def pytest_sessionfinish(session: object) -> None:
    out = pathlib.Path(os.environ.get("SUITE_PROFILE_DIR", "/tmp/suite_profile"))
    out.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    data = {k: dict(v) for k, v in _stats.items()}
    (out / f"{worker}.json").write_text(json.dumps(data))


def table(folder: pathlib.Path) -> str:
    per_file: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in sorted(folder.glob("*.json")):
        for test, stats in json.loads(path.read_text()).items():
            per_file[test.split("::")[0]].update(stats)
    total: collections.Counter = collections.Counter()
    for stats in per_file.values():
        total.update(stats)
    cols = ("wall_s", "compile_s", "compiles", "misses", "hits", "trace_s", "lower_s")
    lines = ["| file | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    rows = sorted(per_file.items(), key=lambda kv: -kv[1]["wall_s"]) + [("all", total)]
    for name, stats in rows:
        cells = [f"{stats[c]:.1f}" if c.endswith("_s") else str(stats[c]) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/suite_profile")))
