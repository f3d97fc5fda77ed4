"""iNaturalist 2018, ResNet-50 from scratch (paper Table 3: FBL 69.90, cross-entropy 63.80).

FBL form: the AUTHORS' CODE with A = 150, α = (epoch / (T − 10))² per epoch. Lists: the standard
iNaturalist18_{train,val}.txt (437,513 training images, 8,142 classes). iNat has no separate test
set: as in every published iNat-LT number, the official val list is the test split; the best-
checkpoint choice is therefore reported but not used for the headline number (set
`--config.data.val_list` to a held-out list of your own to select on it).

    fbl-train --config=configs/inat2018.py --workdir=runs/inat_fbl \
        --config.data.root=$HOME/data/inat2018 \
        --config.data.train_list=$HOME/data/iNaturalist18/iNaturalist18_train.txt \
        --config.data.test_list=$HOME/data/iNaturalist18/iNaturalist18_val.txt
"""

import pathlib

from fbl_jax.defaults import config_from_file


def get_config():
    c = config_from_file(pathlib.Path(__file__).with_name("imagenet_lt.py"))
    c.dataset_name = "iNaturalist 2018"
    c.data.num_classes = 8142
    c.data.mean = (0.466, 0.471, 0.380)
    c.data.std = (0.195, 0.194, 0.192)
    return c
