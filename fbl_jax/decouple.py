"""Classifier re-balancing on a finished run, without training the backbone.

Four methods, each applied to one checkpoint (``best`` on minival, or ``last``) of an fbl-train
run directory, each writing a NEW run directory that fbl-report reads like any other:

- ``tau_norm`` (Kang et al. 2020): classifier columns w_j / ||w_j||^tau, bias kept.
- ``la_posthoc`` (Menon et al. 2021): logits - tau * log(prior).
- ``crt``: a re-initialised classifier trained alone on the frozen backbone (class-balanced).
- ``lws``: a learnable per-class scale s_j on the logits, everything else frozen.

tau is chosen on the minival's balanced top-1 in ONE pass over the minival for the whole grid;
cRT/LWS pick their epoch on it. The backbone always runs in eval mode (``train=False``), so
neither its weights nor its BatchNorm statistics change. For a cosine head the logits are
``loss.ldam_s * cos`` (what the run's LDAM loss saw), so tau and the LWS scales keep their scale.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from ml_collections.config_dict import placeholder

from fbl_jax import checkpointing, defaults, evaluate, losses, optim, train, train_steps
from fbl_jax.data import SAMPLER_NAMES, build_datasets
from fbl_jax.metric_writers import MetricWriter, check_finite

log = logging.getLogger("fbl_jax")

METHODS = ("tau_norm", "la_posthoc", "crt", "lws")
TAU_METHODS = ("tau_norm", "la_posthoc")
CHECKPOINTS = ("best", "last")
TAU_GRID = tuple(round(0.1 * i, 1) for i in range(21))  # 0.0, 0.1, ..., 2.0
NORM_EPS = 1e-12  # floor of a classifier column's norm in tau-normalisation


def default_config() -> ml_collections.ConfigDict:
    """Every field fbl-decouple reads; configs/decouple.py returns this."""
    c = ml_collections.ConfigDict()
    c.method = ""  # one of METHODS (or --method)
    c.from_run = ""  # the fbl-train WORKDIR (or --from)
    c.checkpoint = "best"  # "best" (on minival) or "last"
    c.seed = placeholder(int)  # None: the source run's seed (cRT head init, sampling)
    c.keep_checkpoints = 2
    for name in TAU_METHODS:
        c[name] = ml_collections.ConfigDict({"taus": TAU_GRID})
    for name in ("crt", "lws"):
        m = ml_collections.ConfigDict()
        m.epochs = 10
        m.batch_size = placeholder(int)  # None: the source run's batch_size
        m.sampler = "class_balanced"
        # Decoupling used lr 0.2 at batch 512 (ImageNet-LT); 0.1 suits CIFAR's batch 64-128.
        m.optimizer = ml_collections.ConfigDict(
            {
                "name": "sgd",
                "learning_rate": 0.1,
                "momentum": 0.9,
                "nesterov": False,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "warmup_epochs": 0.0,
                "decay_epochs": (),
                "decay_multipliers": (),
            }
        )
        c[name] = m
    c.distributed = defaults.distributed_config()
    return c


def validate_config(config: Any) -> None:
    """Unknown keys (with close matches) and impossible values raise ValueError."""
    defaults.check_keys(config, default_config(), "config")
    if config.method not in METHODS:
        raise ValueError(f"config.method={config.method!r}; choose one of {METHODS} (--method)")
    if not config.from_run:
        raise ValueError("config.from_run is empty: give the source run directory with --from")
    if config.checkpoint not in CHECKPOINTS:
        raise ValueError(f"config.checkpoint={config.checkpoint!r}; choose one of {CHECKPOINTS}")
    if config.keep_checkpoints < 1:
        raise ValueError(f"config.keep_checkpoints must be >= 1, got {config.keep_checkpoints}")
    if config.method in TAU_METHODS:
        taus = list(config[config.method].taus)
        if not taus or not all(np.isfinite(float(t)) for t in taus):
            raise ValueError(
                f"config.{config.method}.taus={taus!r} must be a non-empty list of finite numbers"
            )
    else:
        m = config[config.method]
        if m.epochs < 1:
            raise ValueError(f"config.{config.method}.epochs must be >= 1, got {m.epochs}")
        if m.batch_size is not None and m.batch_size < 1:
            raise ValueError(f"config.{config.method}.batch_size must be >= 1, got {m.batch_size}")
        if m.sampler not in SAMPLER_NAMES:
            raise ValueError(
                f"config.{config.method}.sampler={m.sampler!r}; choose one of {SAMPLER_NAMES}"
            )


def tau_normalize(kernel: Any, tau: float) -> jnp.ndarray:
    """w_j / ||w_j||^tau for each class column w_j of a (D, C) kernel; tau = 0 is the identity."""
    kernel = jnp.asarray(kernel, jnp.float32)
    norms = jnp.linalg.norm(kernel, axis=0, keepdims=True)
    return kernel / jnp.power(jnp.maximum(norms, NORM_EPS), tau)


def tau_normalized_params(params: Any, tau: float) -> Any:
    """A copy of `params` with the linear head's kernel tau-normalised (bias unchanged)."""
    head = params.get("head", {}) if hasattr(params, "get") else {}
    if "kernel" not in head or "bias" not in head:
        raise ValueError(
            "tau_norm needs a linear classifier 'head' with 'kernel' and 'bias' parameters, "
            f"found head keys {sorted(head)}"
        )
    new_head = {**head, "kernel": np.asarray(tau_normalize(head["kernel"], tau))}
    return {**params, "head": new_head}


def posthoc_bias(class_counts: Any, tau: float) -> np.ndarray:
    """The additive logit correction -tau * log(prior) of post-hoc logit adjustment."""
    counts = np.asarray(class_counts)
    zeros = np.zeros(counts.shape, np.float32)
    return np.asarray(losses.posthoc_logit_adjust(zeros, counts, tau), np.float32)


# ----------------------------------------------------------------------------- source run


@dataclasses.dataclass
class SourceRun:
    """A finished fbl-train run: its config, class counts and one checkpoint's variables."""

    path: pathlib.Path
    config: dict[str, Any]
    class_counts: np.ndarray
    class_names: list[str]
    params: Any
    batch_stats: Any
    step: int
    checkpoint: str  # "best" | "last"
    checkpoint_path: pathlib.Path


def load_source_run(run_dir: str | pathlib.Path, checkpoint: str = "best") -> SourceRun:
    """Read config.json, class_counts.json and the `best` or `last` checkpoint of a run."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint={checkpoint!r}; choose one of {CHECKPOINTS}")
    path = pathlib.Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"source run directory {path} does not exist; pass the WORKDIR of an fbl-train run"
        )
    for name in ("config.json", "class_counts.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing: {path} is not an fbl-train run")
    config = json.loads((path / "config.json").read_text())
    if config.get("decouple"):
        raise ValueError(
            f"{path} is itself a decoupled run ({config['decouple'].get('method')}); apply "
            f"decoupling to the training run it came from, {config['decouple'].get('from_run')}"
        )
    counts_file = json.loads((path / "class_counts.json").read_text())
    ckpt_root = path / ("best" if checkpoint == "best" else "checkpoints")
    hint = (
        " (a run without minival has none: use checkpoint='last')" if checkpoint == "best" else ""
    )
    if not ckpt_root.is_dir():
        raise FileNotFoundError(f"no {checkpoint!r} checkpoint: {ckpt_root} does not exist{hint}")
    options = ocp.CheckpointManagerOptions(create=False)
    manager = ocp.CheckpointManager(ckpt_root.absolute(), options=options)  # orbax: absolute
    step = manager.latest_step()
    if step is None:
        manager.close()
        raise FileNotFoundError(f"no {checkpoint!r} checkpoint in {ckpt_root}{hint}")
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(None)))
    manager.close()
    state = jax.tree_util.tree_map(np.asarray, restored["state"])
    return SourceRun(
        path=path,
        config=config,
        class_counts=np.asarray(counts_file["counts"], np.int64),
        class_names=[str(n) for n in counts_file.get("class_names", [])],
        params=state["params"],
        batch_stats=state.get("batch_stats", {}),
        step=int(step),
        checkpoint=checkpoint,
        checkpoint_path=ckpt_root / str(step),
    )


# ----------------------------------------------------------------------------- eval steps


def make_adjusted_eval_step(model: Any, num_classes: int) -> Callable:
    """`train_steps.make_eval_step` with logits * adjust['scale'] + adjust['bias'] (per class)."""
    with_confusion = num_classes <= evaluate.MAX_CONFUSION_CLASSES

    def eval_fn(params, batch_stats, batch, adjust):
        logits, out = model.apply(
            {"params": params, "batch_stats": batch_stats}, batch["image"], train=False
        )
        logits = logits * adjust["scale"] + adjust["bias"]
        stats = evaluate.eval_stats(
            logits, out["features"], batch["label"], batch["mask"], num_classes, with_confusion
        )
        return jax.lax.psum(stats, train_steps.AXIS)

    return eval_fn


def make_sweep_step(model: Any, num_classes: int, adjusted_logits: Callable) -> Callable:
    """Per-class (count, correct[tau]) for a whole tau grid in one forward pass."""

    def sweep_fn(params, batch_stats, batch, taus):
        logits, out = model.apply(
            {"params": params, "batch_stats": batch_stats}, batch["image"], train=False
        )
        onehot = jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.float32)
        onehot = onehot * batch["mask"].astype(jnp.float32)[:, None]

        def correct(tau):
            z = adjusted_logits(params, logits, out["features"], tau)
            hit = (jnp.argmax(z, -1) == batch["label"]).astype(jnp.float32)
            return (onehot * hit[:, None]).sum(0)

        stats = {"count": onehot.sum(0), "correct": jax.lax.map(correct, taus)}
        return jax.lax.psum(stats, train_steps.AXIS)

    return sweep_fn


def balanced_accuracy_per_tau(stats: dict[str, Any]) -> np.ndarray:
    """Mean per-class accuracy over the classes present, one value per tau."""
    count = np.asarray(stats["count"], np.float64)
    present = count > 0
    return (np.asarray(stats["correct"], np.float64)[:, present] / count[present]).mean(1)


# ----------------------------------------------------------------------------- cRT / LWS steps


@flax.struct.dataclass
class ClassifierState:
    step: jnp.ndarray
    trainable: Any  # {"head": ...} (cRT) or {"scale": (C,)} (LWS)
    opt_state: Any


def classifier_logits(
    model: Any, method: str, frozen: Any, trainable: Any, images: jnp.ndarray, logit_scale: float
) -> jnp.ndarray:
    """Logits of the frozen backbone (eval mode) with the trained head (cRT) or scales (LWS)."""
    params = frozen["params"]
    if method == "crt":
        params = {**params, "head": trainable["head"]}
    logits, _ = model.apply(
        {"params": params, "batch_stats": frozen["batch_stats"]}, images, train=False
    )
    logits = logits * logit_scale
    if method == "lws":
        logits = logits * trainable["scale"]
    return logits


def make_classifier_step(
    model: Any,
    method: str,
    tx: Any,
    lr_schedule: Callable,
    logit_scale: float,
    make_batch: Callable | None = None,
) -> Callable:
    """One SGD step on the classifier part only, cross-entropy; to be pmapped on AXIS."""

    def step_fn(state: ClassifierState, frozen: Any, data: Any):
        batch = make_batch(data, state.step) if make_batch is not None else data

        def compute_loss(trainable):
            logits = classifier_logits(
                model, method, frozen, trainable, batch["image"], logit_scale
            )
            return losses.cross_entropy_loss(logits, batch["label"]), logits

        (loss, logits), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.trainable)
        grads = jax.lax.pmean(grads, train_steps.AXIS)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        trainable = jax.tree_util.tree_map(jnp.add, state.trainable, updates)
        correct = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        metrics = {
            "loss": jax.lax.pmean(loss, train_steps.AXIS),
            "train_top1": jax.lax.pmean(correct, train_steps.AXIS),
            "lr": jnp.asarray(lr_schedule(state.step), jnp.float32),
        }
        return state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state), metrics

    return step_fn


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class DecoupleResult:
    """The final record and the chosen model: variables plus the per-class logit correction."""

    final: dict[str, Any]
    params: Any
    batch_stats: Any
    logit_scale: np.ndarray  # (C,) logits are multiplied by this ...
    logit_bias: np.ndarray  # ... and this is added (see make_adjusted_eval_step)
    tau: float | None


class _Context:
    """What every method shares: source run, data, model, eval steps, writer."""

    def __init__(self, config: Any, workdir: pathlib.Path) -> None:
        self.config = config
        self.method = config.method
        self.workdir = workdir
        self.src = src = load_source_run(config.from_run, config.checkpoint)
        if src.path.resolve() == workdir.resolve():
            raise ValueError(f"--workdir {workdir} is the source run itself; use a new directory")
        model_cfg = src.config["model"]
        if self.method == "tau_norm" and model_cfg["head"] != "linear":
            raise ValueError(
                f"tau_norm rescales the rows of a linear classifier; the {model_cfg['head']!r} "
                "head normalises them away. Use la_posthoc, crt or lws for this run"
            )
        self.seed = int(src.config["seed"] if config.seed is None else config.seed)
        self.trains = self.method not in TAU_METHODS
        data_cfg = dict(src.config["data"])
        batch_size = int(src.config["batch_size"])
        num_epochs = None
        if self.trains:
            m = config[self.method]
            batch_size = int(m.batch_size or batch_size)
            data_cfg.update(sampler=m.sampler, mixup_alpha=0.0)
            num_epochs = m.epochs
        train.check_devices(batch_size, f"config.{self.method}.batch_size")
        self.batch_size = batch_size
        # As the trainer: eval batches of data.eval_batch_size, else the run's batch size.
        eval_bs = data_cfg.get("eval_batch_size") or int(src.config["batch_size"])
        self.bundle = build_datasets(
            data_cfg,
            global_batch_size=batch_size,
            seed=self.seed,
            eval_batch_size=eval_bs,
            num_epochs=num_epochs,
        )
        if not np.array_equal(self.bundle.class_counts, src.class_counts):
            raise ValueError(
                f"the data rebuilt from {src.path / 'config.json'} has class counts "
                f"{self.bundle.class_counts.tolist()}, the run recorded {src.class_counts.tolist()}"
                "; the dataset changed since training"
            )
        self.num_classes = self.bundle.num_classes
        self.model = train.build_model(ml_collections.ConfigDict(src.config), self.num_classes)
        # Cosine heads give cosines; their loss saw s * cos (LDAM's s), so do the corrections.
        self.base_scale = 1.0
        if model_cfg["head"] == "cosine":
            self.base_scale = float(src.config["loss"].get("ldam_s") or 1.0)
        self.p_eval = jax.pmap(
            make_adjusted_eval_step(self.model, self.num_classes), axis_name=train_steps.AXIS
        )
        self.is_chief = jax.process_index() == 0
        self.section: dict[str, Any] = {
            "method": self.method,
            "from_run": str(src.path.resolve()),
            "checkpoint": src.checkpoint,
            "checkpoint_path": str(src.checkpoint_path.resolve()),
            "logit_scale": self.base_scale,
            "seed": config.seed,  # None: the source run's
            **config[self.method].to_dict(),
        }

    def adjust(self, scale: Any = None, bias: Any = None) -> dict[str, np.ndarray]:
        c = self.num_classes
        scale = np.ones(c, np.float32) if scale is None else np.asarray(scale, np.float32)
        bias = np.zeros(c, np.float32) if bias is None else np.asarray(bias, np.float32)
        return {"scale": scale * np.float32(self.base_scale), "bias": bias}

    def write_config(self) -> None:
        if self.is_chief:
            cfg = {**self.src.config, "decouple": self.section}
            (self.workdir / "config.json").write_text(json.dumps(cfg, indent=2, default=list))

    def evaluate_all(
        self, writer: MetricWriter, p_params: Any, p_stats: Any, adjust: dict, step: int, spe: int
    ) -> dict[str, dict]:
        """Eval records for every split, in the trainer's format, written to metrics.jsonl."""
        p_adjust = flax.jax_utils.replicate(adjust)
        records = {}
        for split in self.bundle.eval_splits:
            stats = train_steps.run_evaluation(
                self.p_eval, p_params, p_stats, self.bundle.eval_iter(split), p_adjust
            )
            record = {"type": "eval", "step": step, "epoch": step / spe, "split": split}
            record.update(evaluate.metrics_from_stats(stats, self.src.class_counts))
            writer.write(record)
            writer.eval_line(record)
            records[split] = record
        return records


def run_decouple(config: Any, workdir: str | pathlib.Path) -> DecoupleResult:
    """Apply `config.method` to `config.from_run`'s checkpoint; write a new run in `workdir`."""
    validate_config(config)
    workdir = pathlib.Path(workdir)
    if (workdir / "metrics.jsonl").exists():
        raise FileExistsError(f"{workdir} already holds a run (metrics.jsonl); use a new --workdir")
    ctx = _Context(config, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if ctx.is_chief:
        (workdir / "class_counts.json").write_text(
            json.dumps(
                {"counts": ctx.src.class_counts.tolist(), "class_names": ctx.src.class_names}
            )
        )
    ctx.write_config()
    log.info(
        "%s on %s (%s checkpoint, step %d) -> %s",
        ctx.method,
        ctx.src.path,
        ctx.src.checkpoint,
        ctx.src.step,
        workdir,
    )
    if ctx.trains:
        return _run_training(ctx)
    return _run_tau(ctx)


def _run_tau(ctx: _Context) -> DecoupleResult:
    src, bundle = ctx.src, ctx.bundle
    taus = [float(t) for t in ctx.config[ctx.method].taus]
    sweep = None
    p_params = flax.jax_utils.replicate(src.params)
    p_stats = flax.jax_utils.replicate(src.batch_stats)
    if len(taus) > 1:
        if "minival" not in bundle.eval_splits:
            raise ValueError(
                f"{src.path} has no minival split to choose tau on; give one value, e.g. "
                f"--config.{ctx.method}.taus='(1.0,)'"
            )
        if ctx.method == "tau_norm":

            def adjusted(params, logits, features, tau):
                head = params["head"]
                kernel = tau_normalize(head["kernel"], tau)
                return features.astype(jnp.float32) @ kernel + head["bias"]
        else:
            log_prior = -posthoc_bias(src.class_counts, 1.0)

            def adjusted(params, logits, features, tau):
                return logits * ctx.base_scale - tau * log_prior

        p_sweep = jax.pmap(
            make_sweep_step(ctx.model, ctx.num_classes, adjusted), axis_name=train_steps.AXIS
        )
        p_taus = flax.jax_utils.replicate(jnp.asarray(taus, jnp.float32))
        stats = train_steps.run_evaluation(
            p_sweep, p_params, p_stats, bundle.eval_iter("minival"), p_taus
        )
        balanced = balanced_accuracy_per_tau(stats)
        sweep = [{"tau": t, "minival_balanced_top1": float(b)} for t, b in zip(taus, balanced)]
        tau = taus[int(np.argmax(balanced))]  # the first of equals: grid order breaks ties
        log.info(
            "minival balanced top-1 by tau: %s",
            {t: round(float(b), 4) for t, b in zip(taus, balanced)},
        )
    else:
        tau = taus[0]
    ctx.section["tau"] = tau
    ctx.write_config()
    params, adjust = src.params, ctx.adjust()
    if ctx.method == "tau_norm":
        params = tau_normalized_params(src.params, tau)
        p_params = flax.jax_utils.replicate(params)
    else:
        adjust = ctx.adjust(bias=posthoc_bias(src.class_counts, tau))
    spe = bundle.steps_per_epoch
    writer = MetricWriter(ctx.workdir, ctx.is_chief, src.step)
    records = ctx.evaluate_all(writer, p_params, p_stats, adjust, src.step, spe)
    final = {
        "type": "final",
        "step": src.step,
        "last": records["test"],
        "best_on_minival": records["test"],
        "best_step": src.step,
        "tau": tau,
        "tau_sweep": sweep,
    }
    writer.write(final)
    writer.close()
    log.info("%s: tau %g, test top-1 %.2f", ctx.method, tau, 100 * records["test"]["top1"])
    return DecoupleResult(final, params, src.batch_stats, adjust["scale"], adjust["bias"], tau)


def _init_head(rng: jax.Array, model: Any, image_shape: tuple[int, ...]) -> Any:
    """The head as the model's own init makes it (jit keeps only the head: fast to compile)."""
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    init = jax.jit(lambda r: model.init({"params": r}, dummy, train=False)["params"]["head"])
    return jax.device_get(init(rng))


def _run_training(ctx: _Context) -> DecoupleResult:
    """cRT / LWS: train the classifier part each epoch, evaluate, keep the best on minival."""
    src, bundle, method = ctx.src, ctx.bundle, ctx.method
    m = ctx.config[method]
    spe = bundle.steps_per_epoch
    total = m.epochs * spe
    schedule = optim.make_lr_schedule(m.optimizer, spe, m.epochs)
    rng = jax.random.fold_in(jax.random.PRNGKey(ctx.seed), 0x63525421)
    if method == "crt":
        trainable = {"head": _init_head(rng, ctx.model, bundle.image_shape)}
    else:
        trainable = {"scale": jnp.ones((ctx.num_classes,), jnp.float32)}
    tx = optim.make_optimizer(m.optimizer, schedule, trainable)
    state = ClassifierState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))
    make_batch, data = None, None
    if bundle.pipeline == "device":
        pipeline = bundle.train

        def make_batch(d, step):
            return pipeline.batch(d, step, jax.lax.axis_index(train_steps.AXIS))

        data = flax.jax_utils.replicate(pipeline.device_data())
    else:
        host_iter = bundle.train.iterator(start_step=0)
    step_fn = make_classifier_step(ctx.model, method, tx, schedule, ctx.base_scale, make_batch)
    p_step = jax.pmap(step_fn, axis_name=train_steps.AXIS, donate_argnums=(0,))
    p_frozen = flax.jax_utils.replicate({"params": src.params, "batch_stats": src.batch_stats})
    p_state = flax.jax_utils.replicate(state)

    writer = MetricWriter(ctx.workdir, ctx.is_chief, total)
    ckpts = checkpointing.Checkpoints(ctx.workdir, ctx.config.keep_checkpoints)
    meta_base = {"method": method, "from_run": ctx.section["from_run"]}
    meta_base["source_checkpoint"] = ctx.section["checkpoint_path"]
    best: dict[str, Any] = {"minival": None, "step": None, "test": None, "trained": None}
    last_test, last_trained = None, None
    for epoch in range(1, m.epochs + 1):
        t0, pending = time.time(), []
        for _ in range(spe):
            p_state, metrics = p_step(
                p_state, p_frozen, data if data is not None else next(host_iter)
            )
            pending.append(metrics)
        fetched = jax.device_get(pending)
        step = epoch * spe
        loss = float(np.mean([f["loss"][0] for f in fetched]))
        check_finite("loss", loss, step)
        writer.write(
            {
                "type": "train",
                "step": step,
                "epoch": float(epoch),
                "loss": loss,
                "train_top1": float(np.mean([f["train_top1"][0] for f in fetched])),
                "lr": float(fetched[-1]["lr"][0]),
                "alpha": 0.0,
                "images_per_s": spe * ctx.batch_size / (time.time() - t0),
            }
        )
        trained = jax.device_get(flax.jax_utils.unreplicate(p_state.trainable))
        if method == "crt":
            p_params = {**p_frozen["params"], "head": flax.jax_utils.replicate(trained["head"])}
            adjust = ctx.adjust()
        else:
            p_params, adjust = p_frozen["params"], ctx.adjust(scale=trained["scale"])
        records = ctx.evaluate_all(writer, p_params, p_frozen["batch_stats"], adjust, step, spe)
        last_test, last_trained = records["test"], trained
        meta = {**meta_base, "step": step, "epoch": epoch}
        minival = records.get("minival")
        if minival is not None and (
            best["minival"] is None or minival["balanced_top1"] > best["minival"]
        ):
            best.update(minival=minival["balanced_top1"], step=step, test=records["test"])
            best["trained"] = trained
            ckpts.save({"step": np.asarray(step), **trained}, meta, best=True)
        ckpts.save({"step": np.asarray(step), **trained}, meta)
    ckpts.close()
    chosen = best["trained"] if best["trained"] is not None else last_trained
    final = {
        "type": "final",
        "step": total,
        "last": last_test,
        "best_on_minival": best["test"],
        "best_step": best["step"],
    }
    writer.write(final)
    writer.close()
    log.info(
        "%s: test top-1 last %.2f, best-on-minival %s (step %s)",
        method,
        100 * last_test["top1"],
        f"{100 * best['test']['top1']:.2f}" if best["test"] else "n/a",
        best["step"],
    )
    params, adjust = src.params, ctx.adjust()
    if method == "crt":
        params = {**src.params, "head": chosen["head"]}
    else:
        adjust = ctx.adjust(scale=chosen["scale"])
    return DecoupleResult(final, params, src.batch_stats, adjust["scale"], adjust["bias"], None)
