"""Choosing what a plan trains: --methods, seed-by-seed waves, sweeps that grow between calls."""

import json

import pytest
from train_helpers import tiny_config

from fbl_jax.defaults import ConfigError
from fbl_jax.reproduce.execute import stage_done
from fbl_jax.reproduce.plan import build_plan, select_methods
from fbl_jax.train.programs import claim_workdir, expand, group_programs
from fbl_jax.train.runs import seed_waves


def test_methods_keep_the_named_rows_only():
    stages = build_plan("paper", ["cifar10_lt"], ["2"], 3, {})
    chosen = select_methods(stages, ["ce", "fbl"])
    assert [s.name for s in chosen] == ["cifar10_lt_if100_table2", "cifar10_lt_if50_table2"]
    for stage in chosen:
        assert dict(stage.sets) == {"seed": [0, 1, 2], "loss.name": ["ce", "fbl"]}
        assert sorted(stage.rows.values()) == ["ce", "fbl"]
    # the untouched plan keeps its four Table 2 losses
    assert dict(stages[0].sets)["loss.name"] == ["ce", "fbl", "la", "balanced_softmax"]
    only_ldam = select_methods(stages, ["ldam_drw"])
    assert [s.name for s in only_ldam] == ["cifar10_lt_if100_table2_ldam_drw",
                                           "cifar10_lt_if50_table2_ldam_drw"]  # fmt: skip
    with pytest.raises(ConfigError, match="--methods: cee not in the plan; choose from ce, fbl"):
        select_methods(stages, ["cee"])


def test_sequential_sweeps_train_seed_by_seed_and_vmapped_ones_whole():
    sets = [("seed", [0, 1, 2]), ("loss.name", ["ce", "fbl"])]
    programs = group_programs(expand(tiny_config(sweep_run_axis="sequential"), sets))
    waves = seed_waves(programs)
    assert [seed for _, seed in waves] == [0, 1, 2]
    assert [[r.name for r in p.runs] for p, _ in waves][0] == [
        "seed=0,loss.name=ce",
        "seed=0,loss.name=fbl",
    ]
    programs = group_programs(expand(tiny_config(sweep_run_axis="vmap"), sets))
    assert [(len(p.runs), seed) for p, seed in seed_waves(programs)] == [(6, None)]


def test_a_sweep_claimed_again_may_grow_only_when_extending(tmp_path):
    def spec(*names):
        return {"sets": [], "runs": [{"name": n, "settings": {}} for n in names]}

    claim_workdir(tmp_path, spec("a"))
    with pytest.raises(ConfigError, match="holds another sweep"):
        claim_workdir(tmp_path, spec("a", "b"))
    claim_workdir(tmp_path, spec("a", "b"), extend=True)
    claim_workdir(tmp_path, spec("b"), extend=True)  # a subset: nothing to add
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["name"] for r in saved["runs"]] == ["a", "b"]


def test_a_stage_done_with_fewer_methods_is_not_done_with_more(tmp_path):
    stages = build_plan("paper", ["cifar10_lt"], ["2"], 1, {})
    table2 = stages[0]
    two = select_methods([table2], ["ce", "fbl"])[0]
    state = {table2.name: {"status": "done"}}
    for name in ("seed=0,loss.name=ce", "seed=0,loss.name=fbl"):
        run = tmp_path / "runs" / table2.name / name
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"type": "final", "step": 1}) + "\n")
    assert stage_done(two, tmp_path, state)
    assert not stage_done(table2, tmp_path, state)  # la and balanced_softmax still to train


def test_the_estimate_follows_the_stage_layout(tmp_path, monkeypatch):
    """Three seeds of two runs with one process per core on two cores: three waves, each of
    one run per process at once: a compile, a run's steps and its 56 evaluations."""
    import fbl_jax.reproduce.probe as probe

    measured = {"compile_s": 40.0, "step_s_1": 0.3, "step_s_4": 1.2, "eval_s_per_image": 0.001}
    monkeypatch.setattr(probe, "probe", lambda config, path, processes: measured)
    monkeypatch.setattr(probe.os, "sched_getaffinity", lambda pid: {0, 1})
    stage = select_methods(build_plan("paper", ["cifar10_lt"], ["2"], 3, {}), ["ce", "fbl"])[0]
    config = stage.config()
    assert probe.eval_passes(config) == 15 + 41  # epochs 10, 20, ..., 150 and 160, ..., 200
    assert probe.stage_layout(config, 6, 3) == (3, 2, 2)
    steps, images = 200 * 193, 10_900
    seconds = probe.estimate_stage(config, 6, 3, 2, steps, images, tmp_path)
    wave = 40.0 + steps * 0.3 + 56 * images * 0.001  # one run per process, both at once
    assert seconds == pytest.approx(3 * wave)


def test_an_out_resumed_on_another_machine_is_probed_again(tmp_path, monkeypatch):
    import fbl_jax.reproduce.probe as probe

    calls = []
    monkeypatch.setattr(probe, "_measure", lambda config, runs: calls.append(1) or
                        {"compile_s": 1.0, "step_s": 0.5, "eval_s_per_image": 0.0})  # fmt: skip
    config = tiny_config()
    cpu = {"backend": "cpu", "devices": 1, "cpu": "CPU A", "cores": 2, "cores_total": 2}
    monkeypatch.setattr(probe.host, "describe", lambda: cpu)
    first = probe.probe(config, tmp_path / "probe.json", 1)
    assert probe.probe(config, tmp_path / "probe.json", 1) == first and len(calls) == 1
    monkeypatch.setattr(probe.host, "describe", lambda: {**cpu, "cpu": "CPU B"})
    probe.probe(config, tmp_path / "probe.json", 1)
    assert len(calls) == 2  # another CPU: measured again, both kept
    assert len(json.loads((tmp_path / "probe.json").read_text())) == 2


def test_per_class_beside_the_papers_table_5(tmp_path):
    """Two seeds of CE and one of FBL finished at IF 100: per class, the paper's Table 5 row
    and our mean over the seeds, in the paper's class order."""
    from fbl_jax.reproduce import compare
    from fbl_jax.reproduce.execute import stage_runs

    stage = select_methods(build_plan("paper", ["cifar10_lt"], ["2"], 2, {}), ["ce", "fbl"])[0]
    acc = {("ce", 0): [0.5] * 10, ("ce", 1): [0.7] * 9 + [0.1], ("fbl", 0): [0.25] * 10}
    for _, settings, run_dir in stage_runs(stage, tmp_path):
        key = (settings["loss.name"], settings["seed"])
        if key in acc:  # FBL's seed 1 unfinished
            run_dir.mkdir(parents=True)
            final = {"type": "final", "last": {"per_class_accuracy": acc[key], "top1": 0.5}}
            (run_dir / "metrics.jsonl").write_text(json.dumps(final) + "\n")
    (table,) = compare.collect_per_class([stage], lambda s: stage_runs(s, tmp_path))
    assert table["n"] == {"ce": 2, "fbl": 1}
    assert table["ours"]["ce"] == pytest.approx([60.0] * 9 + [30.0])
    assert table["ours"]["fbl"] == pytest.approx([25.0] * 10)
    assert table["paper"]["fbl"][:2] == [88.1, 94.7]  # Table 5, FBL, IF 100: airplane, automobile
    path = compare.write([], tmp_path / "report", per_class=[table])
    text = path.read_text()
    assert "| airplane | 91.0 | 60.0 | 88.1 | 25.0 |" in text
    assert "| truck | 44.6 | 30.0 | 81.9 | 25.0 |" in text
