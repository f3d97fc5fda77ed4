"""The machine description and the per-stretch wall time a run keeps in timing.json."""

import json
import time
import types

import pytest

from fbl_jax import timing_file
from fbl_jax.train import host, timing

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 167
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: Something Else
"""


def test_cpu_info_reads_the_first_processor_of_cpuinfo():
    assert host.cpu_info(CPUINFO) == {
        "cpu": "Intel(R) Xeon(R) Processor",
        "cpu_flags": ["avx2", "avx512f", "avx512_bf16", "amx_tile"],
        "cpu_family_model": "6/167",
    }
    amd = "model name\t: AMD EPYC\ncpu family\t: 23\nmodel\t: 49\nflags\t: sse avx avx2\n"
    assert host.cpu_info(amd)["cpu_flags"] == ["avx2"]


def test_labels_of_a_cpu_and_an_accelerator():
    cpu = {"backend": "cpu", "devices": 1, "cpu": "AMD EPYC", "cpu_family_model": "26/2",
           "cpu_flags": ["avx2", "avx512f"], "cores": 1, "cores_total": 2}  # fmt: skip
    assert host.label(cpu) == "AMD EPYC (26/2; avx2 avx512f), 1 of 2 cores"
    assert host.label(cpu, cores=False) == "AMD EPYC (26/2; avx2 avx512f), 2 cores"
    tpu = {"backend": "tpu", "devices": 4, "device_kind": "TPU v4", "processes": 8}
    assert host.label(tpu) == "4× TPU v4 (tpu), 8 processes"


def test_describe_on_this_machine_counts_the_cores_this_process_may_use():
    info = host.describe()
    assert info["backend"] == "cpu"  # the tests' backend
    assert info["cores"] == len(__import__("os").sched_getaffinity(0))


def _clock(tmp_path, monkeypatch, seconds, cpu=(0.0, 0.0), **kw):
    """A WallClock whose phases took `seconds` and whose process used CPU from cpu[0] to
    cpu[1] (process_time at its start and at every write)."""
    machine = {"backend": "cpu", "cpu": "CPU-X", "cores": 1, "cores_total": 4}
    monkeypatch.setattr(timing.host, "describe", lambda: machine)
    cpu_clock = iter([cpu[0], *[cpu[1]] * 10])
    fake = types.SimpleNamespace(
        perf_counter=time.perf_counter, process_time=lambda: next(cpu_clock)
    )
    monkeypatch.setattr(timing, "time", fake)
    clock = timing.WallClock(tmp_path / "sweep", "timing_program0.json", **kw)
    for phase, s in seconds.items():
        clock.add(phase, s)
    return clock


def test_stretches_accumulate_over_processes_in_the_program_and_run_files(tmp_path, monkeypatch):
    runs = [tmp_path / "sweep" / "a", tmp_path / "sweep" / "b"]
    for d in runs:
        d.mkdir(parents=True)
    first = _clock(tmp_path, monkeypatch, {"train": 10.0, "eval": 2.0}, cpu=(3.0, 14.5),
                   run_dirs=runs, first_step=0, total_steps=100, batch_size=64)  # fmt: skip
    first.write(40)  # a checkpoint at step 40 ...
    first.write(40, "stopped")  # ... then a stop: the same stretch, not a second one
    second = _clock(tmp_path, monkeypatch, {"train": 30.0, "compile": 5.0}, run_dirs=runs,
                    first_step=40, total_steps=100, batch_size=64)  # fmt: skip
    second.write(100, "finished")
    files = [tmp_path / "sweep" / "timing_program0.json"] + [d / "timing.json" for d in runs]
    for path in files:
        record = json.loads(path.read_text())
        assert record["total"] == {"compile": 5.0, "train": 40.0, "eval": 2.0, "checkpoint": 0.0}
        got = [(s["first_step"], s["last_step"], s["status"], s["images_per_s"], s["host"])
               for s in record["stretches"]]  # fmt: skip
        assert got == [(0, 40, "stopped", 40 * 64 / 10.0, "CPU-X, 1 of 4 cores"),
                       (40, 100, "finished", 60 * 64 / 30.0, "CPU-X, 1 of 4 cores")]  # fmt: skip
        assert [(s["cores"], s["cores_total"]) for s in record["stretches"]] == [(1, 4)] * 2
        assert record["stretches"][0]["runs_in_process"] == ["a", "b"]
        assert [s["cpu_s"] for s in record["stretches"]] == [11.5, 0.0]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_file_from_before_stretches_counts_as_one_unrecorded_stretch(tmp_path, monkeypatch):
    (tmp_path / "sweep").mkdir()
    old = {"this_process": {"train": 7.0}, "total": {"train": 7.0, "eval": 1.0}}
    (tmp_path / "sweep" / "timing_program0.json").write_text(json.dumps(old))
    _clock(tmp_path, monkeypatch, {"train": 3.0}, first_step=50).write(60, "finished")
    stretches = timing_file.read_stretches(tmp_path / "sweep" / "timing_program0.json")
    assert [s["host"] for s in stretches] == [None, "CPU-X, 1 of 4 cores"]
    assert stretches[0]["seconds"] == {"train": 7.0, "eval": 1.0}


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_an_unreadable_timing_file_starts_afresh(tmp_path, monkeypatch, text):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "timing_program0.json").write_text(text)
    _clock(tmp_path, monkeypatch, {"train": 3.0}).write(10)
    record = json.loads((tmp_path / "sweep" / "timing_program0.json").read_text())
    assert record["total"]["train"] == 3.0 and len(record["stretches"]) == 1


def test_the_eta_follows_the_recent_pace_and_forgets_a_pause(tmp_path, monkeypatch, caplog):
    """Hand values: 100 steps every 10 s, then a 1,000 s pause, then 100 steps every 20 s."""
    import logging
    import types

    from fbl_jax.train import writers

    times = [10.0 * i for i in range(5)] + [
        1040.0 + 20.0 * i for i in range(writers.ETA_WINDOW + 1)
    ]
    clock = iter(times)
    monkeypatch.setattr(writers, "time", types.SimpleNamespace(time=lambda: next(clock)))
    writer = writers.MetricWriter(tmp_path, enabled=False, total_steps=100_000)
    record = {"epoch": 0.0, "loss": 1.0, "train_top1": 0.5, "lr": 0.1, "alpha": 0.0}
    etas = []
    with caplog.at_level(logging.INFO, logger="fbl_jax"):
        for i in range(len(times)):
            writer.train_line({**record, "step": 100 * (i + 1)})
            etas.append(caplog.records[-1].getMessage().rsplit("ETA ", 1)[1])
    assert etas[0] == "?"  # one point: no pace yet
    assert etas[1] == "2:46:20"  # 10 s / 100 steps × 99,800 steps = 9,980 s
    # right after the pause the window still holds it: 1,040 s over 500 steps, × 99,400 steps
    assert etas[5] == "57:25:52"
    # 20 lines on, the window starts after the pause: 400 s over 2,000 steps, × 97,400 steps
    assert len(etas) == 26 and etas[-1] == "5:24:40"


def test_compile_time_excludes_the_steps_queued_before_a_first_call():
    """A new compiled call first used behind slow dispatched work (as the epoch's last
    one-step call sits behind the log interval's scanned steps): its compile time must not
    include that work, which is training time."""
    import functools
    import time as _time

    import jax
    import jax.numpy as jnp

    from fbl_jax.train import runners

    def work(s, d):  # about a second of matrix products on one core
        x = jnp.full((256, 256), 1e-3) * (1 + s[0])
        x = jax.lax.fori_loop(0, 3000, lambda i, x: jnp.tanh(x @ x), x)
        return s + x[0, :4], {"loss": s.sum()}

    pmap = functools.partial(jax.pmap, devices=jax.local_devices()[:1])  # as the runner calls
    multi, one = pmap(work), pmap(lambda s, d: (s * 2, {"loss": s.sum()}))
    state, data = jnp.zeros((1, 4)), jnp.zeros((1,))
    jax.block_until_ready(multi(state, data))  # compiled
    t0 = _time.perf_counter()
    jax.block_until_ready(multi(state, data))
    work_s = _time.perf_counter() - t0
    runner = object.__new__(runners.ProgramRunner)
    group = runners._Group([0], False, state, data, {"multi": multi, "one": one})
    runner.groups, runner.k, runner.device_pipeline = [group], 4, True
    runner._warm, runner._host = {multi}, {}
    runner.advance(0, 4, [True])  # dispatched: it runs in the background
    _, done, compile_s = runner.advance(4, 1, [True])  # the one-step call's first use
    assert done == 1 and compile_s is not None
    assert compile_s < 0.5 * work_s, (compile_s, work_s)
