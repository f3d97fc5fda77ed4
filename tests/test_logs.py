"""Quiet output: every entry point logs in one format (fbl_jax/cli/logs.py), without library
chatter (jax's TPU probe, fontTools' PDF font subsetting, absl/orbax INFO), each fact once."""

import logging
import re
import subprocess
import sys

import pytest
from train_helpers import REPO, cli_args, subprocess_env

from fbl_jax.cli import logs

LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (\[[^\]]+\] )?((WARNING|ERROR|CRITICAL): )?\S"
)
CHATTER = ("libtpu", "Unable to initialize backend", "fontTools", "subsetted", "glyph", "Glyph")


def _user_env() -> dict:
    # as on a user's CPU machine: JAX probes every backend (the TPU probe is what chatters), no
    # C++ log filter
    env = subprocess_env(1)
    env.pop("JAX_PLATFORMS", None)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def _run(args: list[str]) -> subprocess.CompletedProcess:
    out = subprocess.run(
        args, env=_user_env(), capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    return out


def _assert_lines(stderr: str) -> list[str]:
    """stderr's lines, each in the one format and none a library's chatter."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "no log lines at all"
    for line in lines:
        assert LOG_LINE.match(line), f"not in the one log format: {line!r}"
        assert not any(word in line for word in CHATTER), line
    return lines


def _assert_quiet(stderr: str) -> list[str]:
    lines = _assert_lines(stderr)
    assert sum("convolutions:" in line for line in lines) <= 1, stderr  # once a process
    return lines


def test_train_and_reproduce_log_one_format_without_chatter(tmp_path):
    train = _run(cli_args(tmp_path / "run"))
    lines = _assert_quiet(train.stderr)
    assert any("done: test top-1" in line for line in lines)
    assert train.stdout == ""
    # one stage with the report's figures (PDFs: where fontTools subsets fonts), under a budget
    reproduce = [sys.executable, "-m", "fbl_jax.reproduce.cli", "--plan", "tiny", "--tables", "2"]
    reproduce += ["--only", "digits_lt_if10_table2_paper_form", "--budget", "10m"]
    out = _run([*reproduce, "--out", str(tmp_path / "tiny")])
    lines = _assert_quiet(out.stderr)
    assert sum("convolutions:" in line for line in lines) == 1  # the probe's and the run's
    assert list((tmp_path / "tiny" / "report").glob("*.pdf"))
    assert "smoke test" in out.stdout  # the console says what the tiny plan is


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    names = ["fbl_jax", *logs.QUIET_LOGGERS]
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in names})
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_one_format_with_a_label_and_warnings_named(restore_logging, capsys):
    logs.setup_logging()
    logs.setup_logging(label="seed=0,loss.name=ce")  # a second call replaces the first
    logging.getLogger("fbl_jax").info("trained %d runs", 2)
    logging.getLogger("fbl_jax").warning("slow")
    logging.getLogger("fontTools.subset").info("glyf subsetted")
    logging.getLogger("jax._src.xla_bridge").info("Unable to initialize backend 'tpu'")
    logging.getLogger("absl").info("orbax: saved")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert all(LOG_LINE.match(line) for line in lines), lines
    assert lines[0].endswith(" [seed=0,loss.name=ce] trained 2 runs"), lines
    assert lines[1].endswith(" [seed=0,loss.name=ce] WARNING: slow"), lines
