"""ImageNet-LT, ResNet-50 from scratch (paper Table 3: FBL 50.70, cross-entropy 44.51).

FBL form: the AUTHORS' CODE with A = 150 (their large-dataset setting), α = (epoch / (T − 10))²
per epoch. Lists: the standard OLTR/Decoupling ImageNet_LT_{train,val,test}.txt (train 115,846
images in 1,000 classes); `val` is the balanced minival used to pick the best checkpoint.

    fbl-train --config=configs/imagenet_lt.py --workdir=runs/imagenet_lt_fbl \
        --config.data.root=$HOME/data/imagenet \
        --config.data.train_list=$HOME/data/ImageNet_LT/ImageNet_LT_train.txt \
        --config.data.val_list=$HOME/data/ImageNet_LT/ImageNet_LT_val.txt \
        --config.data.test_list=$HOME/data/ImageNet_LT/ImageNet_LT_test.txt

180 epochs, global batch 512, SGD lr 0.2 momentum 0.9, lr ÷10 at epochs 120 and 160, no warm-up,
weight decay 5e-4 (the Decoupling/OLTR value; the FBL paper does not state it). tf.data pipeline:
random-resized crop 224 + flip; evaluation resize 256, centre crop 224.
"""

from fbl_jax.defaults import get_default_config


def get_config():
    c = get_default_config()
    c.dataset_name = "ImageNet-LT"
    c.num_epochs = 180
    c.batch_size = 512
    c.eval_batch_size = 512
    c.eval_every_epochs = 10
    c.checkpoint_every_epochs = 1
    c.log_every_steps = 50
    c.model.name = "resnet50"
    c.loss.name = "fbl"
    c.loss.fbl_form = "authors_code"
    c.loss.fbl_scale = 150.0
    c.loss.curriculum = "authors_code"
    c.loss.alpha_per_epoch = True
    c.loss.drw_start_epoch = 120
    c.optimizer.learning_rate = 0.2
    c.optimizer.weight_decay = 5e-4
    c.optimizer.warmup_epochs = 0.0
    c.optimizer.decay_epochs = (120, 160)
    c.optimizer.decay_multipliers = (0.1, 0.01)
    c.data.source = "split_list"
    c.data.num_classes = 1000
    c.data.imbalance_factor = None
    c.data.pipeline = "tf"
    c.data.image_size = 224
    c.data.mean = (0.485, 0.456, 0.406)
    c.data.std = (0.229, 0.224, 0.225)
    return c
