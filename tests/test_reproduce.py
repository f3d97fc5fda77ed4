"""fbl-reproduce: the tiny plan end to end (stages, decoupling, report beside the paper's
numbers), a stop mid-stage resumed to the uninterrupted records, the budget's deadline, and
one-line errors."""

import contextlib
import io
import json
import time
import types

import pytest
from train_helpers import DEMO, cpu_model_name, final_params, read_records

from fbl_jax.defaults import config_from_file
from fbl_jax.reproduce import cli, compare, execute
from fbl_jax.reproduce.notes import same_formula
from fbl_jax.reproduce.plan import build_plan
from fbl_jax.train import preemption
from fbl_jax.train.runners import ProgramRunner

# A sweep stage, a one-run stage and a decoupling stage on the sweep's CE run: every kind of
# stage the plans are made of (the whole tiny plan: BENCHMARKS.md, about 2 minutes).
ONLY = ["table2", "table2_paper_form", "table2_ce_tau_norm"]
TABLE2 = ["ce", "fbl", "la", "balanced_softmax", "fbl_paper_form", "ce_tau_norm"]


@pytest.fixture(scope="module")
def tiny_call(tmp_path_factory):
    """(OUT, what the call printed) of the tiny plan's Table 2 stages."""
    out = tmp_path_factory.mktemp("tiny")
    only = ",".join(f"digits_lt_if10_{s}" for s in ONLY)
    # tables only: the report's figures are tests/test_report.py's
    args = ["--plan", "tiny", "--out", str(out), "--tables", "2", "--only", only, "--no-figures"]
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        assert cli.main(args) == 0
    return out, console.getvalue()


@pytest.fixture(scope="module")
def tiny(tiny_call):
    return tiny_call[0]


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
    for t in times.values():  # one call: one stretch, on this machine
        (stretch,) = t["stretches"]
        assert stretch["seconds"] == pytest.approx(t["seconds"], abs=0.1)
        assert stretch["host"] == t["estimate_host"] and cpu_model_name() in stretch["host"]
    rows = {line.split(" | ")[0][2:]: line for line in text.split("## Time")[1].splitlines()
            if line.startswith("| digits_lt")}  # fmt: skip
    assert " | 100.0 % | " in rows["digits_lt_if10_table2"]  # every step of both runs saved
    assert " | done | — | " in rows["digits_lt_if10_table2_ce_tau_norm"]  # no steps to count


def test_time_table_by_machine_and_pace_from_hand_values(tmp_path):
    times = {"s": {"status": "stopped", "seconds": 7200.0, "progress": 0.25,
                   "estimate_s": 36000.0, "estimate_host": "M2", "cpu_floor_s": 30000.0,
                   "stretches": [{"host": "M1", "seconds": 3000.0},
                                 {"host": "M2", "seconds": 3600.0},
                                 {"host": "M1", "seconds": 600.0}]},
             "gpu": {"status": "done", "seconds": 300.0, "progress": 1.0, "cpu_floor_s": None,
                     "stretches": [{"host": "G", "seconds": 300.0}]}}  # fmt: skip
    text = compare.write([], tmp_path, times).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| s |"))
    assert row == ("| s | stopped | 25.0 % | 10.00 h (M2) | 2.00 h | 8.00 h | 8.33 h | "
                   "M1: 1.00 h (2); M2: 1.00 h (1) |")  # fmt: skip
    row = next(line for line in text.splitlines() if line.startswith("| gpu |"))
    assert row == "| gpu | done | 100.0 % | — | 300 s | 300 s | — | G: 300 s (1) |"


def test_the_cpu_floor_from_hand_values(tmp_path):
    """CPU seconds per step over the stretches that say them, ÷ the machine's cores, × the
    stage's steps: a process's seconds shared by its runs, an accelerator's stretch and one
    without CPU seconds left out, the cores of an older stretch read from its machine's line."""
    stage = next(s for s in build_plan("tiny", ["digits_lt"], ["2"], 1, {})
                 if s.name == "digits_lt_if10_table2")  # fmt: skip
    runs = [d for _, _, d in execute.stage_runs(stage, tmp_path)]
    assert len(runs) >= 3 and execute.stage_cpu_floor(stage, tmp_path) is None  # nothing yet
    for d in runs[:3]:
        d.mkdir(parents=True)
    base = {"total_steps": 30, "seconds": {}}
    (runs[0] / "timing.json").write_text(json.dumps({"total": {}, "stretches": [
        {**base, "first_step": 0, "last_step": 10, "cpu_s": 40.0, "cores_total": 2},
        {**base, "first_step": 10, "last_step": 20, "cpu_s": 60.0, "host": "CPU-Y, 1 of 4 cores"},
        {**base, "first_step": 20, "last_step": 25},  # before CPU seconds were recorded
        {**base, "first_step": 25, "last_step": 30, "cpu_s": 500.0, "host": "1× H100 (gpu)"},
    ]}))  # fmt: skip
    (runs[1] / "timing.json").write_text(json.dumps({"total": {}, "stretches": [
        {**base, "first_step": 0, "last_step": 10, "cpu_s": 90.0, "cores_total": 2,
         "runs_in_process": ["a", "b", "c"]}]}))  # fmt: skip
    (runs[2] / "timing.json").write_text(json.dumps({"total": {"train": 9.0}}))  # no stretches
    machine_s = 40.0 / 2 + 60.0 / 4 + 90.0 / 3 / 2  # 50 machine-seconds for 30 steps
    want = machine_s / 30 * 30 * len(runs)
    assert execute.stage_cpu_floor(stage, tmp_path) == pytest.approx(want)


def test_stage_progress_counts_saved_steps_over_all_runs(tmp_path):
    stage = next(s for s in build_plan("tiny", ["digits_lt"], ["2"], 1, {})
                 if s.name == "digits_lt_if10_table2")  # fmt: skip
    runs = execute.stage_runs(stage, tmp_path)
    assert execute.stage_progress(stage, tmp_path) == 0.0  # nothing yet
    first, second = runs[0][2], runs[1][2]
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    stretch = {"first_step": 0, "total_steps": 30, "seconds": {}}
    (first / "timing.json").write_text(json.dumps({"total": {}, "stretches": [
        {**stretch, "last_step": 15}, {**stretch, "first_step": 15, "last_step": 30}]}))  # fmt: skip
    (second / "timing.json").write_text(json.dumps({"total": {}, "stretches": [
        {**stretch, "last_step": 6}]}))  # fmt: skip
    assert execute.stage_progress(stage, tmp_path) == pytest.approx((30 + 6) / (30 * len(runs)))


def test_the_tiny_report_says_what_the_tiny_plan_is(tiny_call):
    out, console = tiny_call
    text = (out / "report/paper_comparison.md").read_text()
    console = " ".join(console.split())  # the console wraps its notes
    for where in (text, console):
        for needle in ("two-epoch smoke test", "bundled digits", "mean nothing", "paper column"):
            assert needle in where, (needle, where)


def test_the_report_names_rows_that_are_one_formula(tiny_call, tiny):
    out, console = tiny_call
    text = (out / "report/paper_comparison.md").read_text()
    same = [line for line in text.splitlines() if "one formula" in line]
    assert len(same) == 1, text  # LA at τ = 1 and balanced softmax; CE and FBL are not
    assert "Logit adjustment, here LA (τ=1.0), and Balanced softmax are one formula" in same[0]
    assert "one formula" in console
    rows = {e["row"]: e for e in json.loads((out / "report/paper_comparison.json").read_text())}
    assert rows["la"]["mean"] == rows["balanced_softmax"]["mean"]  # what the note explains
    la, bs = (
        tiny / f"runs/digits_lt_if10_table2/seed=0,loss.name={n}"
        for n in ("la", "balanced_softmax")
    )
    assert final_params(la)[1].keys() == final_params(bs)[1].keys()
    assert jax_tree_list(final_params(la)[1]) == jax_tree_list(final_params(bs)[1])


def test_one_formula_is_decided_by_the_loss_coefficients_not_by_names():
    base = json.loads(config_from_file(DEMO).to_json())

    def config(lr=0.1, seed=0, **loss):
        c = json.loads(json.dumps(base))
        c["loss"].update(loss)
        c["optimizer"]["learning_rate"], c["seed"] = lr, seed
        return c

    tail = [100, 30, 10, 3]
    la, bs = config(name="la", la_tau=1.0), config(name="balanced_softmax")
    assert same_formula(la, bs, tail)
    assert same_formula(la, config(name="balanced_softmax", seed=1), tail)  # seeds aside
    assert not same_formula(config(name="la", la_tau=2.0), bs, tail)
    assert not same_formula(la, config(name="balanced_softmax", lr=0.2), tail)
    assert not same_formula(config(name="ce"), config(name="fbl"), tail)
    assert not same_formula(config(name="ce"), la, tail)


STOP_AT = 7  # mid log interval (every 5 steps) and mid epoch (15 steps)


def test_a_stop_mid_stage_and_a_rerun_end_like_one_call(tiny, tmp_path, monkeypatch):
    """The stop the budget's deadline makes (preemption.request_stop), here once the stage has
    trained STOP_AT steps: the stage is 'stopped' with a checkpoint at that step, and the same
    command again ends with the uninterrupted stage's records and parameters."""
    stage = "digits_lt_if10_table2_paper_form"
    args = ["--plan", "tiny", "--out", str(tmp_path), "--tables", "2", "--only", stage]
    args.append("--no-figures")
    advance = ProgramRunner.advance

    def advance_then_stop(self, step, n, alive):
        out = advance(self, step, n, alive)
        if step + out[1] == STOP_AT:
            preemption.request_stop()
        return out

    monkeypatch.setattr(ProgramRunner, "advance", advance_then_stop)
    monkeypatch.setattr(cli, "_describe", lambda stages, out: {})  # its probe steps a runner too
    assert cli.main(args) == 0
    monkeypatch.undo()
    state = json.loads((tmp_path / "stages.json").read_text())
    assert state[stage]["status"] == "stopped"
    run = tmp_path / "runs" / stage / "seed=0"
    stopped_at, _ = final_params(run)
    assert stopped_at == STOP_AT
    (plan_stage,) = [s for s in build_plan("tiny", ["digits_lt"], ["2"], 1, {}) if s.name == stage]
    assert execute.stage_progress(plan_stage, tmp_path) == pytest.approx(STOP_AT / 30)
    # an export now keeps no run, and its report (written from what it kept) has no row
    results = tmp_path.parent / f"{tmp_path.name}_results"
    assert cli.main(["export", "--out", str(tmp_path), "--to", str(results), "--no-figures"]) == 0
    (row,) = json.loads((results / "report/paper_comparison.json").read_text())
    assert row["n"] == 0 and not (results / "runs" / stage / "seed=0").exists()
    stale = tmp_path / "report" / "per_class_FBL_seed_0_unfinished.csv"  # as an earlier call's
    stale.write_text("class,top1\n")
    assert cli.main(args) == 0
    state = json.loads((tmp_path / "stages.json").read_text())[stage]
    assert state["status"] == "done"
    # the report is the finished run's alone: no file of the stopped call's outlives it
    assert not stale.exists() and (tmp_path / "report" / "paper_comparison.md").is_file()
    assert not (tmp_path / "report.new").exists()
    assert [s["status"] for s in state["stretches"]] == ["stopped", "done"]
    stretches = json.loads((run / "timing.json").read_text())["stretches"]
    assert [(s["first_step"], s["last_step"], s["status"]) for s in stretches] == [
        (0, STOP_AT, "stopped"), (STOP_AT, 30, "finished")]  # fmt: skip
    ref = tiny / "runs" / stage / "seed=0"
    strip = [{k: v for k, v in r.items() if k != "images_per_s"} for r in read_records(run)]
    assert strip == [{k: v for k, v in r.items() if k != "images_per_s"} for r in read_records(ref)]
    step, params = final_params(run)
    ref_step, ref_params = final_params(ref)
    assert step == ref_step == 30
    assert json.dumps(jax_tree_list(params)) == json.dumps(jax_tree_list(ref_params))


def test_export_keeps_finished_runs_without_checkpoints_and_report_rebuilds(tiny, tmp_path):
    from fbl_jax import report

    dest = tmp_path / "results"
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        assert cli.main(["export", "--out", str(tiny), "--to", str(dest), "--no-figures"]) == 0
    finished = sorted(  # every run with a final record, found here without the package
        str(d.relative_to(tiny)) for d in (tiny / "runs").glob("*/*")
        if d.is_dir() and '"type": "final"' in (d / "metrics.jsonl").read_text()
    )  # fmt: skip
    kept = sorted(str(d.relative_to(dest)) for d in (dest / "runs").glob("*/*") if d.is_dir())
    assert kept == finished and len(kept) == 6
    assert not [p for p in dest.rglob("*") if p.name in ("checkpoints", "best")]
    assert (tiny / finished[0] / "checkpoints").is_dir()  # the source keeps its own
    for run in finished:
        assert (dest / run / "metrics.jsonl").read_bytes() == (
            tiny / run / "metrics.jsonl"
        ).read_bytes()
        trained = "tau_norm" not in run
        assert (dest / run / "final_params.npz").is_file() == trained, run
    assert (dest / "stages.json").is_file()
    # the report written from the exported runs: every run finished, so the same as OUT's
    report_md = "report/paper_comparison.md"
    assert (dest / report_md).read_text() == (tiny / report_md).read_text()
    assert "exported 6 finished run(s)" in console.getvalue()
    # the tables again, from the copy: the same as from the training folder
    stage = "runs/digits_lt_if10_table2"
    for src, out in ((tiny, tmp_path / "a"), (dest, tmp_path / "b")):
        assert report.main([str(src / stage), "--out", str(out), "--no-figures"]) == 0
    assert (tmp_path / "a/summary.md").read_text() == (tmp_path / "b/summary.md").read_text()


def test_export_names_unfinished_runs_and_refuses_a_folder_inside_out(tmp_path, capsys):
    for name, lines in (("a", ['{"type": "train"}', '{"type": "final"}']), ("b", ["{}"])):
        run = tmp_path / "out/runs/stage" / name
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        (run / "config.json").write_text("{}")
    out = str(tmp_path / "out")
    assert cli.main(["export", "--out", out, "--to", str(tmp_path / "res")]) == 0
    printed = capsys.readouterr().out
    assert "not finished yet (left out; export again later): stage/b" in printed
    assert "kept without a model (final_params.npz" in printed and "stage/a" in printed
    assert [p.name for p in (tmp_path / "res/runs/stage").iterdir()] == ["a"]
    assert cli.main(["export", "--out", out, "--to", f"{out}/kept"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fbl-reproduce export: error: --to") and err.count("\n") == 1


def test_the_budget_is_a_deadline_that_requests_the_stop(tmp_path, monkeypatch):
    """--budget 15m: run_stages gets now + 900 s (a fixed clock here); a deadline already past
    requests the stop, one not reached by the end of the stage or none (no budget) does not."""
    got = {}

    def run_stages(stages, out, deadline, *estimates):
        got["deadline"] = deadline
        return {}

    monkeypatch.setattr(execute, "run_stages", run_stages)
    monkeypatch.setattr(cli, "_describe", lambda stages, out: {})  # its timing probe: 10 s
    monkeypatch.setattr(cli, "time", types.SimpleNamespace(time=lambda: 1000.0))
    stage = "digits_lt_if10_table2_paper_form"
    base = ["--plan", "tiny", "--out", str(tmp_path), "--only", stage, "--no-figures"]
    assert cli.main([*base, "--budget", "15m"]) == 0
    assert got["deadline"] == 1900.0
    assert cli.main(base) == 0
    assert got["deadline"] == float("inf")
    with preemption.stop_scope() as stop:
        with execute._Deadline(time.time() - 1.0):
            assert stop.wait(60.0)  # at once: the deadline has passed
    with preemption.stop_scope() as stop:
        with execute._Deadline(time.time() + 3600.0) as deadline:
            pass
        assert not stop.is_set() and not deadline.thread.is_alive()
        with execute._Deadline(float("inf")) as deadline:
            assert deadline.thread.ident is None  # no budget: no timer at all
        assert not stop.is_set()


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
