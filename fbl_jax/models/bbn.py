"""BBN's bilateral-branch CIFAR ResNet (Zhou et al., *BBN: Bilateral-Branch Network with Cumulative
Learning for Long-Tailed Visual Recognition*, CVPR 2020).

Layout as in the authors' code (megvii-research/BBN, formerly Megvii-Nanjing/BBN):
``lib/backbone/resnet_cifar.py`` (``BBN_ResNet_Cifar``, ``bbn_res32_cifar``),
``lib/net/network.py`` (``Network``: GAP module, one ``nn.Linear`` classifier on 2 x 64 features)
and ``lib/core/combiner.py`` (``bbn_mix``). For ResNet-32 (n = 5):

    shared:  conv3x3(16) + BN + ReLU -> stage1 (5 blocks, 16) -> stage2 (5 blocks, 32, stride 2)
             -> stage3 (the first n - 1 = 4 blocks, 64, stride 2)
    branch:  cb_block (conventional) and rb_block (re-balancing): one BasicBlock(64, 64) each,
             i.e. each branch is its own copy of the last residual block of stage 3
    head:    global average pool of each branch (64-d each), concatenated (128-d) -> linear

BasicBlocks with option-A shortcuts and Kaiming-normal conv init are those of
:mod:`fbl_jax.models.cifar_resnet` (BBN's resnet_cifar.py uses the same LDAM/Idelbayev block).
The classifier keeps PyTorch's default ``nn.Linear`` init (U(+-1/sqrt(fan_in)) for weight and
bias), as BBN's network.py builds it outside the backbone's ``_weights_init``.

Forward, following ``Combiner.bbn_mix`` and ``valid_model``:

- training, ``apply(v, x, train=True, images_rb=x_rb, mix=a)``: the shared trunk runs twice,
  once per stream (separate BatchNorm batch statistics, running statistics updated twice per
  step, as BBN's two ``model(...)`` calls do); f_cb = GAP(cb_block(trunk(x))), f_rb =
  GAP(rb_block(trunk(x_rb))); the feature is ``2 * concat(a * f_cb, (1 - a) * f_rb)`` (BBN's
  factor 2 included), then the classifier.
- evaluation, ``apply(v, x, train=False)`` (no ``images_rb``): one trunk pass, both branches on it,
  feature ``concat(f_cb, f_rb)`` -- BBN's ``valid_model`` path, which equals the training formula
  at a = 0.5 (2 * 0.5 = 1): both branches weighted 0.5/0.5.

Returns ``(logits, {"features": f, "features_cb": f_cb, "features_rb": f_rb})``; ``features`` is the
combined (mixed) 128-d feature, so feature-norm metrics are of the feature the classifier sees.

Parameter tree: ``stem``, ``stage{1,2,3}/block{i}``, ``cb_block``, ``rb_block``, ``head``. With
n = 1 (``bbn_resnet8``, for tests) stage 3 has no shared block and each branch block carries
stage 3's stride 2 and channel change.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fbl_jax.models.cifar_resnet import CIFAR_WIDTHS, CifarBasicBlock, CifarStage, CifarStem
from fbl_jax.models.heads import check_head, head_logits
from fbl_jax.models.layers import ConvBNModule, global_avg_pool, torch_linear_kernel_init

BBN_DEPTHS: dict[str, int] = {
    "bbn_resnet8": 1,  # not in BBN: a fast model for tests
    "bbn_resnet20": 3,
    "bbn_resnet32": 5,  # BBN's bbn_res32_cifar
}


class BBNCifarResNet(ConvBNModule):
    """BBN ResNet-(6n+2) for CIFAR; see the module docstring for the layout and the forward."""

    num_blocks: int
    num_classes: int
    head: str = "linear"
    widths: tuple[int, ...] = CIFAR_WIDTHS

    @nn.compact
    def __call__(
        self,
        images: jax.Array,
        train: bool = False,
        images_rb: jax.Array | None = None,
        mix: jax.Array | float | None = None,
    ) -> tuple[jax.Array, dict]:
        check_head(self.head)
        if self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        settings = self._settings()
        w1, w2, w3 = self.widths
        stem = CifarStem(w1, name="stem", **settings)
        stages = [
            CifarStage(w1, self.num_blocks, 1, name="stage1", **settings),
            CifarStage(w2, self.num_blocks, 2, name="stage2", **settings),
        ]
        if self.num_blocks > 1:
            stages.append(CifarStage(w3, self.num_blocks - 1, 2, name="stage3", **settings))
        branch_stride = 1 if self.num_blocks > 1 else 2
        cb_block = CifarBasicBlock(w3, branch_stride, name="cb_block", **settings)
        rb_block = CifarBasicBlock(w3, branch_stride, name="rb_block", **settings)

        def trunk(x):
            x = stem(x.astype(self.dtype), train)
            for stage in stages:
                x = stage(x, train)
            return x

        if images_rb is None:  # evaluation (and init): one trunk pass feeds both branches
            shared = trunk(images)
            f_cb = global_avg_pool(cb_block(shared, train))
            f_rb = global_avg_pool(rb_block(shared, train))
        else:  # training: each stream through the shared trunk and its own branch
            f_cb = global_avg_pool(cb_block(trunk(images), train))
            f_rb = global_avg_pool(rb_block(trunk(images_rb), train))
        a = jnp.asarray(0.5 if mix is None else mix, jnp.float32)
        features = 2.0 * jnp.concatenate([a * f_cb, (1.0 - a) * f_rb], axis=-1)
        logits = head_logits(
            features,
            self.head,
            self.num_classes,
            dtype=self.dtype,
            kernel_init=torch_linear_kernel_init(),
        )
        return logits, {"features": features, "features_cb": f_cb, "features_rb": f_rb}
