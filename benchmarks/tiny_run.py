"""Wall time of one tiny training run (the tests' and fbl-reproduce's tiny settings: ResNet-8,
16x16 digits, 2 epochs of 15 steps, 4 forced host devices), in-process, with the XLA
compilation cache in CACHE_DIR. Run it twice with the same folder: cold, then warm.

    python benchmarks/tiny_run.py /tmp/tiny_cache
"""

import os
import sys
import tempfile
import time

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["JAX_COMPILATION_CACHE_DIR"] = sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny_cache"
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

from fbl_jax.cli.cpu_flags import apply_fast_cpu_flags  # noqa: E402

apply_fast_cpu_flags()

import json  # noqa: E402
import pathlib  # noqa: E402

from fbl_jax.defaults import config_from_file  # noqa: E402
from fbl_jax.reproduce.plan import TINY  # noqa: E402
from fbl_jax.train import train_and_evaluate  # noqa: E402
from fbl_jax.train.programs import set_field  # noqa: E402

config = config_from_file(pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py")
for key, value in TINY.items():
    set_field(config, key, value)
workdir = tempfile.mkdtemp()
start = time.perf_counter()
train_and_evaluate(config, workdir)
total = json.loads((pathlib.Path(workdir) / "timing.json").read_text())["total"]
parts = ", ".join(f"{k} {v:.2f} s" for k, v in total.items())
print(f"tiny run: {time.perf_counter() - start:.1f} s wall ({parts})")
