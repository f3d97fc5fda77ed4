"""Throughput of a sweep program's train calls: R runs of one program, fp32 and bf16.

    python benchmarks/sweep_bench.py --runs 1,4,16,64 --dtypes fp32,bf16 --out results/x.json

The calls are the training loop's own (`runners.ProgramRunner`: on accelerators the runs vmapped
in one call, on the CPU each run its own call of the single-run step; FBL in the authors' form;
the on-device pipeline on synthetic uint8 CIFAR-sized images with long-tailed labels; SGD),
dispatched as the loop dispatches them: a while loop over `--loop-steps` steps per call on
accelerators, 4 unrolled steps per call on the CPU. One compiling call, `--warmup` calls, then
`--calls` timed calls each waited for; images/s is the median over the timed calls of
R x batch x steps / time. A run count that does not fit in memory is recorded as "out of memory",
not as a crash.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import platform
import statistics
import sys
import time
import types

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet32")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--runs", default="1,4,16", help="comma-separated runs per program")
    p.add_argument("--dtypes", default="fp32", help="fp32,bf16 (compute; params stay fp32)")
    p.add_argument("--num-images", type=int, default=12406, help="CIFAR-10-LT IF 100 size")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--loop-steps", type=int, default=193, help="steps per call (accelerators)")
    p.add_argument("--run-axis", default="auto", help="auto|vmap|sequential")
    p.add_argument("--steps-per-call", type=int, default=0, help="0: the trainer's choice")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from fbl_jax.cli import cpu_flags, xla_cache

    cpu_flags.apply_fast_cpu_flags()
    xla_cache.enable()
    import jax
    import numpy as np

    from fbl_jax import defaults
    from fbl_jax.cli.bench import synthetic_class_counts
    from fbl_jax.data.device_pipeline import DevicePipeline
    from fbl_jax.data.samplers import make_sampler
    from fbl_jax.train import optimizer
    from fbl_jax.train.run_setup import build_model, init_train_state
    from fbl_jax.train.runners import ProgramRunner, resolve_run_axis

    backend = jax.default_backend()
    devices = jax.local_devices()
    cfg = defaults.get_default_config()
    cfg.steps_per_call = args.steps_per_call
    cfg.model.name = args.model
    cfg.batch_size = args.batch_size
    cfg.sweep_run_axis = args.run_axis
    cfg.loss.update(name="fbl", fbl_form="authors_code", fbl_scale=60.0, curriculum="authors_code")
    k = defaults.resolve_steps_per_call(cfg, backend)
    rng = np.random.default_rng(0)
    counts = synthetic_class_counts(args.num_images, args.num_classes, 100.0)
    labels = rng.permutation(np.repeat(np.arange(args.num_classes), counts)).astype(np.int32)
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    sampler = make_sampler("instance", labels, counts)
    pipeline = DevicePipeline(
        images, labels, sampler, global_batch_size=args.batch_size, mean=cfg.data.mean,
        std=cfg.data.std, num_devices=len(devices), pad=4,
    )  # fmt: skip
    spe = pipeline.steps_per_epoch
    bundle = types.SimpleNamespace(  # what the runners read of a DataBundle
        pipeline="device", train=pipeline, class_counts=counts, steps_per_epoch=spe,
        num_classes=args.num_classes, eval_iter=None,
    )  # fmt: skip
    lr = optimizer.make_lr_schedule(cfg.optimizer, spe, cfg.num_epochs)
    steps = args.loop_steps if k == defaults.LOOP else k
    results = []
    for dtype_name in args.dtypes.split(","):
        cfg.half_precision = dtype_name == "bf16"
        model = build_model(cfg, args.num_classes)
        for runs in [int(r) for r in args.runs.split(",")]:
            run_axis = resolve_run_axis(args.run_axis, backend, runs)
            row = {"runs": runs, "dtype": dtype_name, "batch": args.batch_size, "model": args.model}
            row["run_axis"] = run_axis
            try:
                configs = [copy.deepcopy(cfg) for _ in range(runs)]
                for seed, c in enumerate(configs):
                    c.seed = seed
                states, txs = zip(*[init_train_state(c, model, (32, 32, 3), lr) for c in configs])
                runner = ProgramRunner(configs, bundle, model, txs[0], lr, list(states))
                position = {"step": 0}

                def call(runner=runner, alive=[True] * runs, position=position):
                    metrics, done, _ = runner.advance(position["step"], steps, alive)
                    jax.block_until_ready(metrics)
                    position["step"] += done
                    return metrics, done

                t0 = time.perf_counter()
                m, done = call()
                row["first_call_s"] = time.perf_counter() - t0
                for _ in range(args.warmup):
                    call()
                seconds = []
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    m, done = call()
                    seconds.append(time.perf_counter() - t0)
                med = statistics.median(seconds)
                row.update(
                    steps_per_call=done,
                    call_seconds=seconds,
                    images_per_s=runs * args.batch_size * done / med,
                    ms_per_step=1000 * med / done,
                    loss_finite=bool(all(np.isfinite(np.asarray(x["loss"])).all() for x in m)),
                )
            except Exception as err:  # XLA raises RESOURCE_EXHAUSTED as a runtime error
                if "RESOURCE_EXHAUSTED" not in str(err) and "out of memory" not in str(err):
                    raise
                row["error"] = "out of memory"
            results.append(row)
            print(json.dumps({k2: v for k2, v in row.items() if k2 != "call_seconds"}), flush=True)
    base = {r["dtype"]: r.get("images_per_s") for r in results if r["runs"] == 1}
    for r in results:
        if base.get(r["dtype"]) and r.get("images_per_s"):
            r["speedup_vs_one_run"] = r["images_per_s"] / base[r["dtype"]]
    out = {
        "backend": backend,
        "device_kind": devices[0].device_kind,
        "devices": len(devices),
        "jax": jax.__version__,
        "host": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
