"""Pack the exact CIFAR-LT training subsets, minivals and test set as split lists + image files.

    fbl-reproduce pack --dataset cifar10_lt --root $HOME/data/cifar10 --out DATA/cifar10
    fbl-reproduce pack --dataset cifar100_lt --root $HOME/data/cifar100 --out DATA/cifar100

An offline GPU host may take only tens of MiB per transfer: the full lossless trees (50,000
training images each) do not fit, the long-tailed subsets do. For each imbalance factor this
writes `if{IF}_train.txt` (the LDAM subset that fbl-train's image-folder path selects, in its
order) and `if{IF}_minival.txt` (the minival it carves), plus `test.txt`, copies only the images
they name (the original files, unchanged, at the same relative paths) and writes
`manifest.json` (dataset, factors, counts, files, sizes, list hashes). `data_flags(OUT, IF)` are
the overrides that make fbl-train / fbl-sweep read it:

    fbl-train --config=configs/cifar10_lt.py --workdir=runs/c10_if100 \\
        --config.data.source=split_list --config.data.root=DATA/cifar10 \\
        --config.data.train_list=DATA/cifar10/if100_train.txt \\
        --config.data.val_list=DATA/cifar10/if100_minival.txt \\
        --config.data.test_list=DATA/cifar10/test.txt --config.data.list_is_subset=True \\
        --config.data.train_pool=False --config.data.imbalance_factor=100

trains on the same images in the same order as `--config.data.root=$HOME/data/cifar10`;
pack reads every packed split back and checks that (images, labels, order) before it returns,
unless --no-check. `fbl-reproduce --data-root DATA` finds packed folders by their manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any

import numpy as np

from fbl_jax.defaults import ConfigError

log = logging.getLogger("fbl_jax")

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
DATASETS = {"cifar10_lt": "cifar10_lt.py", "cifar100_lt": "cifar100_lt.py"}
MANIFEST = "manifest.json"
FORMAT = "fbl-jax packed split lists"
VERSION = 1


def tag(imbalance_factor: float) -> str:
    """File-name tag of an imbalance factor: 100 → 'if100', 12.5 → 'if12.5'."""
    return f"if{float(imbalance_factor):g}"


def read_manifest(packed_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a packed folder; a ConfigError naming the folder if it is not one."""
    path = pathlib.Path(packed_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{path} is missing or unreadable ({err}): {packed_dir} is not a packed folder; "
            "write one with `fbl-reproduce pack --root DIR --out FOLDER`"
        ) from err
    if manifest.get("format") != FORMAT:
        raise ConfigError(
            f"{path} is not a manifest of `fbl-reproduce pack` (no format {FORMAT!r})"
        )
    return manifest


def data_flags(packed_dir: str | os.PathLike, imbalance_factor: float) -> list[str]:
    """The `--config.data.*` overrides that make fbl-train / fbl-sweep read a packed folder.

    The train list already IS the long-tailed subset (list_is_subset: checked against the IF's
    profile, never carved again). With a manifest, an IF that was not packed is an error here
    rather than a missing-file error later, and a subset without a minival gets no val_list.
    """
    d = pathlib.Path(packed_dir)
    t = tag(imbalance_factor)
    has_minival = True
    if (d / MANIFEST).is_file():
        manifest = read_manifest(d)
        split = manifest.get("splits", {}).get(t)
        if split is None:
            packed = ", ".join(f"{x:g}" for x in manifest.get("imbalance_factors", []))
            raise ConfigError(
                f"{d} holds no IF {float(imbalance_factor):g} subset (packed: {packed}); pack it "
                f"with `fbl-reproduce pack ... --imbalance-factors {float(imbalance_factor):g}`"
            )
        has_minival = split.get("minival_list") is not None
    flags = [
        "--config.data.source=split_list",
        f"--config.data.root={d}",
        f"--config.data.train_list={d / f'{t}_train.txt'}",
    ]
    if has_minival:
        flags.append(f"--config.data.val_list={d / f'{t}_minival.txt'}")
    return flags + [
        f"--config.data.test_list={d / 'test.txt'}",
        "--config.data.list_is_subset=True",
        "--config.data.train_pool=False",
        f"--config.data.imbalance_factor={float(imbalance_factor):g}",
    ]


def add_pack_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `fbl-reproduce pack`."""
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default="cifar10_lt",
        help="whose protocol to pack: configs/<dataset>.py (default: cifar10_lt)",
    )
    parser.add_argument(
        "--config", default="", help="a config file instead of --dataset's (its data settings)"
    )
    parser.add_argument(
        "--root",
        required=True,
        help="image folder ROOT/{train,test}/<class>/<image> (the lossless CIFAR copy; "
        "CIFAR-100: both parts extracted into it)",
    )
    parser.add_argument(
        "--out", required=True, help="folder to write (new, empty, or an earlier pack)"
    )
    parser.add_argument(
        "--imbalance-factors", default="100,50", help="comma-separated (default: 100,50)"
    )
    parser.add_argument(
        "--train-pool",
        action="store_true",
        help="ROOT/train is a pool, not the full set (CIFAR-100 part 1 alone): "
        "data.train_pool=True",
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip reading the packed splits back and comparing them with the image folder",
    )


def _factors(text: str) -> list[float]:
    try:
        factors = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        factors = []
    if not factors or any(not np.isfinite(f) or f <= 1 for f in factors):
        raise ConfigError(
            f"--imbalance-factors={text!r}: give comma-separated numbers > 1 (n_max / n_min), "
            "e.g. 100,50"
        )
    return list(dict.fromkeys(factors))


def _config(args: argparse.Namespace) -> tuple[pathlib.Path, Any]:
    from fbl_jax.defaults import config_from_file

    path = pathlib.Path(args.config) if args.config else CONFIGS / DATASETS[args.dataset]
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist: pass --config FILE (a configs/*.py file)"
        )
    config = config_from_file(path)
    if args.train_pool:
        config.data.train_pool = True
    return path, config


def _out_dir(out: pathlib.Path, root: pathlib.Path) -> None:
    """A new or empty folder, or an earlier pack's (never the data itself)."""
    if out == root or root in out.parents:
        raise ConfigError(f"--out {out} is inside --root {root}: write the pack elsewhere")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder (new, empty, or an earlier pack)")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ConfigError(
            f"--out {out} holds files and no {MANIFEST} (not an earlier pack): give a new or "
            "empty folder, or remove this one"
        )


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pack(args: argparse.Namespace) -> int:
    """Write the packed folder (module docstring); 0 on success, 1 if the check finds a difference.

    Bad input (a missing root, a pool where the config says full set, an unknown factor) is a
    ConfigError that names the problem and the fix.
    """
    from fbl_jax.data import sources
    from fbl_jax.data.bundle import carve_minival, check_pool_minival, long_tail_profile
    from fbl_jax.data.long_tail import select_long_tail_indices

    factors = _factors(args.imbalance_factors)
    config_path, config = _config(args)
    data = config.data
    root = pathlib.Path(args.root).resolve()
    out = pathlib.Path(args.out).resolve()
    if not root.is_dir():
        raise ConfigError(
            f"--root {args.root} is not a directory: give the image folder with train/ and "
            "test/ (e.g. the lossless CIFAR archive extracted there; CIFAR-100: both parts)"
        )
    _out_dir(out, root)
    train_name, test_name = data.get("train_split") or "train", data.get("test_split") or "test"
    try:
        train = sources.list_image_folder(root, train_name)
        test = sources.list_image_folder(root, test_name)
    except FileNotFoundError as err:
        raise ConfigError(f"--root {args.root}: {err}") from err
    num_classes = len(train.class_names)
    if num_classes != int(data.num_classes) or test.class_names != train.class_names:
        raise ConfigError(
            f"--root {args.root} has {num_classes} training classes ({len(test.class_names)} "
            f"test classes) but {config_path.name} has data.num_classes={data.num_classes}: "
            "give the dataset's root, or the --dataset / --config that matches it"
        )

    seed, per_class = int(data.subset_seed), int(data.minival_per_class)
    chosen = []  # (imbalance, subset indices, minival indices): all checked before any write
    for imbalance in factors:
        data.imbalance_factor = imbalance
        try:
            counts = long_tail_profile(data, train.labels, train.class_names, imbalance)
        except ValueError as err:
            raise ConfigError(f"--root {args.root}: {err}") from err
        idx = select_long_tail_indices(train.labels, counts, seed=seed)
        mv = np.zeros(0, np.int64)
        if per_class > 0:
            mv = carve_minival(train.labels, idx, num_classes, per_class, seed)
            if bool(data.train_pool):
                mv_counts = np.bincount(train.labels[mv], minlength=num_classes)
                try:
                    check_pool_minival(
                        mv_counts, train.labels[idx], int(data.n_max), per_class, train
                    )
                except ValueError as err:
                    raise ConfigError(f"--root {args.root}: {err}") from err
        chosen.append((imbalance, idx, mv))

    out.mkdir(parents=True, exist_ok=True)
    wanted: set[str] = set()

    def write_list(name: str, split: Any, indices: Any) -> str:
        lines = []
        for i in indices:
            rel = pathlib.Path(split.paths[i]).relative_to(root).as_posix()
            wanted.add(rel)
            lines.append(f"{rel} {int(split.labels[i])}\n")
        (out / name).write_text("".join(lines))
        return name

    splits: dict[str, Any] = {}
    for imbalance, idx, mv in chosen:
        t = tag(imbalance)
        splits[t] = {
            "imbalance_factor": imbalance,
            "train_list": write_list(f"{t}_train.txt", train, idx),
            "train": len(idx),
            "train_counts": np.bincount(train.labels[idx], minlength=num_classes).tolist(),
            "minival_list": write_list(f"{t}_minival.txt", train, mv) if len(mv) else None,
            "minival": len(mv),
            "minival_counts": np.bincount(train.labels[mv], minlength=num_classes).tolist(),
        }
    splits["test"] = {
        "list": write_list("test.txt", test, range(len(test))),
        "count": len(test),
        "counts": np.bincount(test.labels, minlength=num_classes).tolist(),
    }
    for rel in sorted(wanted):
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dst)
    lists = sorted(
        [s["train_list"] for s in splits.values() if "train_list" in s]
        + [s["minival_list"] for s in splits.values() if s.get("minival_list")]
        + [splits["test"]["list"]]
    )
    image_bytes = sum((out / rel).stat().st_size for rel in wanted)
    list_bytes = sum((out / name).stat().st_size for name in lists)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "dataset": config.get("dataset_name") or config_path.stem,
        "config": str(config_path),
        "source_root": str(root),
        "num_classes": num_classes,
        "class_names": list(train.class_names),
        "profile": data.profile,
        "subset_seed": seed,
        "n_max": data.n_max,
        "train_pool": bool(data.train_pool),
        "minival_per_class": per_class,
        "imbalance_factors": factors,
        "splits": splits,
        "lists": {name: {"sha256": _sha256(out / name)} for name in lists},
        "files": len(wanted),
        "image_bytes": image_bytes,
        "total_bytes": image_bytes + list_bytes,
        "megabytes": round((image_bytes + list_bytes) / 2**20, 1),
        "checked_equal_to_image_folder": False,
    }
    status = 0
    if not args.no_check:
        problems = _check_equal(config, root, out, splits)
        for problem in problems:
            print(
                f"pack: the packed folder differs from the image folder: {problem}", file=sys.stderr
            )
        manifest["checked_equal_to_image_folder"] = not problems
        status = 1 if problems else 0
    (out / f"{MANIFEST}.tmp").write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(out / f"{MANIFEST}.tmp", out / MANIFEST)
    summary = {t: {k: s[k] for k in ("train", "minival")} for t, s in splits.items() if t != "test"}
    summary.update(test=len(test), files=len(wanted), megabytes=manifest["megabytes"], out=str(out))
    summary["checked_equal_to_image_folder"] = manifest["checked_equal_to_image_folder"]
    print(json.dumps(summary))
    return status


def _check_equal(
    config: Any, root: pathlib.Path, out: pathlib.Path, splits: dict[str, Any]
) -> list[str]:
    """Differences between build_datasets on the image folder and on the packed lists."""
    from fbl_jax.data import build_datasets, sources

    first = sources.list_image_folder(root, config.data.get("train_split") or "train").paths[0]
    size = int(sources.decode_images([first]).shape[1])
    problems = []
    with tempfile.TemporaryDirectory(prefix="fbl_pack_") as cache:  # decode the source once
        for t, split in splits.items():
            if t == "test":
                continue
            common = dict(
                pipeline="device", image_size=size, imbalance_factor=split["imbalance_factor"]
            )
            ref = config.data.copy_and_resolve_references()
            ref.update(source="image_folder", root=str(root), cache_dir=cache, **common)
            packed = config.data.copy_and_resolve_references()
            packed.update(
                source="split_list",
                root=str(out),
                list_is_subset=True,
                train_pool=False,
                train_list=str(out / split["train_list"]),
                test_list=str(out / splits["test"]["list"]),
                **common,
            )
            if split["minival_list"]:
                packed.val_list = str(out / split["minival_list"])
            kw = dict(
                global_batch_size=1,
                seed=0,
                process_index=0,
                process_count=1,
                local_device_count=1,
                eval_batch_size=500,
                num_epochs=int(config.num_epochs),
            )
            a, b = build_datasets(ref, **kw), build_datasets(packed, **kw)
            pairs = {
                "class names": (a.class_names, b.class_names),
                "class counts": (a.class_counts, b.class_counts),
                "train images": (a.train.images, b.train.images),
                "train labels": (a.train.labels, b.train.labels),
                "eval splits": (a.eval_splits, b.eval_splits),
                "eval sizes": (a.eval_sizes, b.eval_sizes),
            }
            problems += [f"{t}: {what}" for what, (x, y) in pairs.items() if not _same(x, y)]
            for name in set(a.eval_splits) & set(b.eval_splits):
                batches = zip(a.eval_iter(name), b.eval_iter(name), strict=False)  # streamed
                if not all(
                    _same(u[k], v[k]) for u, v in batches for k in ("image", "label", "mask")
                ):
                    problems.append(f"{t}: {name} batches")
    return problems


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return np.shape(x) == np.shape(y) and bool(np.array_equal(x, y))
    return x == y
