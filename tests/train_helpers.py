"""Shared helpers for the training-system tests: a tiny demo config, CLI arguments, readers."""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fbl_jax.cli.cpu_flags import with_host_devices
from fbl_jax.defaults import config_from_file
from fbl_jax.reproduce.plan import TINY as TINY_PLAN

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.py"
# A tiny, fast version of the demo (2 epochs of 15 steps on 16×16 digits, ResNet-8): the same
# settings as fbl-reproduce's tiny plan, one definition for both.
TINY = TINY_PLAN


def tiny_config(**extra):
    config = config_from_file(DEMO)
    for key, value in {**TINY, **extra}.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def cli_args(workdir, **extra) -> list[str]:
    args = [sys.executable, "-m", "fbl_jax.cli.train", f"--config={DEMO}", f"--workdir={workdir}"]
    for key, value in {**TINY, **extra}.items():
        if isinstance(value, tuple):
            value = "(" + ",".join(str(v) for v in value) + ",)"
        args.append(f"--config.{key}={value}")
    return args


def subprocess_env(devices: int = 4) -> dict:
    env = dict(os.environ)
    # the test process's flags (conftest.py), so that both share compiled programs
    env["XLA_FLAGS"] = with_host_devices(env.get("XLA_FLAGS", ""), devices)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def read_records(workdir) -> list[dict]:
    return [
        json.loads(line)
        for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    ]


def final_params(workdir) -> dict:
    manager = ocp.CheckpointManager(pathlib.Path(workdir) / "checkpoints")
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(None)))
    return step, jax.tree_util.tree_map(np.asarray, restored["state"]["params"])


def assert_trees_equal(a, b):
    flat_a = flax.traverse_util.flatten_dict(a)
    flat_b = flax.traverse_util.flatten_dict(b)
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=str(key))


def cpu_model_name() -> str:
    """The first 'model name' line of /proc/cpuinfo, read here without the package's code."""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    pytest.skip("no model name in /proc/cpuinfo")


# The one log format (fbl_jax/cli/logs.py), and what libraries print when nothing filters them:
# jax's TPU probe, fontTools' PDF font subsetting.
LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (\[[^\]]+\] )?((WARNING|ERROR|CRITICAL): )?\S"
)
CHATTER = ("libtpu", "Unable to initialize backend", "fontTools", "subsetted", "glyph", "Glyph")


def user_env(devices: int = 1) -> dict:
    """A subprocess's environment as on a user's CPU machine: JAX probes every backend (the TPU
    probe is what chatters) and no C++ log filter is set."""
    env = subprocess_env(devices)
    env.pop("JAX_PLATFORMS", None)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def assert_quiet_log(stderr: str) -> list[str]:
    """stderr's lines: each in the one format, none a library's chatter, the convolution
    choice said at most once (once a process)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "no log lines at all"
    for line in lines:
        assert LOG_LINE.match(line), f"not in the one log format: {line!r}"
        assert not any(word in line for word in CHATTER), line
    assert sum("convolutions:" in line for line in lines) <= 1, stderr
    return lines
