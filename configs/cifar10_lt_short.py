"""CIFAR-10-LT IF 100, ResNet-32, a SHORTENED protocol that fits on a 2-core CPU: 50 epochs.

Everything as configs/cifar10_lt.py (batch 64, SGD lr 0.1 momentum 0.9 wd 2e-4, authors' λ form
with A = 60) except the length: 50 epochs, lr ×0.01 from epoch 40 and ×0.0001 from 45, DRW from
epoch 40. The warm-up stays the authors' (their adjust_learning_rate fixes it at 5 epochs, per
epoch: lr·(e + 1)/5 in epoch e < 5). Not a paper number: the paper trains 200 epochs.

The authors' curriculum α = (t / (T − 10))² was tuned for T = 200 (α reaches 1 at epoch 190); at
T = 50 it climbs to (50/40)² ≈ 1.56. The offset is configurable, so both are run:

    R=$HOME/data/cifar10   # mkdir -p $R; tar -xzf ../shared/data/cifar10-lossless/cifar10-lossless.tar.gz -C $R
    fbl-train --config=configs/cifar10_lt_short.py --workdir=runs/short_fbl_authors --config.data.root=$R
    fbl-train --config=configs/cifar10_lt_short.py --workdir=runs/short_fbl_scaled --config.data.root=$R \
        --config.loss.curriculum_offset=2.5         # (t / (0.95·T))², the shape of the 200-epoch run
    fbl-train --config=configs/cifar10_lt_short.py --workdir=runs/short_ce --config.data.root=$R \
        --config.loss.name=ce
    fbl-train --config=configs/cifar10_lt_short.py --workdir=runs/short_ldam_drw --config.data.root=$R \
        --config.loss.name=ldam_drw --config.model.head=cosine
    fbl-train --config=configs/cifar10_lt_short.py --workdir=runs/short_la --config.data.root=$R \
        --config.loss.name=la

R is the lossless CIFAR-10 copy (WebP, original pixels), as in configs/cifar10_lt.py; the earlier
50-epoch results (RESULTS.md) were measured on the older, lossy JPEG copy
(../shared/data/cifar10/cifar10-jpeg.tar.gz) and with a per-step warm-up
(--config.optimizer.warmup_per_epoch=False), so compare like with like.
"""

import pathlib

from fbl_jax.defaults import config_from_file


def get_config():
    c = config_from_file(pathlib.Path(__file__).with_name("cifar10_lt.py"))
    c.dataset_name = "CIFAR-10-LT (50-epoch protocol)"
    c.num_epochs = 50
    c.eval_every_epochs = 5
    c.checkpoint_every_epochs = 1
    c.loss.drw_start_epoch = 40
    c.optimizer.decay_epochs = (40, 45)
    c.optimizer.decay_multipliers = (0.01, 0.0001)
    return c
