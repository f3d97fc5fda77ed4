"""Issue 6's GPU check as one deadline-bound session (run by benchmarks/gpu_check.sh).

A lent GPU machine gives a session one command of at most 10 minutes, so this script spends a
fixed wall-clock budget in a fixed order of priority and always leaves the results behind:

1. the ResNet-32 train-step benchmark at batch 64 (alone on the GPU);
2. the paper's 200-epoch CIFAR-10-LT IF-100 protocol, FBL (authors' form) and cross-entropy,
   as two concurrent fbl-train processes;
3. the 50-epoch protocol of configs/cifar10_lt_short.py (FBL both curricula, CE, LDAM-DRW, LA,
   then second seeds), each started only while the measured aggregate training rate says that
   all started runs still finish inside the budget, keeping time for step 4;
4. the other benchmarks (ResNet-32 at batch 128 and 512, ResNet-50 at 224 px), if time is left.

Runs still going at the hard stop get SIGTERM, which makes fbl-train write a checkpoint: their
latest checkpoints come back in OUT so the runs can be resumed elsewhere. Every run directory
(metrics.jsonl, config.json, logs) comes back as OUT/runs.tar.gz; fbl-report reads them as is.

    python3 benchmarks/gpu_session.py --out $OUT --data-root /tmp/cifar10 --budget-s 560
    python3 benchmarks/gpu_session.py --plan tiny ...   # the same logic on demo-sized runs (CPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re
import signal
import subprocess
import sys
import tarfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Run:
    name: str
    config: str
    overrides: list[str]
    nominal_steps: int  # for planning before the run's own log says how many
    proc: subprocess.Popen | None = None
    total_steps: int | None = None
    step: int = 0
    rc: int | None = None
    started_at: float | None = None


@dataclasses.dataclass
class Bench:
    name: str
    argv: list[str]
    needs_s: float  # compile + run, for deciding whether it still fits


def plan(kind: str, data_root: str) -> tuple[list[Bench], list[Run], list[Run], list[Bench]]:
    """(first benchmarks, must-run trainings, optional trainings by priority, later benchmarks)."""
    if kind == "tiny":  # CPU-sized check of the scheduling logic
        demo = ["--config.model.name=resnet8", "--config.num_epochs=8"]
        demo += ["--config.optimizer.decay_epochs=(6,7)"]
        first = [Bench("r8_b32", ["--model", "resnet8", "--batch-size", "32", "--steps", "5"], 30)]
        must = [Run("full_fbl", "configs/demo.py", demo, 120)]
        optional = [
            Run("short_ce", "configs/demo.py", [*demo, "--config.loss.name=ce"], 120),
            Run("short_la", "configs/demo.py", [*demo, "--config.loss.name=la"], 120),
        ]
        later = [Bench("r8_b64", ["--model", "resnet8", "--batch-size", "64", "--steps", "5"], 30)]
        return first, must, optional, later
    data = [f"--config.data.root={data_root}", "--config.data.cache_dir=/tmp/cifar_cache"]
    full, short = "configs/cifar10_lt.py", "configs/cifar10_lt_short.py"
    spe = 12406 // 64  # CIFAR-10-LT IF 100 has 12,406 training images
    r32 = ["--model", "resnet32", "--steps", "50", "--what", "train"]
    first = [Bench("resnet32_b64", [*r32, "--batch-size", "64"], 30)]
    # the overrides that turn a config's FBL run into each method's run
    ce, ldam_drw = (
        ["--config.loss.name=ce"],
        ["--config.loss.name=ldam_drw", "--config.model.head=cosine"],
    )
    la, s1 = ["--config.loss.name=la"], ["--config.seed=1"]
    optional = [
        Run("short_fbl_authors", short, data, 50 * spe),
        Run("short_ce", short, [*data, *ce], 50 * spe),
        Run("short_fbl_scaled", short, [*data, "--config.loss.curriculum_offset=2.5"], 50 * spe),
        Run("short_ldam_drw", short, [*data, *ldam_drw], 50 * spe),
        Run("short_la", short, [*data, *la], 50 * spe),
        Run("short_fbl_authors_s1", short, [*data, *s1], 50 * spe),
        Run("short_ce_s1", short, [*data, *ce, *s1], 50 * spe),
        Run("full_ldam_drw", full, [*data, *ldam_drw], 200 * spe),
        Run("full_la", full, [*data, *la], 200 * spe),
    ]
    must = [Run("full_fbl", full, data, 200 * spe), Run("full_ce", full, [*data, *ce], 200 * spe)]
    r50 = ["--model", "resnet50", "--image-size", "224", "--num-classes", "1000"]
    later = [
        Bench("resnet32_b128", [*r32, "--batch-size", "128"], 30),
        Bench("resnet32_b512", [*r32, "--batch-size", "512"], 30),
        Bench("resnet50_b256_bf16", [*r50, "--batch-size", "256", "--steps", "20",
                                     "--half-precision"], 60),
    ]  # fmt: skip
    return first, must, optional, later


class Session:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.time()
        self.runs_dir = pathlib.Path(args.runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.out = pathlib.Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def now(self) -> float:
        return time.time() - self.t0

    def say(self, msg: str) -> None:
        print(f"[{self.now():6.1f}s] {msg}", flush=True)

    # benchmarks --------------------------------------------------------------------------------
    def bench(self, b: Bench, limit_s: float) -> None:
        cmd = [sys.executable, str(pathlib.Path(__file__)), "bench-one", "--name", b.name, "--out",
               str(self.out), "--", *b.argv]  # fmt: skip
        self.say(f"bench {b.name} (limit {limit_s:.0f}s)")
        try:
            subprocess.run(cmd, cwd=REPO, timeout=limit_s, check=False)
        except subprocess.TimeoutExpired:
            self.say(f"bench {b.name}: timed out after {limit_s:.0f}s")

    # training ----------------------------------------------------------------------------------
    def start(self, run: Run) -> None:
        workdir = self.runs_dir / run.name
        cmd = [sys.executable, "-m", "fbl_jax.cli.train", f"--config={run.config}",
               f"--workdir={workdir}", *run.overrides]  # fmt: skip
        log = open(self.runs_dir / f"{run.name}.log", "ab")  # noqa: SIM115 (lives with the proc)
        run.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        run.started_at = self.now()
        self.say(f"start {run.name}: {' '.join(cmd[2:])}")

    def poll(self, run: Run) -> None:
        if run.total_steps is None:
            log = self.runs_dir / f"{run.name}.log"
            if log.exists():
                m = re.search(r"(\d+) steps/epoch, (\d+) steps", log.read_text(errors="replace"))
                if m:
                    run.total_steps = int(m.group(2))
        metrics = self.runs_dir / run.name / "metrics.jsonl"
        if metrics.exists():
            for line in metrics.read_text().splitlines()[::-1]:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("type") in ("train", "final"):
                    run.step = int(record["step"])
                    break
        if run.proc is not None and run.rc is None and run.proc.poll() is not None:
            run.rc = run.proc.returncode
            self.say(f"{run.name} exited rc={run.rc} at step {run.step}")

    def remaining_steps(self, run: Run) -> int:
        return max(0, (run.total_steps or run.nominal_steps) - run.step)

    def train(self, must: list[Run], optional: list[Run], launch_by: float, stop_at: float) -> None:
        """Run `must`; add `optional` runs while the measured rate says all end by `launch_by`."""
        for run in must:
            self.start(run)
        started = list(must)
        history: list[tuple[float, int]] = []
        while True:
            time.sleep(self.args.poll_s)
            for run in started:
                self.poll(run)
            live = [r for r in started if r.rc is None]
            t = self.now()
            history.append((t, sum(r.step for r in started)))
            window = [(ht, hs) for ht, hs in history if ht >= t - self.args.rate_window_s]
            rate = None
            if len(window) >= 2 and window[-1][0] - window[0][0] >= self.args.rate_window_s / 2:
                done = window[-1][1] - window[0][1]
                rate = done / (window[-1][0] - window[0][0]) if done > 0 else None
            if rate and optional:
                work = sum(self.remaining_steps(r) for r in live)
                finish = t + (work + optional[0].nominal_steps) / rate + self.args.startup_s
                if finish <= launch_by:
                    self.say(
                        f"rate {rate:.1f} steps/s over {len(live)} runs; {optional[0].name} "
                        f"fits (all done by ~{finish:.0f}s <= {launch_by:.0f}s)"
                    )
                    run = optional.pop(0)
                    self.start(run)
                    started.append(run)
                    live.append(run)
            if int(t) % 30 < self.args.poll_s:
                state = ", ".join(f"{r.name} {r.step}/{r.total_steps or '?'}" for r in live)
                self.say(f"rate {rate or 0:.1f} steps/s | {state}")
            if not live:
                break
            if t >= stop_at:
                self.say(f"hard stop at {t:.0f}s: SIGTERM to {[r.name for r in live]}")
                for r in live:
                    r.proc.send_signal(signal.SIGTERM)
                deadline = time.time() + self.args.term_grace_s
                for r in live:
                    try:
                        r.proc.wait(timeout=max(0.1, deadline - time.time()))
                    except subprocess.TimeoutExpired:
                        r.proc.kill()
                        r.proc.wait()
                    self.poll(r)
                break
        self.started = started
        self.say("not started (no time): " + ", ".join(r.name for r in optional))

    # results -----------------------------------------------------------------------------------
    def package(self) -> None:
        summary = []
        with tarfile.open(self.out / "runs.tar.gz", "w:gz") as tar:
            for run in self.started:
                workdir = self.runs_dir / run.name
                finished = (workdir / "metrics.jsonl").exists() and '"type": "final"' in (
                    workdir / "metrics.jsonl"
                ).read_text()
                summary.append(
                    {
                        "run": run.name,
                        "rc": run.rc,
                        "step": run.step,
                        "total": run.total_steps,
                        "finished": finished,
                        "started_at_s": run.started_at,
                    }  # fmt: skip
                )
                tar.add(self.runs_dir / f"{run.name}.log", arcname=f"{run.name}/train.log")
                for name in ("metrics.jsonl", "config.json", "class_counts.json"):
                    if (workdir / name).exists():
                        tar.add(workdir / name, arcname=f"{run.name}/{name}")
        unfinished = [s["run"] for s in summary if not s["finished"]]
        if unfinished:  # their latest checkpoint, to resume elsewhere
            with tarfile.open(self.out / "unfinished_checkpoints.tar.gz", "w:gz") as tar:
                for name in unfinished:
                    ckpt_root = self.runs_dir / name / "checkpoints"
                    steps = sorted(
                        (p for p in ckpt_root.glob("*") if p.name.isdigit()),
                        key=lambda p: int(p.name),
                    )
                    if steps:
                        tar.add(steps[-1], arcname=f"{name}/checkpoints/{steps[-1].name}")
        (self.out / "session.json").write_text(json.dumps(summary, indent=1))
        self.say(f"packaged {len(summary)} runs; unfinished: {unfinished}")


def bench_one(argv: list[str]) -> None:
    """One benchmark in this process: its table to stdout and OUT/bench.md, JSON to bench.jsonl."""
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("rest", nargs="*")
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from fbl_jax import benchmark

    result = benchmark.main([*a.rest, "--json"])
    table = benchmark.format_table(result)
    out = pathlib.Path(a.out)
    with open(out / "bench.md", "a") as f:
        f.write(f"\n### {a.name}: fbl-bench {' '.join(a.rest)}\n\n{table}\n")
    with open(out / "bench.jsonl", "a") as f:
        f.write(json.dumps({"name": a.name, "argv": a.rest, **result}) + "\n")
    print(table, flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "bench-one":
        bench_one(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data-root", default="/tmp/cifar10")
    p.add_argument("--runs-dir", default="/tmp/runs")
    p.add_argument("--plan", default="gpu", choices=("gpu", "tiny"))
    p.add_argument("--budget-s", type=float, default=560.0, help="wall seconds for everything")
    p.add_argument("--package-s", type=float, default=15.0, help="kept for packaging")
    p.add_argument("--poll-s", type=float, default=5.0)
    p.add_argument("--rate-window-s", type=float, default=30.0)
    p.add_argument("--startup-s", type=float, default=45.0, help="a new run's decode + compile")
    p.add_argument("--term-grace-s", type=float, default=20.0)
    args = p.parse_args()
    s = Session(args)
    first, must, optional, later = plan(args.plan, args.data_root)
    for b in first:
        s.bench(b, b.needs_s * 2)
    stop_at = args.budget_s - args.package_s - args.term_grace_s
    later_s = sum(b.needs_s for b in later)
    s.train(must, optional, launch_by=stop_at - later_s, stop_at=stop_at)
    for b in later:
        left = args.budget_s - args.package_s - s.now()
        if left >= b.needs_s:
            s.bench(b, left)
        else:
            s.say(f"bench {b.name} skipped: {left:.0f}s left, needs ~{b.needs_s:.0f}s")
    s.package()


if __name__ == "__main__":
    main()
