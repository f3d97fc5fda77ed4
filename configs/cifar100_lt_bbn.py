"""CIFAR-100-LT, BBN with BBN's own CIFAR recipe (FBL paper Table 2 quotes BBN at 42.56 top-1 for
IF 100, 47.02 for IF 50).

BBN's configs/cifar100.yaml is its cifar10.yaml with the dataset changed, so the recipe and its
differences from the FBL protocol are those of configs/cifar10_lt_bbn.py (200 epochs, batch 128,
Nesterov SGD lr 0.1, wd 2e-4, 5 warm-up epochs in per-epoch stairs, lr × 0.01 / × 0.0001 from
0-based epochs 119 / 159, reversed second stream, α = 1 − (e / 200)², 0.5/0.5 evaluation). One more:
BBN's IMBALANCECIFAR100 inherits the CIFAR-10 normalisation; this config keeps the CIFAR-100
mean/std of configs/cifar100_lt.py, so its inputs match the FBL runs'.

Data: the LOSSLESS CIFAR-100 copy, both parts in one folder (the full training set; the data
settings are configs/cifar100_lt.py's, --config.data.train_pool=True for part 1's LT pool alone):

    mkdir -p $HOME/data/cifar100
    tar -xzf ../shared/data/cifar100-lossless/cifar100-lossless-part1.tar.gz -C $HOME/data/cifar100
    tar -xzf ../shared/data/cifar100-lossless/cifar100-lossless-part2.tar.gz -C $HOME/data/cifar100
    fbl-train --config=configs/cifar100_lt_bbn.py --workdir=runs/c100lt_if100_bbn \
        --config.data.root=$HOME/data/cifar100 --config.data.cache_dir=$HOME/data/cache
    # IF 50 (BBN's yaml, RATIO 0.02): --config.data.imbalance_factor=50
"""

import pathlib

from fbl_jax.defaults import config_from_file

HERE = pathlib.Path(__file__).parent


def get_config():
    c = config_from_file(HERE / "cifar10_lt_bbn.py")
    c100 = config_from_file(HERE / "cifar100_lt.py")
    c.dataset_name = c100.dataset_name
    c.data = c100.data
    c.data.second_sampler = "reversed"
    return c
