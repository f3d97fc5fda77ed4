"""CIFAR-100-LT, ResNet-32, the LDAM/FBL protocol (paper Table 2: FBL 45.22 at IF 100, 50.65 at IF 50;
cross-entropy 39.43 / 44.20).

FBL form: the AUTHORS' CODE (A = 60, α = (epoch / (T − 10))², per epoch); everything else as in
configs/cifar10_lt.py. No CIFAR-100 image folder ships here, so the default source is tfds
(prepare it once with `tfds build cifar100 --data_dir=DIR` on a machine with internet access):

    fbl-train --config=configs/cifar100_lt.py --workdir=runs/c100lt_if100_fbl \
        --config.data.data_dir=DIR
    # IF 50:             --config.data.imbalance_factor=50
    # from image folder: --config.data.source=image_folder --config.data.root=DIR
"""

import pathlib

from fbl_jax.defaults import config_from_file


def get_config():
    c = config_from_file(pathlib.Path(__file__).with_name("cifar10_lt.py"))
    c.dataset_name = "CIFAR-100-LT"
    c.data.source = "tfds"
    c.data.name = "cifar100"
    c.data.num_classes = 100
    c.data.mean = (0.5071, 0.4865, 0.4409)
    c.data.std = (0.2673, 0.2564, 0.2762)
    return c
