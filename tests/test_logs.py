"""Quiet output: every entry point logs in one format (fbl_jax/cli/logs.py), without library
chatter (jax's TPU probe, fontTools' PDF font subsetting, absl/orbax INFO), each fact once."""

import logging
import subprocess
import sys

import pytest
from train_helpers import LOG_LINE, REPO, assert_quiet_log, user_env

from fbl_jax.cli import logs


def test_reproduce_logs_one_format_without_chatter(tmp_path):
    """fbl-reproduce with a stage and the report's figures (PDFs: where fontTools subsets
    fonts), under a budget. fbl-train's own lines are checked on its CLI run in
    tests/test_preemption.py."""
    reproduce = [sys.executable, "-m", "fbl_jax.reproduce.cli", "--plan", "tiny", "--tables", "2"]
    reproduce += ["--only", "digits_lt_if10_table2_paper_form", "--budget", "10m"]
    reproduce += ["--out", str(tmp_path / "tiny")]
    out = subprocess.run(
        reproduce, env=user_env(), capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    lines = assert_quiet_log(out.stderr)
    assert sum("convolutions:" in line for line in lines) == 1  # the probe's and the run's
    assert any("done: test top-1" in line for line in lines)
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
