"""fbl-decouple's config: every field it reads, its defaults, and the checks on them.

Kept apart from the run code so configs/decouple.py and the CLI's flag choices need only this.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np
from ml_collections.config_dict import placeholder

from fbl_jax import defaults
from fbl_jax.data import SAMPLER_NAMES
from fbl_jax.defaults import ConfigError

METHODS = ("tau_norm", "la_posthoc", "crt", "lws")
TAU_METHODS = ("tau_norm", "la_posthoc")
CHECKPOINTS = ("best", "last")
TAU_GRID = tuple(round(0.1 * i, 1) for i in range(21))  # 0.0, 0.1, ..., 2.0


def default_config() -> ml_collections.ConfigDict:
    """Every field fbl-decouple reads; configs/decouple.py returns this."""
    c = ml_collections.ConfigDict()
    c.method = ""  # one of METHODS (or --method)
    c.from_run = ""  # the fbl-train WORKDIR (or --from)
    c.checkpoint = "best"  # "best" (on minival) or "last"
    c.seed = placeholder(int)  # None: the source run's seed (cRT head init, sampling)
    # Where the source run's data is on THIS machine (None: where its config says it was): a run
    # kept in results/ was trained elsewhere. Checked against the run's data.json fingerprints.
    c.data = ml_collections.ConfigDict({"root": placeholder(str), "cache_dir": placeholder(str)})
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
        raise ConfigError(f"config.method={config.method!r}; choose one of {METHODS} (--method)")
    if not config.from_run:
        raise ConfigError("config.from_run is empty: give the source run directory with --from")
    if config.checkpoint not in CHECKPOINTS:
        raise ConfigError(f"config.checkpoint={config.checkpoint!r}; choose one of {CHECKPOINTS}")
    if config.keep_checkpoints < 1:
        raise ConfigError(f"config.keep_checkpoints must be >= 1, got {config.keep_checkpoints}")
    if config.method in TAU_METHODS:
        taus = list(config[config.method].taus)
        if not taus or not all(np.isfinite(float(t)) for t in taus):
            raise ConfigError(
                f"config.{config.method}.taus={taus!r} must be a non-empty list of finite numbers"
            )
    else:
        m = config[config.method]
        if m.epochs < 1:
            raise ConfigError(f"config.{config.method}.epochs must be >= 1, got {m.epochs}")
        if m.batch_size is not None and m.batch_size < 1:
            raise ConfigError(f"config.{config.method}.batch_size must be >= 1, got {m.batch_size}")
        if m.sampler not in SAMPLER_NAMES:
            raise ConfigError(
                f"config.{config.method}.sampler={m.sampler!r}; choose one of {SAMPLER_NAMES}"
            )
