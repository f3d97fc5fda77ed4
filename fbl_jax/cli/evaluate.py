r"""fbl-eval: evaluate a trained model on its test (and minival) split, as fbl-train evaluates.

    fbl-eval --from=runs/c10_fbl                                  # its latest checkpoint
    fbl-eval --from=results/.../seed=0,loss.name=fbl --data_root=$HOME/data/cifar10
    fbl-eval --config=configs/cifar10_lt.py --weights=ckpt.pth.tar \
        --config.data.root=$HOME/data/cifar10                     # FBL's / LDAM-DRW's PyTorch model

--from takes a run directory (its latest checkpoint, or the final_params.npz a run kept as a
result carries; --checkpoint=best for the best on the minival): the data is rebuilt from its
config.json (--data_root/--cache_dir: where it is on this machine) and must match its data.json.
--config with --weights evaluates final_params.npz or a PyTorch state dict (torchvision's names,
or LDAM's resnet_cifar names for the CIFAR ResNets) in the config's model on the config's data.
--out=FILE.json keeps the records (per-class accuracy, many/medium/few, feature norms, confusion).
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags
from ml_collections import config_flags

from fbl_jax import cli
from fbl_jax.defaults import get_default_config

FLAGS = flags.FLAGS


def define_flags() -> list[str]:
    flags.DEFINE_string("from", None, "A run directory (fbl-train's --workdir, or one kept).")
    flags.DEFINE_enum("checkpoint", "last", ["last", "best"], "With --from: which model.")
    flags.DEFINE_string("data_root", None, "With --from: where the run's data is on this machine.")
    flags.DEFINE_string("cache_dir", None, "With --from: the decoded-data cache ('' for none).")
    config_flags.DEFINE_config_file(
        "config", None, "With --weights: the configs/*.py the model was trained with.",
        lock_config=True,
    )  # fmt: skip
    flags.DEFINE_string("weights", None, "With --config: final_params.npz or a PyTorch state dict.")
    flags.DEFINE_string("out", None, "Write the eval records to this JSON file.")
    return ["from", "checkpoint", "data_root", "cache_dir", "config", "weights", "out"]


def main(argv: list[str]) -> None:
    run_dir, config, weights = FLAGS["from"].value, FLAGS.config, FLAGS.weights
    if (run_dir is None) == (config is None):
        raise app.UsageError("give --from=RUN_DIR, or --config=FILE with --weights=FILE")
    if config is not None and weights is None:
        raise app.UsageError("--config needs --weights=FILE (the model to evaluate)")
    if run_dir is not None and weights is not None:
        raise app.UsageError("--weights goes with --config; --from evaluates the run's own model")
    if config is not None and (FLAGS.data_root is not None or FLAGS.cache_dir is not None):
        raise app.UsageError("with --config the data is --config.data.root (and .cache_dir)")
    single = get_default_config().distributed  # a run directory: evaluated on this host
    single.initialize = "never"
    cli.start(argv, config.distributed if config is not None else single)
    from fbl_jax import evaluate_model  # after jax.distributed joins hosts

    if run_dir is not None:
        where = {"root": FLAGS.data_root, "cache_dir": FLAGS.cache_dir}
        result = evaluate_model.evaluate_run(run_dir, FLAGS.checkpoint, where)
    else:
        result = evaluate_model.evaluate_weights(config, weights)  # validates the config
    if FLAGS.out:
        out = pathlib.Path(FLAGS.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_json(), indent=1) + "\n")


def run() -> None:
    cli.run_absl("fbl-eval", main, __doc__, define_flags, example="data.root=$HOME/data/cifar10")


if __name__ == "__main__":
    run()
