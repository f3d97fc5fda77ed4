"""CIFAR-100-LT, ResNet-32, the LDAM/FBL protocol (paper Table 2: FBL 45.22 at IF 100, 50.65 at IF 50;
cross-entropy 39.43 / 44.20).

FBL form: the AUTHORS' CODE (A = 60, α = (epoch / (T − 10))², per epoch); everything else as in
configs/cifar10_lt.py, the authors' per-epoch warm-up (optimizer.warmup_per_epoch=True) included.

Data: the LOSSLESS CIFAR-100 copy (original pixels as lossless WebP; see
../shared/data/cifar100-lossless/README.md). Its part 1 holds the whole test set
(test/<fine class>/*.webp, 100 per class) and, in train/<fine class>/, only a training POOL:
class i keeps min(500, n_i + 100) images, n_i its IF 50 count (22,286 images; a seeded random
sample of the class) -- enough for the IF 50 and IF 100 subsets plus a 100-per-class minival.
Hence the defaults data.train_pool=True and data.n_max=500: the long-tailed subset is drawn from
the pool with LDAM's recipe (Table 1's class counts; not the same images that the full training
set gives at the same subset_seed). IF below 50 needs part 2 (the full set; the pool's minival
would be short, which is an error). With part 2 extracted into the same folder, train/ is the
full balanced set and the same settings give the full set's subset.

    mkdir -p /data/cifar100-lossless
    tar -xzf ../shared/data/cifar100-lossless/cifar100-lossless-part1.tar.gz -C /data/cifar100-lossless
    fbl-train --config=configs/cifar100_lt.py --workdir=runs/c100lt_if100_fbl \
        --config.data.root=/data/cifar100-lossless --config.data.cache_dir=/data/cache
    # IF 50:       --config.data.imbalance_factor=50
    # tfds source: --config.data.source=tfds --config.data.name=cifar100 --config.data.data_dir=DIR \
    #              --config.data.train_pool=False   (`tfds build cifar100 --data_dir=DIR` first)
"""

import pathlib

from fbl_jax.defaults import config_from_file


def get_config():
    c = config_from_file(pathlib.Path(__file__).with_name("cifar10_lt.py"))
    c.dataset_name = "CIFAR-100-LT"
    c.data.source = "image_folder"
    c.data.train_pool = True  # train/ of the lossless part 1 is the LT pool (docstring)
    c.data.n_max = 500  # images per class of the full CIFAR-100 training set
    c.data.num_classes = 100
    c.data.mean = (0.5071, 0.4865, 0.4409)
    c.data.std = (0.2673, 0.2564, 0.2762)
    return c
