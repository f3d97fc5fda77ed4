"""Entry points as a new user meets them: --help helps, a typo is one line and exit 2."""

import subprocess
import sys

import pytest
from train_helpers import DEMO, REPO, subprocess_env


def _run(*args, module="fbl_jax.cli.train"):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=subprocess_env(1),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def _assert_one_line_error(out, prog, *needles):
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, out.stderr
    assert lines[0].startswith(f"{prog}: error: "), lines
    for needle in needles:
        assert needle in out.stderr, (needle, out.stderr)


def test_train_help_lists_flags_overrides_and_configs():
    out = _run("--help")
    assert out.returncode == 0, out.stderr
    for needle in ("--workdir", "--config", "--config.FIELD=VALUE", "cifar10_lt.py", "demo.py"):
        assert needle in out.stdout, needle
    assert "Try --helpfull" not in out.stdout


def test_decouple_help_lists_its_flags():
    out = _run("--help", module="fbl_jax.cli.decouple")
    assert out.returncode == 0, out.stderr
    for needle in ("--method", "--from", "--workdir", "tau_norm", "--config.crt.epochs=5"):
        assert needle in out.stdout, needle


def test_eval_help_and_mistakes(tmp_path):
    out = _run("--help", module="fbl_jax.cli.evaluate")
    assert out.returncode == 0, out.stderr
    for needle in ("--from", "--checkpoint", "--data_root", "--weights", "--out", "ckpt.pth.tar"):
        assert needle in out.stdout, needle
    args = [f"--config={DEMO}", "--weights=w.npz", "--config.loss.nmae=ce"]
    out = _run(*args, module="fbl_jax.cli.evaluate")
    _assert_one_line_error(out, "fbl-eval", "'loss.nmae'", "did you mean name")
    out = _run(f"--config={DEMO}", module="fbl_jax.cli.evaluate")
    _assert_one_line_error(out, "fbl-eval", "--config needs --weights=FILE")


def test_data_that_does_not_fit_the_config_is_one_line(tmp_path):
    """The digits have 10 classes; a config that says 7 (say, a CIFAR-100 config pointed at
    the CIFAR-10 folder) is bad input, not a crash."""
    workdir = tmp_path / "run"
    out = _run(f"--config={DEMO}", f"--workdir={workdir}", "--config.data.num_classes=7")
    _assert_one_line_error(out, "fbl-train", "data.num_classes=7", "set data.num_classes=10")
    assert not workdir.exists()


@pytest.mark.parametrize(
    "override, needles",
    [
        ("--config.loss.nmae=ce", ("'loss.nmae'", "did you mean name")),
        ("--config.loss.name=nonsense", ("config.loss.name='nonsense'", "fbl", "ldam_drw")),
        ("--config.num_epochs=abc", ("num_epochs",)),
        ("--config.model.name=resnet_32", ("config.model.name", "resnet32", "did you mean")),
        ("--config.loss.cb_beta=1.5", ("config.loss:", "beta", "[0, 1)")),
    ],
)
def test_train_config_mistakes_are_one_line_and_leave_no_workdir(tmp_path, override, needles):
    workdir = tmp_path / "run"
    out = _run(f"--config={DEMO}", f"--workdir={workdir}", override)
    _assert_one_line_error(out, "fbl-train", *needles)
    assert not workdir.exists()


@pytest.mark.parametrize(
    "module, form",
    [
        ("train", "--config={}"),
        ("train", "--config {}"),  # absl's other form
        ("train", "--config={}:arg"),  # a config argument
        ("sweep", "--config={}"),
        ("decouple", "--config={}"),  # one with a default config file
    ],
)
def test_a_missing_config_file_is_one_line_naming_the_configs(tmp_path, module, form):
    workdir = tmp_path / "run"
    config = form.format("configs/nonexistent.py").split()
    out = _run(*config, f"--workdir={workdir}", module=f"fbl_jax.cli.{module}")
    _assert_one_line_error(
        out, f"fbl-{module}", "configs/nonexistent.py", "no such config file", "demo.py",
        "cifar10_lt.py", "decouple.py",
    )  # fmt: skip
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not workdir.exists()


def test_a_mistyped_config_file_suggests_the_close_one(tmp_path):
    out = _run("--config=configs/dmeo.py", f"--workdir={tmp_path / 'run'}", "--config.seed=1")
    _assert_one_line_error(out, "fbl-train", "did you mean configs/demo.py?")
    assert not (tmp_path / "run").exists()


def test_train_missing_data_root_names_the_field(tmp_path):
    workdir = tmp_path / "run"
    out = _run(f"--config={REPO / 'configs' / 'cifar10_lt.py'}", f"--workdir={workdir}")
    _assert_one_line_error(out, "fbl-train", "config.data.root", "--config.data.root=DIR")
    assert not workdir.exists()
    missing = tmp_path / "nowhere"
    out = _run(
        f"--config={REPO / 'configs' / 'cifar10_lt.py'}",
        f"--workdir={workdir}",
        f"--config.data.root={missing}",
    )
    _assert_one_line_error(out, "fbl-train", str(missing), "not a directory")
    assert not workdir.exists()


def test_decouple_mistakes_are_one_line(tmp_path):
    out = _run(f"--workdir={tmp_path / 'd'}", "--config.crt.epoch=3", module="fbl_jax.cli.decouple")
    _assert_one_line_error(out, "fbl-decouple", "'crt.epoch'", "did you mean epochs")
    out = _run(
        f"--workdir={tmp_path / 'd'}",
        f"--from={tmp_path / 'missing'}",
        "--method=tau_norm",
        module="fbl_jax.cli.decouple",
    )
    _assert_one_line_error(out, "fbl-decouple", "does not exist")
    assert not (tmp_path / "d").exists()


def test_bench_mistake_is_one_line():
    out = _run("--model", "resnet33", module="fbl_jax.cli.bench")
    _assert_one_line_error(out, "fbl-bench", "--model", "resnet32")


def test_sweep_help_and_mistakes(tmp_path):
    out = _run("--help", module="fbl_jax.cli.sweep")
    assert out.returncode == 0, out.stderr
    for needle in ("--set", "--workdir", "KEY=V1,V2"):
        assert needle in out.stdout, needle
    base = [f"--config={DEMO}", f"--workdir={tmp_path / 'w'}"]
    out = _run(*base, "--set=loss.nmae=ce,fbl", module="fbl_jax.cli.sweep")
    _assert_one_line_error(out, "fbl-sweep", "'loss.nmae'", "did you mean name")
    out = _run(*base, "--set=seed", module="fbl_jax.cli.sweep")
    _assert_one_line_error(out, "fbl-sweep", "KEY=V1,V2")
    out = _run(*base, "--set=loss.name=ce,nonsense", module="fbl_jax.cli.sweep")
    _assert_one_line_error(out, "fbl-sweep", "config.loss.name='nonsense'")
    assert not (tmp_path / "w").exists()


def test_bad_numbers_are_one_line_before_any_work(tmp_path):
    workdir = tmp_path / "w"
    out = _run(f"--config={DEMO}", f"--workdir={workdir}", "--config.optimizer.learning_rate=-0.1")
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("fbl-train: error: "), lines
    for needle in ("optimizer.learning_rate=-0.1", "> 0"):
        assert needle in lines[0], lines
    assert not workdir.exists()
    out = _run(
        f"--config={DEMO}",
        f"--workdir={workdir}",
        "--set=optimizer.learning_rate=-1,0.1",
        module="fbl_jax.cli.sweep",
    )
    _assert_one_line_error(out, "fbl-sweep", "optimizer.learning_rate=-1", "> 0")
    assert not workdir.exists()


def test_subprocess_flags_keep_the_callers_and_replace_the_device_count():
    from fbl_jax.cli.cpu_flags import with_host_devices

    flags = "--xla_backend_optimization_level=1 --xla_force_host_platform_device_count=4 --x=y"
    assert with_host_devices(flags, 2) == (
        "--xla_backend_optimization_level=1 --x=y --xla_force_host_platform_device_count=2"
    )
    assert with_host_devices("", 1) == "--xla_force_host_platform_device_count=1"
