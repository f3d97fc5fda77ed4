"""Test set-up: JAX on the CPU with 4 forced host devices, so pmap code always runs sharded."""

import os

# XLA compiles the tests' tiny programs faster with LLVM at -O1 and without the new fusion
# emitters (the suite 4:01 -> 3:01 on a 2-core AVX-512 EPYC, BENCHMARKS.md); the entry points keep
# XLA's defaults, which train ResNet-32 faster. On some CPUs the two round differently, so every
# subprocess a test compares with gets these flags too (train_helpers.subprocess_env and
# benchmarks/kill_campaign.py pass them on).
TEST_COMPILE_FLAGS = "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + f" {TEST_COMPILE_FLAGS} --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# malloc's huge pages as the console scripts set them (fbl_jax/hugepages.py): in the environment
# already, so an entry point run in this process does not start it again, and the commands the
# tests start run with the setting users get.
from fbl_jax import hugepages  # noqa: E402

os.environ.update(hugepages.with_tunable(os.environ))
from fbl_jax.cli.cpu_flags import apply_fast_cpu_flags  # noqa: E402

apply_fast_cpu_flags()  # as the entry points do; subprocesses inherit XLA_FLAGS
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import pathlib  # noqa: E402

# Test folders on a memory file system where the machine has one (and TMPDIR does not say
# otherwise): extracting the lossless CIFAR-10 copy's 60,000 files took 24 s on a 2-core VM's disk
# and 0.8 s on /dev/shm (BENCHMARKS.md); checkpoints and run folders gain too. xdist's workers
# take their folders from the controller's, which this sets too.
_SHM = pathlib.Path("/dev/shm")
if "TMPDIR" not in os.environ and _SHM.is_dir() and os.access(_SHM, os.W_OK):
    import shutil
    import tempfile

    if shutil.disk_usage(_SHM).free > 8 * 2**30:
        tempfile.tempdir = str(_SHM)

# One XLA compilation cache for every test process and the runs they start: the tiny models
# compile once per suite instead of once per process. It lives in pytest's (git-ignored) cache
# folder of this checkout, not in a fixed /tmp path shared by every checkout on the machine.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "xla_compile_cache"),
)

# The oneDNN convolution kernels (model.conv=auto on the CPU) built once per checkout, likewise.
os.environ.setdefault(
    "FBL_JAX_ONEDNN_CACHE",
    str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "onednn"),
)

# Every program, however small, as the entry points cache them (fbl_jax/cli/xla_cache.py).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """../shared beside the checkout (read-only data for tests)."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} not present")
    return SHARED


# The slowest test files first, so that with `-n 2 --dist loadfile` the two workers end together
# instead of one finishing a long file alone (longest-processing-time-first scheduling). Seconds
# per file on 2 cores of an AMX Intel Xeon (CPU-8 in BENCHMARKS.md), cold XLA cache, from
# benchmarks/suite_profile.py; only the order matters, and a file not listed goes after these, in
# the usual order.
SLOW_FILES = {
    "test_sweep.py": 67,
    "test_preemption.py": 53,
    "test_report.py": 50,
    "test_bbn.py": 39,
    "test_reproduce.py": 37,
    "test_decouple.py": 25,
    "test_cli.py": 25,
    "test_train.py": 24,
    "test_benchmark.py": 22,
    "test_steps_per_call.py": 21,
    "test_stop_phases.py": 20,
    "test_models.py": 20,
    "test_logs.py": 17,
    "test_tf_pipeline.py": 16,
    "test_multiprocess.py": 15,
    "test_processes.py": 14,
    "test_checkpoint_compat.py": 11,
    "test_fbl_eval.py": 8,
    "test_losses.py": 8,
}


def pytest_collection_modifyitems(items: list) -> None:
    items.sort(key=lambda item: -SLOW_FILES.get(item.path.name, 0))  # stable: in-file order kept
