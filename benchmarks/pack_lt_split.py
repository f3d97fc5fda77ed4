"""Pack the exact CIFAR-LT training subsets, minivals and test set as split lists + WebP files.

    python benchmarks/pack_lt_split.py --root /data/cifar10-lossless --out .data/c10lt \
        --imbalance-factors 100,50

A lent GPU machine takes at most 64 MiB per call and has no ../shared: the full lossless tree
(50,000 training images) does not fit, the subsets do. For each imbalance factor this writes
`if{IF}_train.txt` (the LDAM subset fbl-train's image-folder path selects, in its order) and
`if{IF}_minival.txt` (the minival it carves), plus `test.txt`, and copies only the images
they name (the original lossless files, unchanged). Then

    fbl-train --config=configs/cifar10_lt.py --config.data.source=split_list \
        --config.data.root=.data/c10lt --config.data.train_list=.data/c10lt/if100_train.txt \
        --config.data.val_list=.data/c10lt/if100_minival.txt \
        --config.data.test_list=.data/c10lt/test.txt --config.data.list_is_subset=True

trains on the same images in the same order as `--config.data.root=/data/cifar10-lossless`;
the script checks that (images, labels and order of every split) before it returns.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="ROOT/{train,test}/<class>/*.webp")
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=str(REPO / "configs" / "cifar10_lt.py"))
    p.add_argument("--imbalance-factors", default="100,50")
    p.add_argument("--no-check", action="store_true", help="skip the equality check")
    args = p.parse_args()

    import numpy as np

    from fbl_jax.data import build_datasets, sources
    from fbl_jax.data.bundle import carve_minival, long_tail_profile
    from fbl_jax.data.long_tail import select_long_tail_indices
    from fbl_jax.defaults import config_from_file

    config = config_from_file(args.config)
    root, out = pathlib.Path(args.root), pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = sources.list_image_folder(root, "train")
    test = sources.list_image_folder(root, "test")
    wanted: set[str] = set()

    def write_list(name: str, split, indices) -> None:
        lines = []
        for i in indices:
            rel = os.path.relpath(split.paths[i], root)
            wanted.add(rel)
            lines.append(f"{rel} {int(split.labels[i])}")
        (out / name).write_text("\n".join(lines) + "\n")

    summary = {}
    for imbalance in [float(x) for x in args.imbalance_factors.split(",")]:
        data = config.data.copy_and_resolve_references()
        data.imbalance_factor = imbalance
        counts = long_tail_profile(data, train.labels, train.class_names, imbalance)
        idx = select_long_tail_indices(train.labels, counts, seed=int(data.subset_seed))
        mv = carve_minival(
            train.labels, idx, len(train.class_names), int(data.minival_per_class), data.subset_seed
        )
        tag = f"if{imbalance:g}"
        write_list(f"{tag}_train.txt", train, idx)
        write_list(f"{tag}_minival.txt", train, mv)
        summary[tag] = {"train": len(idx), "minival": len(mv)}
    write_list("test.txt", test, range(len(test)))
    for rel in sorted(wanted):
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            shutil.copy2(root / rel, dst)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    summary.update(files=len(wanted), megabytes=round(size / 2**20, 1))
    if not args.no_check:
        for tag in [k for k in summary if k.startswith("if")]:
            ref_cfg = config.data.copy_and_resolve_references()
            ref_cfg.update(root=str(root), imbalance_factor=float(tag[2:]))
            packed = config.data.copy_and_resolve_references()
            packed.update(
                source="split_list", root=str(out), list_is_subset=True,
                imbalance_factor=float(tag[2:]),
                train_list=str(out / f"{tag}_train.txt"),
                val_list=str(out / f"{tag}_minival.txt"), test_list=str(out / "test.txt"),
            )  # fmt: skip
            kw = dict(global_batch_size=64, seed=0, eval_batch_size=500, num_epochs=200)
            a, b = build_datasets(ref_cfg, **kw), build_datasets(packed, **kw)
            assert np.array_equal(a.class_counts, b.class_counts), tag
            assert a.class_names == b.class_names, tag
            for x, y in ((a.train.images, b.train.images), (a.train.labels, b.train.labels)):
                assert np.array_equal(x, y), tag
            for split in a.eval_splits:
                ea, eb = list(a.eval_iter(split)), list(b.eval_iter(split))
                assert len(ea) == len(eb), (tag, split)
                for u, v in zip(ea, eb):
                    for key in ("image", "label", "mask"):
                        assert np.array_equal(u[key], v[key]), (tag, split, key)
            summary[tag]["checked_equal_to_image_folder"] = True
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
