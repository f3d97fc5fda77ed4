"""fbl-bench: throughput of the real train step, the input pipelines and the eval step.

    fbl-bench --model resnet32 --batch-size 64 --steps 40 [--what train|pipeline|eval|all]
    fbl-bench --model resnet50 --image-size 224 --num-classes 1000 --batch-size 256 --json

The train step is the trainer's own (`train_steps.make_train_step` with the FBL loss and the
SGD optimiser), pmapped over local devices and fed by the on-device pipeline on synthetic uint8
images with long-tailed labels, or by tf.data host batches decoded from JPEGs written to a
temporary folder. No dataset files are needed. Each measurement makes one compiling call, then
`--warmup` calls, then `--steps` timed calls, each wrapped in `jax.block_until_ready`; the
reported throughput is the MEDIAN over the timed calls of (images per call / call time).
Progress (what is measured, each phase, how long the rest will take) goes to stderr as it
happens, so stdout holds only the table or the one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fbl_jax import defaults, losses
from fbl_jax.cli import cpu_flags, xla_cache
from fbl_jax.cli.logs import setup_logging
from fbl_jax.data.device_pipeline import DevicePipeline
from fbl_jax.data.samplers import SAMPLER_NAMES, make_sampler
from fbl_jax.models import MODEL_NAMES, get_model
from fbl_jax.models.layers import resolve_bn_impl, resolve_conv_impl
from fbl_jax.train import optimizer as optim
from fbl_jax.train import replication
from fbl_jax.train import steps as train_steps

WHATS = ("train", "pipeline", "eval", "all")
PIPELINES = ("device", "tf", "both")
COLUMNS = ("model", "batch", "image", "devices", "backend", "what", "feed")
COLUMNS += ("median img/s", "min img/s", "max img/s", "ms/step")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fbl-bench", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet32", help=f"one of {MODEL_NAMES}")
    p.add_argument("--batch-size", type=int, default=64, help="global batch over the devices")
    p.add_argument("--steps", type=int, default=40, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls after compilation")
    p.add_argument("--what", default="train", help=f"one of {WHATS}")
    p.add_argument("--pipeline", default="device", help=f"feed/pipeline: one of {PIPELINES}")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument(
        "--steps-per-call",
        type=int,
        default=0,
        help="train steps per call (scan); -1: a while loop over an epoch; 0 = what fbl-train "
        "chooses (config.steps_per_call=0: 4 on the CPU, the while loop on accelerators)",
    )
    p.add_argument("--half-precision", action="store_true", help="bfloat16 compute")
    p.add_argument(
        "--batch-norm", default="auto", help="auto|flax|fused_grad (config.model.batch_norm)"
    )
    p.add_argument("--conv", default="auto", help="auto|xla|onednn (config.model.conv)")
    p.add_argument("--loss", default="fbl", help=f"one of {losses.LOSS_NAMES}")
    p.add_argument("--fbl-form", default="authors_code", help=f"one of {losses.FBL_FORMS}")
    p.add_argument("--fbl-scale", type=float, default=60.0, help="A of the authors' code")
    p.add_argument("--num-epochs", type=int, default=200, help="run length for α(t) and the lr")
    p.add_argument("--devices", type=int, default=None, help="local devices (default: all)")
    p.add_argument("--num-images", type=int, default=2048, help="synthetic on-device train set")
    p.add_argument("--imbalance-factor", type=float, default=100.0, help="n_max / n_min")
    p.add_argument("--sampler", default="instance", help=f"one of {SAMPLER_NAMES}")
    p.add_argument("--tf-images", type=int, default=256, help="JPEGs for tf (at least a batch)")
    p.add_argument("--tf-augment", default=None, help="imagenet|cifar|none (default by size)")
    p.add_argument("--eval-batch-size", type=int, default=None, help="default: --batch-size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object, not a table")
    return p


def _choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {tuple(choices)}")


def validate_args(args: argparse.Namespace) -> list[jax.Device]:
    """Reject impossible settings before anything is compiled; returns the devices to use."""
    _choice("--model", args.model, MODEL_NAMES)
    _choice("--what", args.what, WHATS)
    _choice("--pipeline", args.pipeline, PIPELINES)
    _choice("--loss", args.loss, losses.LOSS_NAMES)
    _choice("--fbl-form", args.fbl_form, losses.FBL_FORMS)
    _choice("--sampler", args.sampler, SAMPLER_NAMES)
    for flag, value, low in (
        ("--steps", args.steps, 1),
        ("--warmup", args.warmup, 0),
        ("--batch-size", args.batch_size, 1),
        ("--steps-per-call", args.steps_per_call, defaults.LOOP),
        ("--image-size", args.image_size, 8),
        ("--num-classes", args.num_classes, 1),
        ("--num-epochs", args.num_epochs, 1),
    ):
        if value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    local = jax.local_devices()
    n = len(local) if args.devices is None else args.devices
    if not 1 <= n <= len(local):
        raise ValueError(
            f"--devices={n}: this host has {len(local)} local devices; use 1..{len(local)}"
        )
    for flag, batch in (("--batch-size", args.batch_size), ("--eval-batch-size", args.eval_batch)):
        if batch < 1 or batch % n:
            raise ValueError(
                f"{flag}={batch} does not divide over {n} devices; use a multiple of {n}, "
                f"e.g. {max(1, batch // n) * n}"
            )
    if args.num_images < max(args.batch_size, args.num_classes):
        raise ValueError(
            f"--num-images={args.num_images} must be >= the batch size ({args.batch_size}) and "
            f"the number of classes ({args.num_classes}, each class needs an image)"
        )
    if args.imbalance_factor < 1:
        raise ValueError(f"--imbalance-factor must be >= 1, got {args.imbalance_factor}")
    k = args.steps_per_call
    if (
        (k > 1 or k == defaults.LOOP)
        and args.pipeline != "device"
        and args.what in ("train", "all")
    ):
        raise ValueError("--steps-per-call > 1 scans the on-device pipeline: use --pipeline device")
    return local[:n]


def resolve_steps_per_call(args: argparse.Namespace) -> int:
    """0 means the trainer's own choice for this backend and feed (defaults.py)."""
    if args.steps_per_call:
        return args.steps_per_call
    pipeline = "device" if args.pipeline in ("device", "both") else "tf"
    config = ml_collections.ConfigDict({"steps_per_call": 0, "data": {"pipeline": pipeline}})
    # LOOP (accelerators): a while loop over an epoch of the synthetic set per call; the tf feed
    # (and that of --pipeline both) is measured one step a call, as fbl-train feeds it
    return defaults.resolve_steps_per_call(config, jax.default_backend())


def synthetic_class_counts(
    num_images: int, num_classes: int, imbalance_factor: float
) -> np.ndarray:
    """Exp long-tail counts n_i ∝ IF^(-i/(C-1)) summing to exactly `num_images`, all >= 1."""
    if num_images < num_classes:
        raise ValueError(f"num_images={num_images} < num_classes={num_classes}: a class is empty")
    i = np.arange(num_classes, dtype=np.float64)
    w = imbalance_factor ** (-i / max(num_classes - 1, 1))
    counts = np.maximum(1, np.floor(num_images * w / w.sum())).astype(np.int64)
    counts[0] += max(0, num_images - counts.sum())
    while counts.sum() > num_images:  # the ">= 1" floor overshot: trim the largest classes
        counts[np.flatnonzero(counts == counts.max())[-1]] -= 1
    return counts


def say(message: str) -> None:
    """A progress line on stderr, at once: a CPU benchmark runs for minutes before its table."""
    print(f"fbl-bench: {message}", file=sys.stderr, flush=True)


def fmt_duration(seconds: float) -> str:
    """'8 s', '1 min 48 s': how long the rest of a measurement should take."""
    if seconds < 0.1:
        return f"{1000 * max(seconds, 0):.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def time_calls(
    call: Callable[[], Any], warmup: int, steps: int, name: str | None = None
) -> tuple[float, list[float]]:
    """(first-call seconds incl. compilation, seconds of each timed call).

    With a `name`, says on stderr when it compiles, what the first call took and, from the
    third call's time (the second may still be settling), about how long the rest will take.
    """
    if name:
        say(f"{name}: compiling (the first call) ...")
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    seconds: list[float] = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        elapsed = time.perf_counter() - t0
        if i >= warmup:
            seconds.append(elapsed)
        if name and i == min(1, warmup + steps - 1):
            left = warmup + steps - 1 - i
            say(
                f"{name}: first call {fmt_duration(first)} (compiling); {warmup} warm-up + "
                f"{steps} timed calls of ~{fmt_duration(elapsed)}: about "
                f"{fmt_duration(elapsed * left)} more"
            )
    return first, seconds


def _report(name: str, res: dict[str, Any]) -> dict[str, Any]:
    say(f"{name}: {res['images_per_s']:.1f} img/s (median of {len(res['call_seconds'])} calls)")
    return res


def summarize(
    what: str, feed: str, first: float, seconds: list[float], images_per_call: int, k: int = 1
) -> dict[str, Any]:
    """Median/min/max images/s over the timed calls; ms/step at the median throughput."""
    ips = images_per_call / np.asarray(seconds, np.float64)
    median = float(np.median(ips))
    return {
        "what": what,
        "feed": feed,
        "images_per_call": images_per_call,
        "steps_per_call": k,
        "call_seconds": [float(s) for s in seconds],
        "first_call_seconds": first,
        "images_per_s": median,
        "min_images_per_s": float(ips.min()),
        "max_images_per_s": float(ips.max()),
        "ms_per_step": 1000.0 * images_per_call / k / median,
    }


def _write_jpegs(folder: pathlib.Path, images: np.ndarray) -> list[str]:
    from PIL import Image

    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(image).save(path, quality=90)
        paths.append(str(path))
    return paths


def _tf_iterator(args, cfg, images, labels, devices, folder) -> tuple[Iterator, int]:
    """A tf.data host iterator over JPEGs of the synthetic images (TensorFlow imported here)."""
    from fbl_jax.data.tf_pipeline import make_train_pipeline

    n = min(max(args.tf_images, args.batch_size), len(images))
    file_labels = labels[:n]
    paths = _write_jpegs(folder, images[:n])
    counts = np.bincount(file_labels, minlength=args.num_classes)
    augment = args.tf_augment or ("imagenet" if args.image_size >= 64 else "cifar")
    pipe = make_train_pipeline(
        paths,
        file_labels.tolist(),
        sampler=make_sampler("instance", file_labels, counts),
        global_batch_size=args.batch_size,
        process_index=0,
        process_count=1,
        local_device_count=len(devices),
        image_size=args.image_size,
        seed=args.seed,
        mean=cfg.data.mean,
        std=cfg.data.std,
        augment=augment,
        cifar_pad=cfg.data.pad,
    )
    return pipe.iterator(), n


def _feeds(args) -> list[str]:
    return ["device", "tf"] if args.pipeline == "both" else [args.pipeline]


def _measure(args, devices, stack: contextlib.ExitStack) -> list[dict[str, Any]]:
    cfg = defaults.get_default_config()
    cfg.loss.name, cfg.loss.fbl_form, cfg.loss.fbl_scale = args.loss, args.fbl_form, args.fbl_scale
    n_dev, b, k, c = len(devices), args.batch_size, args.steps_per_call, args.num_classes
    rng = np.random.default_rng(args.seed)
    counts = synthetic_class_counts(args.num_images, c, args.imbalance_factor)
    labels = rng.permutation(np.repeat(np.arange(c), counts)).astype(np.int32)
    shape = (args.image_size, args.image_size, 3)
    images = rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    sampler = make_sampler(args.sampler, labels, counts, num_epochs=args.num_epochs)
    pipeline = DevicePipeline(
        images, labels, sampler, global_batch_size=b, mean=cfg.data.mean, std=cfg.data.std,
        num_devices=n_dev, pad=cfg.data.pad, seed=args.seed,
    )  # fmt: skip
    spe = pipeline.steps_per_epoch
    head = "cosine" if losses.loss_needs_cosine_head(args.loss) else "linear"
    model = get_model(
        args.model, c, head=head, dtype=args.dtype, bn_axis_name=train_steps.AXIS,
        bn_impl=args.batch_norm, conv_impl=args.conv,
    )  # fmt: skip
    loss_fn = losses.make_loss(cfg.loss, counts, args.num_epochs)
    lr_schedule = optim.make_lr_schedule(cfg.optimizer, spe, args.num_epochs)
    variables = train_steps.init_variables(jax.random.key(args.seed, impl="rbg"), model, shape)
    tx = optim.make_optimizer(cfg.optimizer, lr_schedule, variables["params"])
    state = train_steps.create_train_state(None, model, shape, tx, variables)
    p_state = replication.replicate(state, devices=devices)
    lazy: dict[str, Any] = {}  # device-resident train set and tf iterator, made when needed

    def device_data() -> Any:
        if "data" not in lazy:
            lazy["data"] = replication.replicate(pipeline.device_data(), devices=devices)
        return lazy["data"]

    def pmap(fn, donate=False, in_axes=0):
        return jax.pmap(
            fn, axis_name=train_steps.AXIS, devices=devices, in_axes=in_axes,
            donate_argnums=(0,) if donate else (),
        )  # fmt: skip

    def device_batch(data, step):
        return pipeline.batch(data, step, jax.lax.axis_index(train_steps.AXIS))

    def host_iterator() -> Iterator:
        if "it" not in lazy:
            folder = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory()))
            lazy["it"], lazy["files"] = _tf_iterator(args, cfg, images, labels, devices, folder)
            stack.callback(lazy["it"].close)  # stop tf.data before its files are deleted
        return lazy["it"]

    whats = ("train", "pipeline", "eval") if args.what == "all" else (args.what,)
    results = []
    if "train" in whats:
        for feed in _feeds(args):
            step_fn = train_steps.make_train_step(
                model, loss_fn, tx, lr_schedule, spe, device_batch if feed == "device" else None
            )
            loop = k == defaults.LOOP and feed == "device"
            steps = spe if loop else max(k, 1) if feed == "device" else 1
            if loop:  # as fbl-train on accelerators: a while loop, here over one epoch
                fn, extra = train_steps.make_loop_steps(step_fn), (steps,)
                p_fn = jax.pmap(
                    fn, axis_name=train_steps.AXIS, devices=devices, in_axes=(0, 0, None),
                    donate_argnums=(0,),
                )  # fmt: skip
            else:
                fn = train_steps.make_multi_step(step_fn, steps) if steps > 1 else step_fn
                p_fn, extra = pmap(fn, donate=True), ()
            holder = {"state": p_state, "metrics": None}

            def call(p_fn=p_fn, feed=feed, holder=holder, extra=extra):
                data = device_data() if feed == "device" else next(host_iterator())
                holder["state"], holder["metrics"] = p_fn(holder["state"], data, *extra)
                return holder["state"], holder["metrics"]

            name = f"train ({feed} feed, {steps} step{'s' if steps > 1 else ''} a call)"
            first, seconds = time_calls(call, args.warmup, args.steps, name)
            p_state = holder["state"]
            res = _report(name, summarize("train", feed, first, seconds, b * steps, steps))
            res["last_loss"] = float(np.asarray(holder["metrics"]["loss"][0]).reshape(-1)[-1])
            results.append(res)
    if "pipeline" in whats:
        for feed in _feeds(args):
            if feed == "device":
                p_batch = pmap(device_batch, in_axes=(0, None))
                counter = iter(range(10**9))

                def call(p_batch=p_batch, counter=counter):
                    return p_batch(device_data(), np.int32(next(counter)))
            else:
                it = host_iterator()

                def call(it=it):
                    return next(it)

            name = f"pipeline ({feed} feed)"
            first, seconds = time_calls(call, args.warmup, args.steps, name)
            results.append(_report(name, summarize("pipeline", feed, first, seconds, b)))
    if "eval" in whats:
        eb = args.eval_batch
        batch = {
            "image": rng.standard_normal((n_dev, eb // n_dev, *shape), np.float32),
            "label": labels[np.arange(eb) % len(labels)].reshape(n_dev, -1),
            "mask": np.ones((n_dev, eb // n_dev), np.float32),
        }
        batch = replication.shard(batch, devices)
        p_eval = pmap(train_steps.make_eval_step(model, c))

        def call():
            return p_eval(p_state.params, p_state.batch_stats, batch)

        name = f"eval (batch {eb})"
        first, seconds = time_calls(call, args.warmup, args.steps, name)
        results.append(_report(name, summarize("eval", "device", first, seconds, eb)))
    for res in results:
        if res["feed"] == "tf":
            res["tf_files"] = lazy["files"]
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table (or one JSON object) and return the result dict."""
    args = build_parser().parse_args(argv)
    args.eval_batch = args.eval_batch_size if args.eval_batch_size is not None else args.batch_size
    devices = validate_args(args)
    args.steps_per_call = resolve_steps_per_call(args)
    args.dtype = jnp.bfloat16 if args.half_precision else jnp.float32
    args.batch_norm = resolve_bn_impl(args.batch_norm)
    args.conv = resolve_conv_impl(args.conv, args.dtype)[0]
    say(plan(args, devices))
    with contextlib.ExitStack() as stack:
        results = _measure(args, devices, stack)

    def median_of(what: str) -> float | None:
        found = [r["images_per_s"] for r in results if r["what"] == what]
        return found[0] if found else None

    out = {
        "model": args.model,
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch,
        "image_size": args.image_size,
        "num_classes": args.num_classes,
        "devices": len(devices),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "jax_version": jax.__version__,
        "steps": args.steps,
        "warmup": args.warmup,
        "steps_per_call": args.steps_per_call,
        "half_precision": args.half_precision,
        "batch_norm": args.batch_norm,
        "conv": args.conv,
        "loss": args.loss,
        "num_images": args.num_images,
        "train_images_per_s": median_of("train"),
        "pipeline_images_per_s": median_of("pipeline"),
        "eval_images_per_s": median_of("eval"),
        "results": results,
    }
    print(json.dumps(out) if args.json else format_table(out), flush=True)
    return out


def plan(args: argparse.Namespace, devices: Sequence[jax.Device]) -> str:
    """The first progress line: what will be measured and roughly how long it takes."""
    whats = ("train", "pipeline", "eval") if args.what == "all" else (args.what,)
    what = " and ".join(", ".join(whats).rsplit(", ", 1))
    feeds = " and ".join(_feeds(args))
    k = args.steps_per_call
    per_call = "an epoch" if k == defaults.LOOP else f"{max(k, 1)} step{'s' if k > 1 else ''}"
    backend = jax.default_backend()
    compile_note = "tens of seconds on a CPU" if backend == "cpu" else "seconds to a minute"
    return (
        f"measuring the {what} step{'s' if len(whats) > 1 else ''} of {args.model}, batch "
        f"{args.batch_size}, {args.image_size}x{args.image_size} images, {args.num_classes} "
        f"classes, {feeds} feed, {per_call} a train call, on {len(devices)} {backend} "
        f"device{'s' if len(devices) > 1 else ''}: each measurement is one compiling call "
        f"({compile_note}), {args.warmup} warm-up and {args.steps} timed calls; the "
        f"{'JSON' if args.json else 'table'} comes at the end"
    )


def format_table(out: dict[str, Any]) -> str:
    """A Markdown table: one row per measurement."""
    rows = [COLUMNS, tuple("---" for _ in COLUMNS)]
    backend = f"{out['backend']} ({out['device_kind']})"
    for r in out["results"]:
        what = r["what"] if r["steps_per_call"] == 1 else f"{r['what']} x{r['steps_per_call']}"
        rows.append(
            (out["model"], str(out["batch_size"] if r["what"] != "eval" else out["eval_batch_size"]),
             str(out["image_size"]), str(out["devices"]), backend, what, r["feed"],
             f"{r['images_per_s']:.1f}", f"{r['min_images_per_s']:.1f}",
             f"{r['max_images_per_s']:.1f}", f"{r['ms_per_step']:.3f}")
        )  # fmt: skip
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def run() -> None:
    from fbl_jax import hugepages

    hugepages.reexec()  # FBL_JAX_HUGEPAGES=0 measures without it
    setup_logging()
    cpu_flags.apply_fast_cpu_flags()  # FBL_JAX_FAST_CPU=0 measures without them
    xla_cache.enable()  # compile times are reported apart; the steady state is what is timed
    try:
        main(sys.argv[1:])
    except ValueError as err:
        print(f"fbl-bench: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
