"""fbl-reproduce: the tiny plan end to end (stages, decoupling, report beside the paper's
numbers), a budget stop resumed to the uninterrupted records, and one-line errors."""

import json

import pytest
from train_helpers import final_params, read_records

from fbl_jax.reproduce import cli, compare
from fbl_jax.reproduce.plan import build_plan

# A sweep stage, a one-run stage and a decoupling stage on the sweep's CE run: every kind of
# stage the plans are made of (the whole tiny plan: BENCHMARKS.md, about 2 minutes).
ONLY = ["table2", "table2_paper_form", "table2_ce_tau_norm"]
TABLE2 = ["ce", "fbl", "la", "balanced_softmax", "fbl_paper_form", "ce_tau_norm"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    only = ",".join(f"digits_lt_if10_{s}" for s in ONLY)
    # tables only: the report's figures are tests/test_report.py's
    args = ["--plan", "tiny", "--out", str(out), "--tables", "2", "--only", only, "--no-figures"]
    assert cli.main(args) == 0
    return out


def test_tiny_plan_trains_every_stage_and_writes_the_comparison(tiny):
    stages = json.loads((tiny / "stages.json").read_text())
    names = {s.name for s in build_plan("tiny", ["digits_lt"], ["2"], 1, {})}
    assert set(stages) == {f"digits_lt_if10_{s}" for s in ONLY} < names
    assert all(s["status"] == "done" for s in stages.values())
    rows = {e["row"]: e for e in json.loads((tiny / "report/paper_comparison.json").read_text())}
    assert sorted(rows) == sorted(TABLE2)
    for name, entry in rows.items():
        assert entry["n"] == 1 and entry["paper"] is None, name  # no paper number for digits
    ce = read_records(tiny / "runs/digits_lt_if10_table2/seed=0,loss.name=ce")[-1]
    assert rows["ce"]["mean"] == pytest.approx(100 * ce["last"]["top1"])
    assert (tiny / "report/summary.md").exists()
    text = (tiny / "report/paper_comparison.md").read_text()
    assert "| CE + τ-norm | — | 1 |" in text
    # the three selections, from the run's own records: last, best on minival, best test epoch
    evals = [r for r in read_records(tiny / "runs/digits_lt_if10_table2/seed=0,loss.name=ce")
             if r["type"] == "eval" and r["split"] == "test"]  # fmt: skip
    picks = {k: v["mean"] for k, v in rows["ce"]["selections"].items()}
    assert picks["last"] == pytest.approx(100 * evals[-1]["top1"])
    assert picks["best_test_epoch"] == pytest.approx(100 * max(r["top1"] for r in evals))
    best_step = ce["best_step"]
    assert picks["best_on_minival"] == pytest.approx(
        100 * next(r["top1"] for r in evals if r["step"] == best_step)
    )
    times = json.loads((tiny / "stages.json").read_text())
    assert all(t["estimate_s"] > 0 and t["seconds"] > 0 for t in times.values())
    assert "## Time on this machine" in text


def test_a_budget_stop_and_a_rerun_end_like_one_call(tiny, tmp_path):
    stage = "digits_lt_if10_table2_paper_form"
    args = ["--plan", "tiny", "--out", str(tmp_path), "--tables", "2", "--only", stage]
    args.append("--no-figures")
    assert cli.main([*args, "--budget", "1s"]) == 0  # SIGTERM at once: a checkpoint, a stop
    state = json.loads((tmp_path / "stages.json").read_text())
    assert state[stage]["status"] == "stopped"
    run = tmp_path / "runs" / stage / "seed=0"
    stopped_at, _ = final_params(run)
    assert 0 < stopped_at < 30
    assert cli.main(args) == 0
    assert json.loads((tmp_path / "stages.json").read_text())[stage]["status"] == "done"
    ref = tiny / "runs" / stage / "seed=0"
    strip = [{k: v for k, v in r.items() if k != "images_per_s"} for r in read_records(run)]
    assert strip == [{k: v for k, v in r.items() if k != "images_per_s"} for r in read_records(ref)]
    step, params = final_params(run)
    ref_step, ref_params = final_params(ref)
    assert step == ref_step == 30
    assert json.dumps(jax_tree_list(params)) == json.dumps(jax_tree_list(ref_params))


def jax_tree_list(tree):
    import jax

    return [x.tolist() for x in jax.tree_util.tree_leaves(tree)]


def test_paper_numbers_are_the_published_ones():
    top1 = compare.paper_numbers()["top1"]
    # every cell is checked against the paper's tables in tests/test_paper_numbers.py
    assert (top1["cifar10_lt"]["100"]["ce"], top1["cifar10_lt"]["100"]["fbl"]) == (71.07, 82.46)
    assert (top1["cifar100_lt"]["50"]["ce"], top1["cifar100_lt"]["50"]["fbl"]) == (44.20, 50.65)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--plan", "paper"], "needs --data-root"),
        (["--plan", "paper", "--data-root", "/nonexistent"], "does not exist"),
        (["--plan", "tiny", "--tables", "3"], "--tables='3'"),
        (["--plan", "tiny", "--budget", "soon"], "--budget='soon'"),
        (["--plan", "huge"], "--plan='huge'"),
    ],
)
def test_mistakes_are_one_line_with_exit_2(args, message, tmp_path, capsys):
    assert cli.main([*args, "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fbl-reproduce: error:") and message in err and "\n" not in err
