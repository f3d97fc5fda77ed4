"""What every fbl-decouple method shares: the source run, its data and model, eval, writing.

`load_source_run` reads a finished fbl-train run directory (config, class counts, one orbax
checkpoint); `DecoupleContext` rebuilds the run's data and model from its config, checks they
still match, and evaluates/writes records in the trainer's metrics.jsonl format.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from fbl_jax.data import build_datasets
from fbl_jax.decouple.config import CHECKPOINTS, TAU_METHODS
from fbl_jax.decouple.steps import make_adjusted_eval_step
from fbl_jax.defaults import ConfigError
from fbl_jax.errors import DataError
from fbl_jax.train import evaluation as evaluate
from fbl_jax.train import params_file, replication
from fbl_jax.train import run_setup as train
from fbl_jax.train import steps as train_steps
from fbl_jax.train.writers import MetricWriter


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
    data: dict[str, Any]  # its data.json (which data, fingerprinted); {} for older runs


def load_source_run(run_dir: str | pathlib.Path, checkpoint: str = "best") -> SourceRun:
    """Read config.json, class_counts.json and the `best` or `last` checkpoint of a run."""
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"checkpoint={checkpoint!r}; choose one of {CHECKPOINTS}")
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
        raise ConfigError(
            f"{path} is itself a decoupled run ({config['decouple'].get('method')}); apply "
            f"decoupling to the training run it came from, {config['decouple'].get('from_run')}"
        )
    counts_file = json.loads((path / "class_counts.json").read_text())
    ckpt_root = path / ("best" if checkpoint == "best" else "checkpoints")
    hint = (
        " (a run without minival has none: use checkpoint='last')" if checkpoint == "best" else ""
    )
    kept = path / params_file.FILE_NAME
    if not ckpt_root.is_dir() and kept.is_file():  # a run kept as a result, without checkpoints
        if checkpoint == "best":
            raise FileNotFoundError(
                f"{path} keeps only its final parameters ({kept.name}), not its best-on-minival "
                "checkpoint: use checkpoint='last'"
            )
        return _from_params_file(path, config, counts_file, kept)
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
    where = (checkpoint, ckpt_root / str(step))
    return _source_run(path, config, counts_file, state, int(step), where)


def _from_params_file(path, config, counts_file, kept: pathlib.Path) -> SourceRun:
    final = train.read_final_record(path) or {}
    variables = params_file.load_params(kept)
    return _source_run(
        path, config, counts_file, variables, int(final.get("step", 0)), ("last", kept)
    )


def _source_run(path, config, counts_file, variables, step: int, where) -> SourceRun:
    data_file = path / "data.json"
    return SourceRun(
        path=path,
        config=config,
        class_counts=np.asarray(counts_file["counts"], np.int64),
        class_names=[str(n) for n in counts_file.get("class_names", [])],
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        step=step,
        checkpoint=where[0],
        checkpoint_path=where[1],
        data=json.loads(data_file.read_text()) if data_file.is_file() else {},
    )


def check_same_data(src: SourceRun, rebuilt: dict[str, Any], data_cfg: dict[str, Any]) -> None:
    """The rebuilt data must be the data the run trained and was tested on: every split both
    fingerprint the same way must have the same sha256 (another copy of CIFAR, e.g. the lossy
    JPEG one, has the same class counts and other pixels)."""
    recorded, now = src.data.get("splits", {}), rebuilt.get("splits", {})
    differ = [
        name
        for name, split in recorded.items()
        if name in now
        and split.get("of") == now[name].get("of")
        and split.get("sha256") != now[name].get("sha256")
    ]
    if differ:
        where = data_cfg.get("root") or data_cfg.get("data_dir") or data_cfg.get("name")
        raise DataError(
            f"the data at {where} is not what {src.path} trained and was tested on: its "
            f"{', '.join(differ)} split(s) differ from the run's data.json (sha256 of the decoded "
            f"pixels and labels); point --config.data.root at the copy it used "
            f"(data.json: {src.data.get('root') or src.data.get('source')})"
        )


def rebuild_data(
    src: SourceRun,
    where: Any,
    changes: dict[str, Any] | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    num_epochs: int | None = None,
    root_flag: str = "--config.data.root",
) -> tuple[Any, dict[str, Any]]:
    """(bundle, data config): the run's data rebuilt, read where `where` (root, cache_dir; None
    keeps the run's) says it is on this machine, and checked to be the data it trained and was
    tested on (data.json's fingerprints and the class counts). `changes` alter the training
    pipeline only (a decoupling method's sampler); evaluation batches are the trainer's."""
    data_cfg = dict(src.config["data"])
    for key, value in dict(where or {}).items():
        if value is not None:
            data_cfg[key] = value or None  # cache_dir='': no cache
    data_cfg.update(changes or {})
    batch_size = int(batch_size or src.config["batch_size"])
    # As the trainer: eval batches of data.eval_batch_size, else the run's batch size.
    eval_bs = data_cfg.get("eval_batch_size") or int(src.config["batch_size"])
    try:
        bundle = build_datasets(
            data_cfg,
            global_batch_size=batch_size,
            seed=int(src.config["seed"] if seed is None else seed),
            eval_batch_size=eval_bs,
            num_epochs=num_epochs,
        )
    except FileNotFoundError as e:
        if dict(where or {}).get("root") is not None:
            raise
        raise FileNotFoundError(
            f"{e}. The run read its data there; where it is on this machine: {root_flag}=DIR"
        ) from None
    check_same_data(src, bundle.provenance, data_cfg)
    if not np.array_equal(bundle.class_counts, src.class_counts):
        raise DataError(
            f"the data rebuilt from {src.path / 'config.json'} has class counts "
            f"{bundle.class_counts.tolist()}, the run recorded {src.class_counts.tolist()}"
            "; the dataset changed since training"
        )
    return bundle, data_cfg


class DecoupleContext:
    """What every method shares: source run, data, model, eval steps, writer."""

    def __init__(self, config: Any, workdir: pathlib.Path) -> None:
        self.config = config
        self.method = config.method
        self.workdir = workdir
        self.src = src = load_source_run(config.from_run, config.checkpoint)
        if src.path.resolve() == workdir.resolve():
            raise ConfigError(f"--workdir {workdir} is the source run itself; use a new directory")
        model_cfg = src.config["model"]
        if self.method == "tau_norm" and model_cfg["head"] != "linear":
            raise ConfigError(
                f"tau_norm rescales the rows of a linear classifier; the {model_cfg['head']!r} "
                "head normalises them away. Use la_posthoc, crt or lws for this run"
            )
        self.seed = int(src.config["seed"] if config.seed is None else config.seed)
        self.trains = self.method not in TAU_METHODS
        changes, batch_size, num_epochs = {}, int(src.config["batch_size"]), None
        if self.trains:
            m = config[self.method]
            batch_size = int(m.batch_size or batch_size)
            changes, num_epochs = {"sampler": m.sampler, "mixup_alpha": 0.0}, m.epochs
        train.check_devices(batch_size, f"config.{self.method}.batch_size")
        self.batch_size = batch_size
        self.bundle, self.data_cfg = rebuild_data(
            src, config.data, changes, batch_size, self.seed, num_epochs, "--config.data.root"
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
        """config.json (the source's, with the data where it was read and the method), and
        data.json: a decoupled run says which data it was evaluated on, as a trained one does."""
        if self.is_chief:
            cfg = {**self.src.config, "data": self.data_cfg, "decouple": self.section}
            (self.workdir / "config.json").write_text(json.dumps(cfg, indent=2, default=list))
            if self.bundle.provenance:
                provenance = json.dumps(self.bundle.provenance, indent=1) + "\n"
                (self.workdir / "data.json").write_text(provenance)

    def evaluate_all(
        self, writer: MetricWriter, p_params: Any, p_stats: Any, adjust: dict, step: int, spe: int
    ) -> dict[str, dict]:
        """Eval records for every split, in the trainer's format, written to metrics.jsonl."""
        p_adjust = replication.replicate(adjust)
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
