"""What a process pays before any work: importing ml_dtypes and JAX, and fbl-train's one-line
answer to a mistyped field and to an impossible value. Each in fresh processes, median of ROUNDS.

    python benchmarks/startup_times.py [ROUNDS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.py"
TRAIN = [sys.executable, "-m", "fbl_jax.cli.train", f"--config={DEMO}", "--workdir=/nonexistent/w"]
CASES = {
    "import ml_dtypes": [sys.executable, "-c", "import ml_dtypes"],
    "import jax": [sys.executable, "-c", "import jax"],
    "fbl-train, a mistyped field": [*TRAIN, "--config.loss.nmae=ce"],
    "fbl-train, an impossible value": [*TRAIN, "--config.optimizer.learning_rate=-0.1"],
}


def seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, cwd=REPO, check=False)
    return time.perf_counter() - start


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("ml_dtypes", "numpy", "jax"))
    print(f"{versions}; median of {rounds} fresh processes")
    print("| what | seconds |\n|---|---|")
    base = seconds([sys.executable, "-c", "pass"])
    for name, argv in CASES.items():
        times = [seconds(argv) for _ in range(rounds)]
        print(f"| {name} | {statistics.median(times):.2f} |")
    print(f"| (python -c pass) | {base:.2f} |")


if __name__ == "__main__":
    main()
