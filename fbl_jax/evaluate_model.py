"""fbl-eval: a trained model's test (and minival) metrics, computed as the trainer computes them.

For models that left their run: a run directory's last or best checkpoint, or the
final_params.npz a run kept as a result carries (its data rebuilt from config.json and checked
against data.json's fingerprints); or weights from elsewhere with the training config that says
which data and model they belong to: our final_params.npz, or a PyTorch state dict in
torchvision's or LDAM's resnet_cifar names (LDAM-DRW's and FBL's own checkpoints, ckpt.pth.tar),
so a published PyTorch model is measured by the same evaluation as ours: every test image once
(the last batch padded and masked), per-class accuracy, many/medium/few, feature norms.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from fbl_jax.decouple.context import load_source_run, rebuild_data
from fbl_jax.errors import ConfigError, DataError
from fbl_jax.models.pretrained import load_state_dict_file, load_torch_weights
from fbl_jax.train import evaluation, params_file, replication, run_setup
from fbl_jax.train import steps as train_steps
from fbl_jax.train.writers import eval_line


@dataclasses.dataclass
class Evaluation:
    """Eval records by split (metrics.jsonl's format), and what was evaluated on which data."""

    records: dict[str, dict[str, Any]]
    weights: str
    data: dict[str, Any]  # the data's provenance: folder and fingerprints of the decoded pixels

    def to_json(self) -> dict[str, Any]:
        return {"weights": self.weights, "data": self.data, "records": self.records}


def evaluate_run(
    run_dir: str | pathlib.Path, checkpoint: str = "last", where: dict[str, Any] | None = None
) -> Evaluation:
    """A run directory's `last` (the latest checkpoint, else final_params.npz) or `best`
    (best-on-minival) model on its own data; `where` (root, cache_dir) says where that data is
    on this machine for a run trained on another."""
    config_file = pathlib.Path(run_dir) / "config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("decouple"):
        raise ConfigError(
            f"{run_dir} is a decoupled run (fbl-decouple): its metrics.jsonl holds its "
            "evaluation; fbl-eval evaluates a trained run's model (give its source run)"
        )
    src = load_source_run(run_dir, checkpoint)
    bundle, _ = rebuild_data(src, where, root_flag="--data_root")
    config = ml_collections.ConfigDict(src.config)
    variables = {"params": src.params, "batch_stats": src.batch_stats}
    records = _evaluate(config, bundle, variables, src.step)
    return Evaluation(records, str(src.checkpoint_path), bundle.provenance)


def evaluate_weights(config: Any, weights: str | pathlib.Path) -> Evaluation:
    """`weights` (final_params.npz, or a PyTorch state dict: .pth, .pth.tar, .pt, .npz,
    .safetensors) in the model of the training `config`, on its data."""
    path = pathlib.Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path} does not exist")
    run_setup.check_run_config(config)  # unknown fields, impossible values, missing data
    bundle = run_setup.load_data(config)
    model = run_setup.build_model(config, bundle.num_classes)
    template = train_steps.init_variables(
        jax.random.key(config.seed, impl="rbg"), model, bundle.image_shape
    )
    if _is_params_file(path):
        variables = params_file.load_params(path)
    else:
        variables = load_torch_weights(template, load_state_dict_file(path))
    _check_shapes(template, variables, path)
    records = _evaluate(config, bundle, variables, None)  # weights from elsewhere: no step
    return Evaluation(records, str(path), bundle.provenance)


def _is_params_file(path: pathlib.Path) -> bool:
    """Our final_params.npz (keys params/..., batch_stats/...), not a state dict saved as .npz."""
    if path.suffix.lower() != ".npz":
        return False
    with np.load(path, allow_pickle=False) as z:
        return bool(z.files) and all(k.split("/", 1)[0] in params_file.COLLECTIONS for k in z.files)


def _check_shapes(template: Any, variables: Any, path: pathlib.Path) -> None:
    want = {k: np.shape(v) for k, v in _flat(template).items()}
    got = {k: np.shape(v) for k, v in _flat(variables).items()}
    if want != got:
        wrong = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
        raise DataError(
            f"{path} does not fit the config's model ({len(wrong)} variable(s) differ, e.g. "
            f"{', '.join(wrong[:3])}): give the config the weights were trained with"
        )


def _flat(variables: Any) -> dict[str, Any]:
    leaves = jax.tree_util.tree_flatten_with_path(
        {c: variables.get(c, {}) for c in params_file.COLLECTIONS}
    )[0]
    return {jax.tree_util.keystr(k): v for k, v in leaves}


def _evaluate(
    config: Any, bundle: Any, variables: Any, step: int | None
) -> dict[str, dict[str, Any]]:
    model = run_setup.build_model(config, bundle.num_classes)
    p_eval = jax.pmap(
        train_steps.make_eval_step(model, bundle.num_classes), axis_name=train_steps.AXIS
    )
    params = replication.replicate(variables["params"])
    stats = replication.replicate(variables.get("batch_stats", {}))
    counts = np.asarray(bundle.class_counts)
    records = {}
    for split in bundle.eval_splits:
        totals = train_steps.run_evaluation(p_eval, params, stats, bundle.eval_iter(split))
        epoch = None if step is None else step / bundle.steps_per_epoch
        record = {"type": "eval", "step": step, "epoch": epoch}
        record.update(split=split, **evaluation.metrics_from_stats(totals, counts))
        eval_line(record)
        records[split] = record
    return records
