"""Places-LT, ImageNet-pretrained ResNet-152 (paper Table 3: FBL 38.66, cross-entropy 27.13).

As the authors did: start from torchvision's ImageNet ResNet-152 weights and train only the last
stage (layer4) and the classifier; conv1/bn1/layer1-3 stay fixed. FBL form: the AUTHORS' CODE with
A = 150, α = (epoch / (T − 10))² per epoch. Lists: Places_LT_{train,val,test}.txt (62,500 training
images, 365 classes, 4,980 to 5 per class); `val` (20 per class) is the minival.

    python -c "import torch, torchvision, numpy as np; \
      sd = torchvision.models.resnet152(weights='IMAGENET1K_V1').state_dict(); \
      np.savez('resnet152.npz', **{k: v.numpy() for k, v in sd.items()})"
    fbl-train --config=configs/places_lt.py --workdir=runs/places_lt_fbl \
        --config.model.pretrained=resnet152.npz --config.data.root=$HOME/data/places365 \
        --config.data.train_list=$HOME/data/Places_LT/Places_LT_train.txt \
        --config.data.val_list=$HOME/data/Places_LT/Places_LT_val.txt \
        --config.data.test_list=$HOME/data/Places_LT/Places_LT_test.txt
"""

import pathlib

from fbl_jax.defaults import config_from_file


def get_config():
    c = config_from_file(pathlib.Path(__file__).with_name("imagenet_lt.py"))
    c.dataset_name = "Places-LT"
    c.model.name = "resnet152"
    c.model.freeze = ("conv1", "bn1", "layer1", "layer2", "layer3")
    c.model.pretrained_skip_head = True
    c.data.num_classes = 365
    return c
