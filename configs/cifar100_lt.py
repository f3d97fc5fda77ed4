"""CIFAR-100-LT, ResNet-32, the LDAM/FBL protocol (paper Table 2: FBL 45.22 at IF 100, 50.65 at IF 50;
cross-entropy 39.43 / 44.20).

FBL form: the AUTHORS' CODE (A = 60, α = (epoch / (T − 10))², per epoch); everything else as in
configs/cifar10_lt.py, the authors' per-epoch warm-up (optimizer.warmup_per_epoch=True) included.

Data: the LOSSLESS CIFAR-100 copy (original pixels as lossless WebP; see
../shared/data/cifar100-lossless/README.md), BOTH parts extracted into one folder: train/ is then
the full training set (500 per class) and test/ the test set (100 per class). The long-tailed
subset is carved from it exactly as for CIFAR-10 (LDAM's recipe, data.train_pool=False), with
data.n_max=500: a train/ with fewer than 500 images in any class is an error that says so (e.g.
part 1 alone), never a silent training on a smaller set.

    mkdir -p $HOME/data/cifar100
    tar -xzf ../shared/data/cifar100-lossless/cifar100-lossless-part1.tar.gz -C $HOME/data/cifar100
    tar -xzf ../shared/data/cifar100-lossless/cifar100-lossless-part2.tar.gz -C $HOME/data/cifar100
    fbl-train --config=configs/cifar100_lt.py --workdir=runs/c100lt_if100_fbl \
        --config.data.root=$HOME/data/cifar100 --config.data.cache_dir=$HOME/data/cache
    # IF 50:       --config.data.imbalance_factor=50
    # tfds source: --config.data.source=tfds --config.data.name=cifar100 --config.data.data_dir=DIR
    #              (`tfds build cifar100 --data_dir=DIR` first)

LT-pool mode (part 1 alone): part 1's train/ holds only a training POOL, class i keeping
min(500, n_i + 100) images, n_i its IF 50 count (22,286 images; a seeded random sample of the
class): enough for the IF 50 and IF 100 subsets plus a 100-per-class minival. With
--config.data.train_pool=True the subset is drawn from the pool with LDAM's recipe: Table 1's
class counts, but not the images the full training set gives at the same subset_seed. IF below
50 needs the full set (the pool's minival would be short, which is an error).
"""

import pathlib

from fbl_jax.defaults import config_from_file


def get_config():
    c = config_from_file(pathlib.Path(__file__).with_name("cifar10_lt.py"))
    c.dataset_name = "CIFAR-100-LT"
    c.data.source = "image_folder"
    c.data.train_pool = False  # train/ is the full set (both parts); True: part 1's LT pool
    c.data.n_max = 500  # images per class of the full training set: a short class is an error
    c.data.num_classes = 100
    c.data.mean = (0.5071, 0.4865, 0.4409)
    c.data.std = (0.2673, 0.2564, 0.2762)
    return c
