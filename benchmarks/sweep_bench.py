"""Throughput of fbl-sweep's train call: R runs of one program, fp32 and bf16.

    python benchmarks/sweep_bench.py --runs 1,4,16,64 --dtypes fp32,bf16 --out results/x.json

The call is the sweep's own (`sweep.make_sweep_step`, FBL in the authors' form, the on-device
pipeline on synthetic uint8 CIFAR-sized images with long-tailed labels, SGD), pmapped over the
local devices, dispatched as the trainer dispatches it: a while loop over `--loop-steps` steps
per call on accelerators (steps_per_call=-1), 4 unrolled steps per call on the CPU. One
compiling call, `--warmup` calls, then `--calls` timed calls each wrapped in
jax.block_until_ready; images/s is the median over the timed calls of R x batch x steps / time.
A run count that does not fit in memory is recorded as "out of memory", not as a crash.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _call_body(train_steps, defaults, vstep, k: int, steps: int):
    """One dispatch as the trainer makes it: a while loop of `steps`, or k scanned steps."""
    if k == defaults.LOOP:

        def body(s, d, hh):
            return train_steps.make_loop_steps(lambda a, b: vstep(a, b, hh))(s, d, steps)

        return body
    if k == 1:  # a scan of length 1 would be a while loop, which XLA's CPU backend runs slowly
        return vstep

    def body(s, d, hh):
        return train_steps.make_multi_step(lambda a, b: vstep(a, b, hh), k)(s, d)

    return body


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
    p.add_argument("--run-axis", default="auto", help="auto|vmap|unroll (config.sweep_run_axis)")
    p.add_argument("--steps-per-call", type=int, default=0, help="0: the trainer's choice")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from fbl_jax.cli import cpu_flags, xla_cache

    cpu_flags.apply_fast_cpu_flags()
    xla_cache.enable()
    import flax
    import jax
    import jax.numpy as jnp
    import ml_collections
    import numpy as np

    from fbl_jax import defaults
    from fbl_jax.benchmark import synthetic_class_counts
    from fbl_jax.data.device_pipeline import DevicePipeline
    from fbl_jax.data.samplers import make_sampler
    from fbl_jax.losses import program as sweep_loss
    from fbl_jax.models import get_model
    from fbl_jax.models.layers import resolve_bn_impl
    from fbl_jax.train import optimizer as optim
    from fbl_jax.train import steps as train_steps
    from fbl_jax.train.sweep import make_sweep_step, resolve_run_axis

    backend = jax.default_backend()
    devices = jax.local_devices()
    cfg = defaults.get_default_config()
    cfg.steps_per_call = args.steps_per_call
    k = defaults.resolve_steps_per_call(cfg, backend)
    run_axis = resolve_run_axis(args.run_axis, backend)
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
    lr = optim.make_lr_schedule(cfg.optimizer, spe, cfg.num_epochs)
    loss_cfg = ml_collections.ConfigDict(cfg.loss.to_dict())
    loss_cfg.update(name="fbl", fbl_form="authors_code", fbl_scale=60.0, curriculum="authors_code")
    data = flax.jax_utils.replicate(pipeline.device_data())
    results = []
    for dtype_name in args.dtypes.split(","):
        dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[dtype_name]
        model = get_model(
            args.model, args.num_classes, dtype=dtype, bn_axis_name=train_steps.AXIS,
            bn_impl=resolve_bn_impl("auto"),
        )  # fmt: skip
        variables = train_steps.init_variables(jax.random.key(0, impl="rbg"), model, (32, 32, 3))
        tx = optim.make_optimizer(cfg.optimizer, lr, variables["params"])
        state = train_steps.create_train_state(None, model, (32, 32, 3), tx, variables)
        vstep = make_sweep_step(model, tx, lr, spe, pipeline, cfg.num_epochs, None, run_axis)
        for runs in [int(r) for r in args.runs.split(",")]:
            row = {"runs": runs, "dtype": dtype_name, "batch": args.batch_size, "model": args.model}
            row["run_axis"] = run_axis
            try:
                stacked = jax.tree_util.tree_map(lambda x, r=runs: np.stack([x] * r), state)
                h = sweep_loss.run_hypers(loss_cfg, counts, cfg.num_epochs)
                hs = sweep_loss.stack_hypers([{**h, "seed": np.int32(s)} for s in range(runs)])
                p_state = flax.jax_utils.replicate(stacked)
                p_h = flax.jax_utils.replicate(hs)
                steps = args.loop_steps if k == defaults.LOOP else k
                body = _call_body(train_steps, defaults, vstep, k, steps)

                fn = jax.pmap(body, axis_name=train_steps.AXIS, donate_argnums=(0,))
                t0 = time.perf_counter()
                p_state, m = fn(p_state, data, p_h)
                jax.block_until_ready(m)
                row["first_call_s"] = time.perf_counter() - t0
                for _ in range(args.warmup):
                    p_state, m = fn(p_state, data, p_h)
                    jax.block_until_ready(m)
                seconds = []
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    p_state, m = fn(p_state, data, p_h)
                    jax.block_until_ready(m)
                    seconds.append(time.perf_counter() - t0)
                med = statistics.median(seconds)
                row.update(
                    steps_per_call=steps,
                    call_seconds=seconds,
                    images_per_s=runs * args.batch_size * steps / med,
                    ms_per_step=1000 * med / steps,
                    loss_finite=bool(np.isfinite(np.asarray(m["loss"])).all()),
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
