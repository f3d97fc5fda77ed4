"""fbl-bench: table and JSON output, the median throughput, synthetic counts, argument errors.

The timed runs read a scripted clock (each timed call takes the seconds listed here), so the
throughputs they report are checked against values worked out by hand.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import types

import jax
import pytest

from fbl_jax import defaults
from fbl_jax.cli import bench

TINY = ["--model", "resnet8", "--image-size", "16", "--batch-size", "8", "--num-images", "32"]
TINY += ["--steps", "3", "--warmup", "1"]


def _run(argv: list[str], err: io.StringIO | None = None) -> tuple[dict, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err or io.StringIO()):
        out = bench.main(argv)
    return out, buf.getvalue()


# Seconds of each call fbl-bench times, in order: per measurement the compiling call, 1 warm-up
# and 3 timed calls.
TRAIN_SECONDS = [9.0, 1.0, 0.5, 2.0, 0.25]  # 4 steps x 8 images: 64, 16, 128 img/s
PIPELINE_SECONDS = [3.0, 0.5, 0.125, 0.5, 0.25]  # 8 images: 64, 16, 32 img/s
EVAL_SECONDS = [2.0, 0.25, 0.0625, 0.25, 0.125]  # 8 images: 128, 32, 64 img/s


class ScriptedClock:
    """perf_counter whose readings, taken in (start, end) pairs around each call, are apart by
    the next of `seconds`."""

    def __init__(self, seconds: list[float]) -> None:
        self.left, self.now, self.readings = list(seconds), 1000.0, 0

    def __call__(self) -> float:
        if self.readings % 2:
            self.now += self.left.pop(0)
        self.readings += 1
        return self.now


def _run_timed(argv: list[str], seconds: list[float], err: io.StringIO | None = None):
    clock = ScriptedClock(seconds)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "time", types.SimpleNamespace(perf_counter=clock))
        result = _run(argv, err)
    assert clock.left == [], "fewer timed calls than scripted"
    return result


@pytest.fixture(scope="module")
def json_run_and_stderr() -> tuple[dict, str, str]:
    tf_before = "tensorflow" in sys.modules
    err = io.StringIO()
    seconds = TRAIN_SECONDS + PIPELINE_SECONDS + EVAL_SECONDS
    out, stdout = _run_timed(TINY + ["--what", "all", "--json"], seconds, err)
    if not tf_before:  # the on-device path must not load TensorFlow
        assert "tensorflow" not in sys.modules
    return out, stdout, err.getvalue()


@pytest.fixture(scope="module")
def json_run(json_run_and_stderr) -> tuple[dict, str]:
    return json_run_and_stderr[:2]


def test_progress_goes_to_stderr_from_the_start(json_run_and_stderr):
    _, _, stderr = json_run_and_stderr
    lines = stderr.strip().splitlines()
    assert all(line.startswith("fbl-bench: ") for line in lines)
    # First, before anything compiles: what is measured, with which settings, and the cost.
    plan = lines[0]
    assert plan.startswith("fbl-bench: measuring the train, pipeline and eval steps of resnet8")
    for part in ("batch 8", "16x16 images", "10 classes", "1 warm-up and 3 timed calls"):
        assert part in plan, part
    assert "compiling call" in plan and plan.endswith("the JSON comes at the end")
    # Then for each phase: compiling, the first call's time with what is left, the result.
    phases = [line.split(": ")[1] for line in lines[1:]]
    assert phases == [p for p in phases if p.startswith(("train", "pipeline", "eval"))]
    for phase in (
        "train (device feed, 4 steps a call)",
        "pipeline (device feed)",
        "eval (batch 8)",
    ):
        mine = [line for line in lines if line.startswith(f"fbl-bench: {phase}: ")]
        assert len(mine) == 3, phase
        assert mine[0].endswith("compiling (the first call) ...")
        assert "(compiling); 1 warm-up + 3 timed calls of ~" in mine[1] and "more" in mine[1]
        assert mine[2].endswith("img/s (median of 3 calls)")
    train = [line for line in lines if line.startswith("fbl-bench: train ")]
    # the scripted times: 9 s compiling, then the first timed call 0.5 s with 2 calls left
    assert train[1].endswith(
        ": first call 9.0 s (compiling); 1 warm-up + 3 timed calls of ~0.5 s: about 1.0 s more"
    )
    assert train[2].endswith(": 64.0 img/s (median of 3 calls)")


def test_durations_read_as_a_person_would_say_them():
    assert bench.fmt_duration(0.0123) == "12 ms"
    assert bench.fmt_duration(2.44) == "2.4 s"
    assert bench.fmt_duration(42.4) == "42 s"
    assert bench.fmt_duration(108) == "1 min 48 s"


@pytest.fixture(scope="module")
def table_run() -> tuple[dict, str]:
    # the CPU default of 4 steps per call: the JSON run's compiled train call, from the cache
    return _run_timed(TINY + ["--what", "train"], TRAIN_SECONDS)


def test_json_is_one_object_with_the_median_train_throughput(json_run):
    out, stdout = json_run
    parsed = json.loads(stdout)  # the whole stdout is exactly one JSON document
    assert parsed == json.loads(json.dumps(out))
    for key in ("backend", "device_kind", "model", "batch_size", "steps", "results"):
        assert key in parsed
    assert parsed["model"] == "resnet8" and parsed["batch_size"] == 8 and parsed["steps"] == 3
    assert parsed["backend"] == jax.default_backend()
    assert parsed["devices"] == jax.local_device_count() == 4
    assert [(r["what"], r["feed"]) for r in parsed["results"]] == [
        ("train", "device"),
        ("pipeline", "device"),
        ("eval", "device"),
    ]
    train = parsed["results"][0]
    # by default it measures what fbl-train runs here: CPU_STEPS_PER_CALL steps per call
    k = defaults.CPU_STEPS_PER_CALL
    assert parsed["steps_per_call"] == train["steps_per_call"] == k
    assert k == 4 and train["images_per_call"] == 32
    assert train["call_seconds"] == [0.5, 2.0, 0.25] and train["first_call_seconds"] == 9.0
    # 32 images in 0.5, 2 and 0.25 s: 64, 16 and 128 img/s; 8 images a step at 64 img/s: 125 ms
    assert parsed["train_images_per_s"] == pytest.approx(64.0, rel=1e-12)
    assert train["min_images_per_s"] == pytest.approx(16.0, rel=1e-12)
    assert train["max_images_per_s"] == pytest.approx(128.0, rel=1e-12)
    assert train["ms_per_step"] == pytest.approx(125.0, rel=1e-12)
    # the real FBL train step ran: a finite loss near log(C) for a fresh 10-class network
    assert math.isfinite(train["last_loss"]) and 0 < train["last_loss"] < 20
    pipeline, evaluation = parsed["results"][1:]
    # pipeline: 8 images in 0.125, 0.5, 0.25 s; eval: 8 in 0.0625, 0.25, 0.125 s
    assert pipeline["call_seconds"] == [0.125, 0.5, 0.25]
    for r, (median, low, high) in ((pipeline, (32, 16, 64)), (evaluation, (64, 32, 128))):
        assert r["images_per_call"] == 8 and r["steps_per_call"] == 1
        assert r["images_per_s"] == pytest.approx(median, rel=1e-12)
        assert (r["min_images_per_s"], r["max_images_per_s"]) == pytest.approx((low, high))
        assert r["ms_per_step"] == pytest.approx(1000 * 8 / median, rel=1e-12)
    assert parsed["pipeline_images_per_s"] == pytest.approx(32.0, rel=1e-12)
    assert parsed["eval_images_per_s"] == parsed["results"][2]["images_per_s"]


def test_table_has_a_header_and_one_numeric_row_per_measurement(table_run):
    out, stdout = table_run
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    assert cells[0] == list(bench.COLUMNS)
    assert set(cells[1]) == {"---"}
    rows = cells[2:]
    assert len(rows) == len(out["results"]) == 1
    row = dict(zip(cells[0], rows[0]))
    result = out["results"][0]
    assert row["model"] == "resnet8" and row["batch"] == "8" and row["image"] == "16"
    assert (
        row["devices"] == "4"
        and row["what"] == f"train x{defaults.CPU_STEPS_PER_CALL}"
        and row["feed"] == "device"
    )
    assert row["backend"] == f"{jax.default_backend()} ({jax.devices()[0].device_kind})"
    # the scripted 0.5, 2 and 0.25 s for 32 images: 64, 16, 128 img/s, 125 ms a step
    assert (row["median img/s"], row["min img/s"], row["max img/s"]) == ("64.0", "16.0", "128.0")
    assert row["ms/step"] == "125.000"
    assert result["call_seconds"] == [0.5, 2.0, 0.25]


def test_tf_pipeline_alone_reads_the_written_jpegs():
    argv = TINY + ["--what", "pipeline", "--pipeline", "tf", "--tf-images", "16"]
    out, stdout = _run_timed(argv, PIPELINE_SECONDS)
    assert "| pipeline | tf |" in stdout
    (res,) = out["results"]
    assert (res["what"], res["feed"], res["tf_files"]) == ("pipeline", "tf", 16)
    assert out["train_images_per_s"] is None
    # 8 images in the scripted 0.125, 0.5 and 0.25 s: 64, 16, 32 img/s
    assert out["pipeline_images_per_s"] == pytest.approx(32.0, rel=1e-12)


def test_summarize_from_hand_computed_timings():
    res = bench.summarize("train", "device", 5.0, [0.1, 0.2, 0.4], images_per_call=8, k=2)
    # rates 80, 40, 20 images/s; median 40 -> 4 images per step take 100 ms
    assert res["images_per_s"] == pytest.approx(40.0)
    assert res["min_images_per_s"] == pytest.approx(20.0)
    assert res["max_images_per_s"] == pytest.approx(80.0)
    assert res["ms_per_step"] == pytest.approx(100.0)
    even = bench.summarize("eval", "device", 0.0, [0.1, 0.2, 0.4, 0.8], images_per_call=8)
    assert even["images_per_s"] == pytest.approx((40.0 + 20.0) / 2)


def test_synthetic_class_counts_follow_the_exp_profile():
    n, c, imb = 10_000, 10, 100.0
    weights = [imb ** (-i / (c - 1)) for i in range(c)]
    ideal = [n * w / sum(weights) for w in weights]
    counts = bench.synthetic_class_counts(n, c, imb).tolist()
    assert sum(counts) == n
    assert counts[1:] == [math.floor(x) for x in ideal[1:]]  # the head takes the remainder
    assert counts[0] - math.floor(ideal[0]) == n - sum(math.floor(x) for x in ideal)
    # few images for many classes: every class keeps one image, the total is still exact
    small = bench.synthetic_class_counts(60, 50, 100.0).tolist()
    assert sum(small) == 60 and min(small) == 1
    assert small == sorted(small, reverse=True)
    assert bench.synthetic_class_counts(30, 3, 1.0).tolist() == [10, 10, 10]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet7"], r"unknown --model 'resnet7'.*resnet32"),
        (["--batch-size", "6"], r"--batch-size=6 does not divide over 4 devices.*multiple of 4"),
        (["--steps", "0"], r"--steps must be >= 1, got 0"),
        (["--devices", "9"], r"--devices=9.*4 local devices"),
        (["--what", "speed"], r"unknown --what 'speed'.*'train'"),
        (["--pipeline", "tf", "--steps-per-call", "4"], r"--pipeline device"),
        (["--num-classes", "100", "--num-images", "50"], r"--num-images=50"),
    ],
)
def test_bad_arguments_raise_clear_errors(argv, message):
    with pytest.raises(ValueError, match=message):
        bench.main(argv)


def test_console_script_reports_errors_with_exit_code_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["fbl-bench", "--model", "vgg16"])
    with pytest.raises(SystemExit) as exc:
        bench.run()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "fbl-bench: error: unknown --model 'vgg16'" in err and "resnet50" in err


def test_loop_mode_measures_one_epoch_per_call():
    """--steps-per-call -1 (the accelerators' default): a while loop over an epoch per call."""
    out, _ = _run(TINY + ["--what", "train", "--steps-per-call", "-1", "--json"])
    train = out["results"][0]
    steps_per_epoch = 32 // 8  # --num-images 32, --batch-size 8
    assert train["steps_per_call"] == steps_per_epoch
    assert train["images_per_call"] == 32
    assert math.isfinite(train["last_loss"])
