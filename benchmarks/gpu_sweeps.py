"""Issues 10 and 11 on a lent GPU: sweep benchmarks, then the paper's tables as fbl-sweep runs.

    bash benchmarks/gpu_sweeps.sh $OUT 570              # on the device machine (see its header)
    python benchmarks/gpu_sweeps.py --plan tiny --out /tmp/o --data .data/c10lt --budget-s 900

Stages run in priority order, each only while the budget left covers its estimate, each under
a hard deadline: at the deadline it gets SIGTERM (fbl-train and fbl-sweep write a checkpoint
and exit 143), so a later call with the same --out resumes it. Every stage's stdout/stderr goes
to OUT/<stage>.log; run directories (without checkpoints) come back as OUT/runs.tar.gz.

Plan `gpu100` (a second call, carrying .data/c100lt instead: pack_lt_split.py --config
configs/cifar100_lt.py) runs CIFAR-100-LT's Table 2 at IF 100 and 50 and LDAM-DRW.

Stages (plan `gpu`): the sweep call's throughput for 1/4/16/64 runs in fp32 and bf16; one
200-epoch CIFAR-10-LT IF 100 fbl-train run (its timing.json splits compile/train/eval/
checkpoint); Table 2 at IF 100 as one 6-method x 3-seed sweep (+ LDAM-DRW, its own program:
cosine head); Table 4's curricula and the A ablation x 3 seeds; Table 2 at IF 50; BBN x 3 seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tarfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SEEDS = "seed=0,1,2"
METHODS = "loss.name=ce,fbl,la,balanced_softmax"
PAPER_FORM = ["--config.loss.fbl_form=paper", "--config.loss.fbl_scale=1.0"]
PAPER_FORM += ["--config.loss.curriculum=parabolic", "--config.loss.alpha_per_epoch=False"]


def data_flags(data: str, imbalance: int) -> list[str]:
    d = pathlib.Path(data)
    return [
        "--config.data.source=split_list",
        f"--config.data.root={d}",
        f"--config.data.train_list={d / f'if{imbalance}_train.txt'}",
        f"--config.data.val_list={d / f'if{imbalance}_minival.txt'}",
        f"--config.data.test_list={d / 'test.txt'}",
        "--config.data.list_is_subset=True",
        "--config.data.train_pool=False",
        f"--config.data.imbalance_factor={imbalance}",
    ]


def sweep(
    out: pathlib.Path,
    name: str,
    data: list[str],
    sets: list[str],
    extra=(),
    config: str = "configs/cifar10_lt.py",
) -> list[str]:
    cmd = [sys.executable, "-m", "fbl_jax.cli.sweep", f"--config={config}"]
    cmd += [f"--workdir={out / 'runs' / name}", *data, *extra]
    return cmd + [f"--set={s}" for s in sets]


def plan(kind: str, out: pathlib.Path, data_dir: str) -> list[tuple[str, list[str], float]]:
    """(stage name, command, estimated seconds)."""
    py = sys.executable
    if kind == "tiny":  # the same logic on demo-sized work (CPU dry run)
        demo = ["--config=configs/demo.py", "--config.num_epochs=2", "--config.model.name=resnet8"]
        demo += ["--config.loss.curriculum_offset=0.5", "--config.eval_every_epochs=1"]
        demo += ["--config.optimizer.warmup_epochs=0.5", "--config.optimizer.decay_epochs=(1,)"]
        demo += ["--config.optimizer.decay_multipliers=(0.1,)"]
        bench = [py, "benchmarks/sweep_bench.py", "--model=resnet8", "--runs=1,2"]
        bench += ["--calls=2", "--warmup=0", "--num-images=512", f"--out={out / 'bench.json'}"]
        sw = [py, "-m", "fbl_jax.cli.sweep", *demo, f"--workdir={out / 'runs' / 'tiny_sweep'}"]
        return [
            ("sweep_bench", bench, 60),
            (
                "single_run",
                [py, "-m", "fbl_jax.cli.train", *demo, f"--workdir={out / 'runs/one'}"],
                60,
            ),
            ("sweep_2x2", sw + ["--set=seed=0,1", "--set=loss.name=ce,fbl"], 90),
            (
                "until_deadline",
                [
                    py,
                    "-m",
                    "fbl_jax.cli.sweep",
                    *demo,
                    f"--workdir={out / 'runs' / 'long'}",
                    "--set=seed=5",
                    "--config.num_epochs=50",
                ],
                10**6,
            ),  # fmt: skip
        ]
    if kind == "gpu100":  # CIFAR-100-LT: its own call (its packed data is 61 MB)
        c100 = "configs/cifar100_lt.py"
        if100, if50 = data_flags(data_dir, 100), data_flags(data_dir, 50)
        return [
            (
                "c100_table2_if100",
                sweep(out, "c100_if100_t2", if100, [SEEDS, METHODS], (), c100),
                200,
            ),
            ("c100_table2_if50", sweep(out, "c100_if50_t2", if50, [SEEDS, METHODS], (), c100), 200),
            (
                "c100_if100_ldam",
                sweep(
                    out,
                    "c100_if100_ldam",
                    if100,
                    [SEEDS, "loss.name=ldam_drw"],
                    ["--config.model.head=cosine"],
                    c100,
                ),
                120,
            ),  # fmt: skip
        ]
    bench = [py, "benchmarks/sweep_bench.py", "--runs=1,4,16,64", "--dtypes=fp32,bf16"]
    bench += ["--calls=5", f"--out={out / 'sweep_bench.json'}"]
    if100, if50 = data_flags(data_dir, 100), data_flags(data_dir, 50)
    one = [py, "-m", "fbl_jax.cli.train", "--config=configs/cifar10_lt.py", *if100]
    one += [f"--workdir={out / 'runs' / 'c10_if100_fbl_single'}"]
    return [
        ("sweep_bench", bench, 120),
        ("single_run_200ep", one, 90),
        ("table2_if100", sweep(out, "c10_if100_t2", if100, [SEEDS, METHODS]), 150),
        ("table2_if100_paper_form", sweep(out, "c10_if100_t2p", if100, [SEEDS], PAPER_FORM), 90),
        (
            "table2_if100_ldam",
            sweep(
                out,
                "c10_if100_ldam",
                if100,
                [SEEDS, "loss.name=ldam_drw"],
                ["--config.model.head=cosine"],
            ),
            90,
        ),  # fmt: skip
        (
            "table4_curricula",
            sweep(
                out,
                "c10_if100_t4",
                if100,
                [SEEDS, "loss.curriculum=parabolic,linear,sine,cosine,linear_decrease"],
                ["--config.loss.alpha_per_epoch=False"],
            ),
            150,
        ),  # fmt: skip
        ("a_ablation", sweep(out, "c10_if100_A", if100, [SEEDS, "loss.fbl_scale=15,30,120"]), 120),
        ("table2_if50", sweep(out, "c10_if50_t2", if50, [SEEDS, METHODS]), 150),
        (
            "bbn_if100",
            sweep(out, "c10_if100_bbn", if100, [SEEDS], config="configs/cifar10_lt_bbn.py"),
            150,
        ),
    ]


def run_stage(name: str, cmd: list[str], deadline: float, out: pathlib.Path) -> dict:
    t0 = time.time()
    with open(out / f"{name}.log", "a") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        stopped = proc.poll() is None
        if stopped:
            proc.send_signal(signal.SIGTERM)  # checkpoints, exit 143: resumable
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"stage": name, "rc": proc.returncode, "seconds": time.time() - t0, "stopped": stopped}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=".data/c10lt", help="benchmarks/pack_lt_split.py output")
    p.add_argument("--budget-s", type=float, default=540)
    p.add_argument("--plan", default="gpu", choices=("gpu", "gpu100", "tiny"))
    p.add_argument("--only", default="", help="comma-separated stage names")
    args = p.parse_args()
    t_end = time.time() + args.budget_s - 25  # leave time to pack the results
    out = pathlib.Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    done_path = out / "stages.json"
    done = json.loads(done_path.read_text()) if done_path.exists() else []
    finished = {d["stage"] for d in done if d["rc"] == 0}
    for name, cmd, estimate in plan(args.plan, out, args.data):
        if name in finished or (args.only and name not in args.only.split(",")):
            continue
        left = t_end - time.time()
        if left < min(estimate, 60):
            done.append({"stage": name, "skipped": f"{left:.0f} s left, needs ~{estimate:.0f} s"})
            continue
        result = run_stage(name, cmd, t_end, out)
        done.append(result)
        print(json.dumps(result), flush=True)
        done_path.write_text(json.dumps(done, indent=1))
    done_path.write_text(json.dumps(done, indent=1))
    runs = out / "runs"
    if runs.exists():
        with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
            for f in sorted(runs.rglob("*")):
                rel = f.relative_to(out)
                if f.is_file() and not {"checkpoints", "best"} & set(rel.parts):
                    tar.add(f, arcname=str(rel))
    os.sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
