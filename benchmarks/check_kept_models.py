"""Evaluate kept models (final_params.npz) on an image folder's test split, with none of
fbl-jax's data code: images decoded with PIL, normalised here from the run's config, the model
applied in JAX. Prints each run's test top-1 and per-class accuracies beside what its own
`final` record says, so a result in results/ can be checked from its model alone.

    python benchmarks/check_kept_models.py --data $HOME/data/cifar10 \
        results/cifar10_lt_if100_lossless/runs/cifar10_lt_if100_table2/seed=0,loss.name=*
"""

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from fbl_jax.models import get_model
from fbl_jax.train.params_file import load_params


def read_test_split(root: pathlib.Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """ROOT/test/<class>/<image>: uint8 images, labels by sorted class folder, class names."""
    classes = sorted(p.name for p in (root / "test").iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / "test" / name).iterdir()):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    return np.stack(images), np.asarray(labels), classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=pathlib.Path, help="ROOT with test/<class>/")
    parser.add_argument("runs", nargs="+", type=pathlib.Path, help="run folders with the model")
    args = parser.parse_args()
    images, labels, classes = read_test_split(args.data)
    for run in args.runs:
        config = json.loads((run / "config.json").read_text())
        mean, std = np.asarray(config["data"]["mean"]), np.asarray(config["data"]["std"])
        x = ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
        model = get_model(config["model"]["name"], len(classes), head=config["model"]["head"])
        variables = load_params(run / "final_params.npz")
        apply = jax.jit(lambda v, b, model=model: model.apply(v, b, train=False)[0])
        preds = np.concatenate(
            [np.asarray(apply(variables, jnp.asarray(x[i : i + 500]))).argmax(1)
             for i in range(0, len(x), 500)]
        )  # fmt: skip
        per_class = [100 * np.mean(preds[labels == c] == c) for c in range(len(classes))]
        final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        recorded = next(r for r in final if r.get("type") == "final")["last"]["top1"]
        print(f"{run.name}: test top-1 {100 * np.mean(preds == labels):.2f} "
              f"(its final record: {100 * recorded:.2f}); per class "
              + " ".join(f"{a:.1f}" for a in per_class))  # fmt: skip


if __name__ == "__main__":
    main()
