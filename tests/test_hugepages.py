"""malloc's transparent huge pages (fbl_jax/hugepages.py): the environment the entry points
start again with, and the one pinned child processes get."""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

from fbl_jax import hugepages, pinned


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "glibc.malloc.hugetlb=1"),
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
         "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "glibc.malloc.hugetlb=0"),  # the user's
        ({"FBL_JAX_HUGEPAGES": "0"}, None),  # turned off
    ],
)  # fmt: skip
def test_with_tunable(env, expected):
    assert hugepages.with_tunable(env).get("GLIBC_TUNABLES") == expected


def test_reexec_starts_the_command_again_once_with_the_setting(monkeypatch):
    calls = []
    monkeypatch.setattr(hugepages.os, "execve", lambda *a: calls.append(a))
    monkeypatch.setattr(
        hugepages.sys, "orig_argv", ["/venv/bin/python", "/venv/bin/fbl-train", "--x=1"]
    )
    monkeypatch.setattr(hugepages.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("FBL_JAX_HUGEPAGES", raising=False)
    hugepages.reexec()
    ((exe, argv, env),) = calls
    assert exe == sys.executable and argv == [sys.executable, "/venv/bin/fbl-train", "--x=1"]
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    monkeypatch.setenv("GLIBC_TUNABLES", env["GLIBC_TUNABLES"])  # the started-again process
    hugepages.reexec()
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setattr(hugepages.platform, "libc_ver", lambda: ("", ""))  # musl, say
    hugepages.reexec()
    assert len(calls) == 1


def test_pinned_children_get_their_core_and_the_setting(tmp_path, monkeypatch):
    """A child module that reports what pinned.spawn gave it."""
    (tmp_path / "report_child.py").write_text(
        "import json, os, sys\n"
        "from fbl_jax import pinned\n"
        "spec = pinned.read_spec(sys.argv[1])\n"
        "print(json.dumps({'cpus': sorted(os.sched_getaffinity(0)),"
        " 'omp': os.environ['OMP_NUM_THREADS'], 'tunables': os.environ.get('GLIBC_TUNABLES')}))\n"
    )
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)  # as in a console script's first start
    cores = sorted(os.sched_getaffinity(0))[:1]
    with tempfile.TemporaryDirectory() as tmp:
        (child,) = pinned.spawn("report_child", [{"cpus": cores}], pathlib.Path(tmp),
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        out, _ = child.communicate(timeout=60)
    got = json.loads(out)
    assert got["cpus"] == cores and got["omp"] == "1"
    assert got["tunables"] == "glibc.malloc.hugetlb=1"
