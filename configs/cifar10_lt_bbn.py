"""CIFAR-10-LT, BBN (Zhou et al., CVPR 2020) with BBN's own CIFAR recipe (FBL paper Table 2 quotes
BBN at 79.82 top-1 for IF 100, 81.18 for IF 50).

Recipe from the authors' configs/cifar10.yaml (megvii-research/BBN, formerly Megvii-Nanjing/BBN):
bbn_res32_cifar backbone, GAP, one FC classifier with bias, cross-entropy, combiner bbn_mix
(α = 1 − ((epoch − 1) / 200)², fbl_jax/bbn.py), the re-balancing stream from the reversed sampler
(DUAL_SAMPLER 'reverse'), 200 epochs, batch 128, SGD lr 0.1, momentum 0.9, NESTEROV (BBN's
get_optimizer), weight decay 2e-4, 5 warm-up epochs (per epoch, below), lr × 0.01 at LR_STEP 120
and × 0.0001 at 160. BBN calls scheduler.step() before each 1-based epoch, so its drops act from
the 120th and 160th epoch, i.e. this project's 0-based epochs 119 and 159 — hence
decay_epochs=(119, 159).

Where it differs from the FBL protocol (configs/cifar10_lt.py): model (BBN's two-branch ResNet-32,
0.54 M parameters vs 0.46 M), loss (CE on the α-mixed bilateral feature instead of FBL), batch 128
(FBL: 64), Nesterov momentum, lr drops at epochs 119/159 (FBL: 160/180), and a second,
reversed-sampled input stream. Kept from this project's protocol rather than BBN's code: the best
checkpoint is chosen on the balanced minival (BBN's code keeps the best epoch on the test set,
evaluated every epoch), and the warm-up's first stairs. BBN's WarmupMultiStepLR is stepped once per
epoch, so its warm-up is a staircase too: lr × (1/3 + 2/3 · e/5) in 1-based epoch e < 5, i.e. 7/15,
9/15, 11/15, 13/15 in this project's epochs 0–3 and the full lr from epoch 4.
optimizer.warmup_per_epoch=True keeps that shape (one lr per epoch, full from epoch 4) with the
stairs 1/5, 2/5, 3/5, 4/5 (the LDAM/FBL staircase); BBN's starting factor 1/3 is not reproduced, and
a per-step ramp would differ more. BBN's yaml sets RATIO 0.02 (IF 50); this config defaults to IF
100 like cifar10_lt.py: --config.data.imbalance_factor=50 for BBN's own setting. Evaluation uses
both branches with weight 0.5/0.5 (BBN's valid_model).

Data: the LOSSLESS CIFAR-10 copy, as configs/cifar10_lt.py says:

    mkdir -p $HOME/data/cifar10
    tar -xzf ../shared/data/cifar10-lossless/cifar10-lossless.tar.gz -C $HOME/data/cifar10
    fbl-train --config=configs/cifar10_lt_bbn.py --workdir=runs/c10lt_if100_bbn \
        --config.data.root=$HOME/data/cifar10 --config.data.cache_dir=$HOME/data/cache
"""

import pathlib

from fbl_jax.defaults import config_from_file


def get_config():
    c = config_from_file(pathlib.Path(__file__).with_name("cifar10_lt.py"))
    c.num_epochs = 200
    c.batch_size = 128
    c.model.name = "bbn_resnet32"
    c.model.head = "linear"
    c.loss.name = "ce"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 2e-4
    c.optimizer.schedule = "step"
    c.optimizer.warmup_epochs = 5.0
    c.optimizer.warmup_per_epoch = True  # BBN steps its warm-up per epoch too (docstring)
    c.optimizer.decay_epochs = (119, 159)
    c.optimizer.decay_multipliers = (0.01, 0.0001)
    c.data.sampler = "instance"
    c.data.second_sampler = "reversed"
    return c
