"""A run directory written by fbl-jax 0.1.0 (tests/fixtures/run_written_by_0_1_0: the tiny demo
run stopped after its epoch-1 checkpoint, step 15 of 30) resumes with today's code and ends
where 0.1.0's uninterrupted run ended (expected_metrics.jsonl, expected_checksum.json)."""

import json
import shutil

import pytest
from train_helpers import REPO, final_params, read_records

from fbl_jax.defaults import get_default_config
from fbl_jax.train import train_and_evaluate
from fbl_jax.train.loop import parameter_checksum
from fbl_jax.train.programs import set_field

FIXTURE = REPO / "tests" / "fixtures" / "run_written_by_0_1_0"


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _config_as_written(path):
    """The run's config.json over today's defaults: what rerunning its command gives, with
    fields added since 0.1.0 at their defaults."""
    config = get_default_config()
    for key, value in _flat(json.loads(path.read_text())):
        set_field(config, key, value)
    return config


def test_a_checkpoint_written_by_0_1_0_resumes(tmp_path, caplog):
    workdir = tmp_path / "run"
    shutil.copytree(FIXTURE / "workdir", workdir)
    config = _config_as_written(workdir / "config.json")
    with caplog.at_level("INFO", logger="fbl_jax"):
        final = train_and_evaluate(config, workdir)
    assert "from step 15" in caplog.text  # resumed, not started afresh
    expected = [json.loads(line) for line in (FIXTURE / "expected_metrics.jsonl").open()]
    got = read_records(workdir)
    assert [(r["type"], r["step"], r.get("split")) for r in got] == [
        (r["type"], r["step"], r.get("split")) for r in expected
    ]
    for g, e in zip(got, expected):
        if e["step"] <= 15:
            assert g == e  # the records before the checkpoint are kept as written
        elif e["type"] == "train":
            assert g["loss"] == pytest.approx(e["loss"], rel=1e-3)
            assert g["lr"] == pytest.approx(e["lr"], rel=1e-6)
        elif e["type"] == "eval":  # other CPU kinds round differently: a few images may flip
            assert g["top1"] == pytest.approx(e["top1"], abs=0.02)
    assert final["step"] == 30 and final["last"]["num_examples"] == 539
    step, params = final_params(workdir)
    checksum = parameter_checksum(params)
    want = json.loads((FIXTURE / "expected_checksum.json").read_text())["parameter_checksum"]
    assert step == 30 and checksum == pytest.approx(want, rel=1e-4)
