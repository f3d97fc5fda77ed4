"""Tests for fbl_jax.models: architecture, init, BatchNorm, heads, torchvision import, bf16.

References are independent: parameter counts derived by hand, NumPy convolutions in PyTorch's
OIHW layout with explicit padding, NumPy BatchNorm and cosine formulas.
"""

from __future__ import annotations

import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fbl_jax.models import (
    MODEL_NAMES,
    export_to_torch,
    get_model,
    load_state_dict_file,
    load_torch_weights,
    option_a_shortcut,
    stage_of,
    torch_shapes,
)
from fbl_jax.models.cifar_resnet import CifarBasicBlock, CifarResNet
from fbl_jax.models.heads import CosineHead
from fbl_jax.models.resnet import BasicBlock, ResNet

EPS = 1e-5


# ----------------------------------------------------------------------------- references


def np_conv_nchw(x: np.ndarray, w_oihw: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Direct cross-correlation as torch.nn.functional.conv2d (float64, symmetric zero pad)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    _, _, h, w = x.shape
    _, _, kh, kw = w_oihw.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((x.shape[0], w_oihw.shape[0], ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
            out += np.einsum("nchw,oc->nohw", patch, w_oihw[:, :, i, j].astype(np.float64))
    return out


def np_conv_nhwc(x: np.ndarray, kernel_hwio: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Same on NHWC input with a flax HWIO kernel (transposed to OIHW here)."""
    out = np_conv_nchw(
        np.transpose(x, (0, 3, 1, 2)), np.transpose(kernel_hwio, (3, 2, 0, 1)), stride, pad
    )
    return np.transpose(out, (0, 2, 3, 1))


def np_bn(x, mean, var, gamma, beta, axis=-1):
    shape = [1] * x.ndim
    shape[axis] = -1
    r = lambda a: np.asarray(a, np.float64).reshape(shape)  # noqa: E731
    return (x - r(mean)) / np.sqrt(r(var) + EPS) * r(gamma) + r(beta)


def np_maxpool_nchw(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    ho, wo = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    out = np.full(x.shape[:2] + (ho, wo), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(
                out, x[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
            )
    return out


def hand_cifar_param_count(n: int, num_classes: int, bias: bool = True) -> int:
    """conv 3·3·cin·cout (no bias), BN γ+β per channel, Linear W (+ b)."""
    total = 3 * 3 * 3 * 16 + 2 * 16
    cin = 16
    for cout in (16, 32, 64):
        for _ in range(n):
            total += 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout
            cin = cout
    return total + 64 * num_classes + (num_classes if bias else 0)


def n_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def shapes_of(model, hw: int = 32):
    x = jnp.zeros((1, hw, hw, 3), jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


# ----------------------------------------------------------------------------- fixtures


def fill_like(shapes, seed: int = 0):
    """Variables with the given structure filled from NumPy (JAX's RNG compiles slowly on CPU).

    Non-trivial values everywhere (random BN gamma/beta and running stats) so eval-mode
    references exercise every term.
    """
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            return (rng.normal(size=s.shape) * np.sqrt(2 / np.prod(s.shape[:-1]))).astype(s.dtype)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, s.shape).astype(s.dtype)
        return (0.1 * rng.normal(size=s.shape)).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(fill, flax.core.unfreeze(shapes))


def numpy_variables(model, hw: int, seed: int = 0):
    return fill_like(shapes_of(model, hw), seed)


def rbg_key(seed: int) -> jax.Array:
    """A key whose random bits compile fast on CPU (threefry takes seconds per shape there)."""
    return jax.random.key(seed, impl="rbg")


CIFAR_X_SHAPE = (4, 8, 8, 3)  # one input shape for every CIFAR forward test: shared compiles


def make_runner(model):
    """jit(apply) returning ((logits, aux), collections) with intermediates captured."""

    def run(variables, x, train):
        mutable = ["batch_stats", "intermediates"] if train else ["intermediates"]
        return model.apply(variables, x, train=train, capture_intermediates=True, mutable=mutable)

    return jax.jit(run, static_argnames="train")


@pytest.fixture(scope="module")
def cifar20():
    model = get_model("resnet20", 10)
    return model, numpy_variables(model, 8, seed=1), make_runner(model)


@pytest.fixture(scope="module")
def rn18():
    model = get_model("resnet18", 1000)
    return model, numpy_variables(model, 32, seed=2)


def random_torchvision_sd(variables, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sd = {}
    for k, shape in torch_shapes(variables).items():
        a = rng.normal(size=shape).astype(np.float32)
        sd[k] = np.abs(a) + 0.5 if k.endswith("running_var") else a * 0.1
    return sd


# ----------------------------------------------------------------------------- get_model


def test_get_model_rejects_bad_names_and_kwargs():
    with pytest.raises(ValueError, match="resnet32.*resnet50"):
        get_model("resnet33", 10)
    with pytest.raises(ValueError, match="'linear', 'cosine'"):
        get_model("resnet32", 10, head="mlp")
    with pytest.raises(ValueError, match="zero_init_residual"):
        get_model("resnet18", 10, zero_init_resid=True)
    with pytest.raises(ValueError, match="num_classes"):
        get_model("resnet32", 0)
    assert set(MODEL_NAMES) == {
        "resnet8", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
        "bbn_resnet8", "bbn_resnet20", "bbn_resnet32",
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    }  # fmt: skip


# ----------------------------------------------------------------------------- param counts


@pytest.mark.parametrize("num_classes", [10, 100])
def test_resnet32_param_count_matches_hand_derivation(num_classes):
    v = shapes_of(get_model("resnet32", num_classes))
    assert n_params(v["params"]) == hand_cifar_param_count(5, num_classes)
    assert set(v["params"]) == {"stem", "stage1", "stage2", "stage3", "head"}
    assert len(v["params"]["stage2"]) == 5
    vc = shapes_of(get_model("resnet32", num_classes, head="cosine"))
    assert n_params(vc["params"]) == hand_cifar_param_count(5, num_classes, bias=False)


def test_resnet32_reference_total():
    assert hand_cifar_param_count(5, 10) == 464_154
    assert n_params(shapes_of(get_model("resnet32", 10))["params"]) == 464_154
    # resnet110 (n = 18) with the same formula: a deeper check of block counting.
    assert n_params(shapes_of(get_model("resnet110", 10), 8)["params"]) == (
        hand_cifar_param_count(18, 10)
    )


def test_resnet50_param_count_and_torchvision_names():
    v = shapes_of(get_model("resnet50", 1000))
    assert n_params(v["params"]) == 25_557_032
    shapes = torch_shapes(v)
    known = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_mean": (64,),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.running_var": (256,),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.bn3.weight": (1024,),
        "layer4.2.bn3.running_var": (2048,),
        "fc.weight": (1000, 2048),
        "fc.bias": (1000,),
    }
    for k, shape in known.items():
        assert shapes[k] == shape, k
    # torchvision resnet50 state dict: 320 keys, of which 53 are num_batches_tracked.
    assert len(shapes) == 320 - 53
    assert "layer1.1.downsample.0.weight" not in shapes


# ----------------------------------------------------------------------------- forward / heads


def test_cifar_features_are_pooled_pre_head_activations(cifar20):
    _, variables, run = cifar20
    x = jax.random.normal(jax.random.key(3), CIFAR_X_SHAPE)
    (logits, aux), inter = run(variables, x, train=False)
    f = np.asarray(aux["features"])
    assert logits.shape == (4, 10) and f.shape == (4, 64)
    assert logits.dtype == jnp.float32 and f.dtype == jnp.float32
    last = np.asarray(inter["intermediates"]["stage3"]["__call__"][0])
    assert last.shape == (4, 2, 2, 64)
    np.testing.assert_allclose(f, last.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    w = np.asarray(variables["params"]["head"]["kernel"], np.float64)
    b = np.asarray(variables["params"]["head"]["bias"], np.float64)
    np.testing.assert_allclose(np.asarray(logits), f @ w + b, rtol=1e-5, atol=1e-5)


def test_cosine_head_matches_numpy_cosine():
    model = get_model("resnet20", 10, head="cosine")
    variables = numpy_variables(model, 8, seed=5)
    assert set(variables["params"]["head"]) == {"kernel"}
    x = jax.random.normal(jax.random.key(4), CIFAR_X_SHAPE)
    logits, aux = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    f = np.asarray(aux["features"], np.float64)
    w = np.asarray(variables["params"]["head"]["kernel"], np.float64)
    ref = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
    np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-5)
    assert np.all(np.abs(np.asarray(logits)) <= 1 + 1e-6)
    # LDAM's NormedLinear init: unit-norm class columns.
    w0 = CosineHead(7).init(rbg_key(0), jnp.ones((1, 64)))["params"]["kernel"]
    assert w0.shape == (64, 7)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(w0), axis=0), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------- BatchNorm


def test_batchnorm_train_uses_batch_stats_and_updates_running_stats(cifar20):
    _, variables, run = cifar20
    rng = np.random.default_rng(0)
    variables = flax.core.unfreeze(jax.tree_util.tree_map(np.asarray, variables))
    bn_p = variables["params"]["stem"]["bn"]
    bn_p["scale"] = rng.uniform(0.5, 1.5, 16).astype(np.float32)
    bn_p["bias"] = rng.normal(size=16).astype(np.float32)
    old_mean = rng.normal(size=16).astype(np.float32)
    old_var = rng.uniform(0.5, 2.0, 16).astype(np.float32)
    variables["batch_stats"]["stem"]["bn"] = {"mean": old_mean, "var": old_var}
    x = rng.normal(size=CIFAR_X_SHAPE).astype(np.float32)

    (logits, _), new = run(variables, x, train=True)
    conv_ref = np_conv_nhwc(x, variables["params"]["stem"]["conv"]["kernel"], 1, 1)
    got_conv = np.asarray(new["intermediates"]["stem"]["conv"]["__call__"][0])
    np.testing.assert_allclose(got_conv, conv_ref, rtol=1e-4, atol=1e-4)
    mu, var = conv_ref.mean(axis=(0, 1, 2)), conv_ref.var(axis=(0, 1, 2))
    bn_ref = np_bn(conv_ref, mu, var, bn_p["scale"], bn_p["bias"])
    got_bn = np.asarray(new["intermediates"]["stem"]["bn"]["__call__"][0])
    np.testing.assert_allclose(got_bn, bn_ref, rtol=1e-3, atol=1e-3)
    # PyTorch momentum 0.1: new = 0.9 * old + 0.1 * batch statistic.
    stats = new["batch_stats"]["stem"]["bn"]
    np.testing.assert_allclose(stats["mean"], 0.9 * old_mean + 0.1 * mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 * old_var + 0.1 * var, rtol=1e-4, atol=1e-4)

    # Running stats do not affect train mode, but do affect eval mode.
    changed = jax.tree_util.tree_map(lambda a: a * 3.0 + 1.0, variables["batch_stats"])
    other = {"params": variables["params"], "batch_stats": changed}
    (logits2, _), _ = run(other, x, train=True)
    np.testing.assert_allclose(np.asarray(logits2), np.asarray(logits), rtol=1e-5, atol=1e-5)
    (e1, _), _ = run(variables, x, train=False)
    (e2, _), _ = run(other, x, train=False)
    assert np.max(np.abs(np.asarray(e1) - np.asarray(e2))) > 1e-2


# ----------------------------------------------------------------------------- option-A shortcut


def test_option_a_shortcut_subsamples_and_pads_both_sides():
    x = np.arange(1 * 4 * 4 * 16, dtype=np.float32).reshape(1, 4, 4, 16) + 1.0
    y = np.asarray(option_a_shortcut(jnp.asarray(x), 32, 2))
    assert y.shape == (1, 2, 2, 32)
    assert np.all(y[..., :8] == 0) and np.all(y[..., 24:] == 0)
    for i in range(2):
        for j in range(2):
            np.testing.assert_array_equal(y[0, i, j, 8:24], x[0, 2 * i, 2 * j, :])
    with pytest.raises(ValueError, match="even channel increase"):
        option_a_shortcut(jnp.asarray(x), 17, 2)


def test_cifar_downsampling_block_matches_numpy():
    """Stride-2 block: conv(pad 1, stride 2)-BN-ReLU-conv-BN + option-A shortcut, eval mode."""
    block = CifarBasicBlock(32, stride=2)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
    v = fill_like(jax.eval_shape(lambda: block.init(jax.random.key(0), jnp.zeros(x.shape))))
    for bn in ("bn1", "bn2"):
        v["params"][bn] = {
            "scale": rng.uniform(0.5, 1.5, 32).astype(np.float32),
            "bias": rng.normal(size=32).astype(np.float32),
        }
        v["batch_stats"][bn] = {
            "mean": rng.normal(size=32).astype(np.float32),
            "var": rng.uniform(0.5, 2, 32).astype(np.float32),
        }
    p, s = v["params"], v["batch_stats"]
    y = np_conv_nhwc(x, np.asarray(p["conv1"]["kernel"]), 2, 1)
    y = np.maximum(np_bn(y, **_bn_args(p["bn1"], s["bn1"])), 0)
    y = np_conv_nhwc(y, np.asarray(p["conv2"]["kernel"]), 1, 1)
    y = np_bn(y, **_bn_args(p["bn2"], s["bn2"]))
    shortcut = np.zeros((2, 4, 4, 32))
    shortcut[..., 8:24] = x[:, ::2, ::2, :]
    ref = np.maximum(y + shortcut, 0)
    got = np.asarray(block.apply(v, jnp.asarray(x), train=False))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # Option A has no parameters: only two convs and two BNs.
    assert set(v["params"]) == {"conv1", "bn1", "conv2", "bn2"}


def _bn_args(p, s):
    return dict(mean=s["mean"], var=s["var"], gamma=p["scale"], beta=p["bias"])


# ----------------------------------------------------------------------------- init


def _check_he_normal(w: np.ndarray, fan: int, rel_tol: float):
    std = np.sqrt(2.0 / fan)
    assert abs(w.std() / std - 1) < rel_tol, (w.std(), std)
    assert abs(w.mean()) < 4 * std / np.sqrt(w.size)


def test_cifar_kaiming_fan_in_init():
    # One block per stage (the init code path is the same for any depth) keeps the init compile small.
    model = CifarResNet(num_blocks=1, num_classes=10)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 8, 8, 3)), train=False))(rbg_key(3))
    p = jax.tree_util.tree_map(np.asarray, variables["params"])
    _check_he_normal(p["stem"]["conv"]["kernel"], 3 * 3 * 3, 0.15)
    s3 = p["stage3"]["block0"]["conv2"]["kernel"].ravel()
    _check_he_normal(s3, 9 * 64, 0.03)
    # Untruncated normal: ~4.55% of samples beyond 2 sigma (a 2-sigma truncation gives 0).
    frac = np.mean(np.abs(s3) > 2 * np.sqrt(2 / 576))
    assert 0.035 < frac < 0.056, frac
    _check_he_normal(p["stage3"]["block0"]["conv1"]["kernel"], 9 * 32, 0.03)  # fan_in, not out
    _check_he_normal(p["stage2"]["block0"]["conv1"]["kernel"], 9 * 16, 0.05)
    _check_he_normal(p["head"]["kernel"], 64, 0.15)  # kaiming_normal_ on Linear too
    b = p["head"]["bias"]
    assert np.all(np.abs(b) <= 1 / 8) and np.std(b) > 0  # PyTorch default bias init
    bn = p["stage1"]["block0"]["bn1"]
    assert np.all(bn["scale"] == 1) and np.all(bn["bias"] == 0)
    stats = variables["batch_stats"]["stage1"]["block0"]["bn1"]
    assert np.all(np.asarray(stats["mean"]) == 0) and np.all(np.asarray(stats["var"]) == 1)


def test_imagenet_init_fan_out_bn_and_zero_init_residual():
    # Stem + head only (no blocks), then one downsampling block: the ResNet init code paths.
    stem_head = ResNet("basic", (0, 0, 0, 0), num_classes=10)
    p = stem_head.init(rbg_key(4), jnp.zeros((1, 16, 16, 3)), train=False)["params"]
    p = jax.tree_util.tree_map(np.asarray, p)
    _check_he_normal(p["conv1"]["kernel"], 7 * 7 * 64, 0.05)  # fan_out = 7·7·64
    assert np.all(p["bn1"]["scale"] == 1) and np.all(p["bn1"]["bias"] == 0)
    bound = 1 / np.sqrt(64)  # torch nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.all(np.abs(p["head"]["kernel"]) <= bound) and p["head"]["kernel"].std() > bound / 3
    assert np.all(np.abs(p["head"]["bias"]) <= bound) and p["head"]["bias"].std() > 0

    block = BasicBlock(128, stride=2)
    p = block.init(rbg_key(5), jnp.zeros((1, 4, 4, 64)))["params"]
    p = jax.tree_util.tree_map(np.asarray, p)
    # conv1 (64 -> 128) and conv2 (128 -> 128) share fan_out = 3·3·128 (fan_in would differ).
    _check_he_normal(p["conv1"]["kernel"], 9 * 128, 0.03)
    _check_he_normal(p["conv2"]["kernel"], 9 * 128, 0.03)
    _check_he_normal(p["downsample_conv"]["kernel"], 128, 0.05)
    assert np.all(p["bn2"]["scale"] == 1) and np.all(p["downsample_bn"]["bias"] == 0)

    zero = BasicBlock(8, zero_init_residual=True)
    v = zero.init(rbg_key(0), jnp.zeros((1, 4, 4, 8)))
    assert np.all(np.asarray(v["params"]["bn2"]["scale"]) == 0)
    assert np.all(np.asarray(v["params"]["bn1"]["scale"]) == 1)


# ----------------------------------------------------------------------------- stage_of


def test_stage_of(rn18):
    assert stage_of("conv1/kernel") == "stem"
    assert stage_of(("params", "bn1", "scale")) == "stem"
    assert stage_of("layer1_0/downsample_bn/mean") == "layer1"
    assert stage_of(("batch_stats", "layer4_1", "bn2", "var")) == "layer4"
    assert stage_of("head/bias") == "head"
    assert stage_of("stage2/block0/conv1/kernel") == "stage2"
    with pytest.raises(ValueError, match="fc"):
        stage_of("fc/weight")
    _, variables = rn18
    counts: dict[str, int] = {}
    for path, _ in jax.tree_util.tree_flatten_with_path(variables["params"])[0]:
        counts[stage_of(path)] = counts.get(stage_of(path), 0) + 1
    # stem: conv1 + bn1 (2); each resnet18 layer: 2 blocks x (2 convs + 2 BN x 2) (+ downsample 3).
    assert counts == {"stem": 3, "layer1": 12, "layer2": 15, "layer3": 15, "layer4": 15, "head": 2}


# ----------------------------------------------------------------------------- torchvision import


def test_torchvision_import_export_roundtrip_and_stem(rn18):
    model, variables = rn18
    sd = random_torchvision_sd(variables)
    known = {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.running_var": (128,),
        "layer4.1.bn2.running_var": (512,),
        "fc.weight": (1000, 512),
        "fc.bias": (1000,),
    }
    for k, shape in known.items():
        assert sd[k].shape == shape, k
    assert len(sd) == 122 - 20  # torchvision resnet18: 122 keys incl. 20 num_batches_tracked
    with_counters = dict(sd)
    for k in [k for k in sd if k.endswith("running_mean")]:
        with_counters[k.replace("running_mean", "num_batches_tracked")] = np.array(7)
    loaded = load_torch_weights(variables, with_counters)
    back = export_to_torch(loaded)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)

    # The stem (conv1 7x7/2 pad 3 -> BN eval -> ReLU -> maxpool 3x3/2 pad 1) from torch layout.
    x = np.random.default_rng(5).normal(size=(2, 32, 32, 3)).astype(np.float32)
    (logits, aux), inter = model.apply(loaded, x, train=False, mutable=["intermediates"])
    xc = np.transpose(x, (0, 3, 1, 2))
    y = np_conv_nchw(xc, sd["conv1.weight"], 2, 3)
    y = np_bn(y, sd["bn1.running_mean"], sd["bn1.running_var"], sd["bn1.weight"], sd["bn1.bias"], 1)
    y = np_maxpool_nchw(np.maximum(y, 0), 3, 2, 1)
    got = np.transpose(np.asarray(inter["intermediates"]["stem"][0]), (0, 3, 1, 2))
    assert got.shape == (2, 64, 8, 8)
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-4)
    # fc in torch layout: logits = f @ W.T + b.
    f = np.asarray(aux["features"], np.float64)
    ref = f @ sd["fc.weight"].T.astype(np.float64) + sd["fc.bias"]
    np.testing.assert_allclose(np.asarray(logits), ref, rtol=1e-4, atol=1e-4)


def test_torchvision_import_errors_and_skip_head(rn18):
    _, variables = rn18
    sd = random_torchvision_sd(variables, seed=1)
    missing = {k: v for k, v in sd.items() if k != "layer3.1.bn1.running_var"}
    with pytest.raises(ValueError, match=r"missing.*layer3\.1\.bn1\.running_var"):
        load_torch_weights(variables, missing)
    with pytest.raises(ValueError, match=r"unexpected.*layer5\.0\.conv1\.weight"):
        load_torch_weights(variables, {**sd, "layer5.0.conv1.weight": np.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected.*foo\.num_batches_tracked"):
        load_torch_weights(variables, {**sd, "foo.num_batches_tracked": np.array(1)})
    bad = {**sd, "layer2.1.conv2.weight": np.zeros((128, 128, 1, 1), np.float32)}
    with pytest.raises(ValueError, match=r"layer2\.1\.conv2\.weight.*\(128, 128, 1, 1\)"):
        load_torch_weights(variables, bad)
    places = {**sd, "fc.weight": np.ones((365, 512), np.float32), "fc.bias": np.ones(365)}
    with pytest.raises(ValueError, match=r"fc\.weight"):
        load_torch_weights(variables, places)
    kept = load_torch_weights(variables, places, skip_head=True)
    np.testing.assert_array_equal(
        kept["params"]["head"]["kernel"], variables["params"]["head"]["kernel"]
    )
    np.testing.assert_array_equal(kept["params"]["layer1_0"]["conv1"]["kernel"],
                                  np.transpose(sd["layer1.0.conv1.weight"], (2, 3, 1, 0)))  # fmt: skip
    no_fc = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    kept2 = load_torch_weights(variables, no_fc, skip_head=True)
    np.testing.assert_array_equal(
        kept2["params"]["head"]["bias"], variables["params"]["head"]["bias"]
    )


def test_load_state_dict_file(tmp_path, monkeypatch):
    sd = {"conv1.weight": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3), "fc.bias": np.ones(2)}
    np.savez(tmp_path / "w.npz", **sd)
    got = load_state_dict_file(tmp_path / "w.npz")
    assert set(got) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(got[k], sd[k])
    with pytest.raises(ValueError, match=r"\.h5.*\.npz"):
        load_state_dict_file(tmp_path / "w.h5")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_state_dict_file(tmp_path / "nope.npz")
    (tmp_path / "w.safetensors").write_bytes(b"x")
    (tmp_path / "w.pth").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"safetensors.*\.npz"):
        load_state_dict_file(tmp_path / "w.safetensors")
    with pytest.raises(ImportError, match=r"torch.*\.npz"):
        load_state_dict_file(tmp_path / "w.pth")


def np_ldam_resnet_cifar(sd: dict, x_nchw: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """LDAM's resnet_cifar.py forward in eval mode, in NumPy from its state dict: conv1/bn1/relu,
    layerS.B BasicBlocks with the option-A shortcut (x[:, :, ::2, ::2], planes // 4 zero
    channels each side), global average pool, then nn.Linear. Returns (logits, features)."""

    def bn(y, p):
        w = (sd[f"{p}.{k}"] for k in ("running_mean", "running_var", "weight", "bias"))
        return np_bn(y, *w, axis=1)

    relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
    out = relu(bn(np_conv_nchw(x_nchw, sd["conv1.weight"], 1, 1), "bn1"))
    in_planes = 16
    for s, planes in enumerate((16, 32, 64), start=1):
        for b in range(n):
            stride, p = (2 if s > 1 and b == 0 else 1), f"layer{s}.{b}"
            y = relu(bn(np_conv_nchw(out, sd[f"{p}.conv1.weight"], stride, 1), f"{p}.bn1"))
            y = bn(np_conv_nchw(y, sd[f"{p}.conv2.weight"], 1, 1), f"{p}.bn2")
            if stride != 1 or in_planes != planes:
                pad = planes // 4
                out = np.pad(out[:, :, ::2, ::2], ((0, 0), (pad, pad), (0, 0), (0, 0)))
            out, in_planes = relu(y + out), planes
    features = out.mean(axis=(2, 3))
    return features @ sd["linear.weight"].T + sd["linear.bias"], features


def ldam_resnet_cifar_keys(n: int) -> set[str]:
    """The state-dict keys of LDAM's resnet_cifar.py ResNet (6n + 2 layers), written out."""
    bn = ("weight", "bias", "running_mean", "running_var")
    keys = {"conv1.weight", "linear.weight", "linear.bias"} | {f"bn1.{k}" for k in bn}
    for s in (1, 2, 3):
        for b in range(n):
            keys |= {f"layer{s}.{b}.conv{i}.weight" for i in (1, 2)}
            keys |= {f"layer{s}.{b}.bn{i}.{k}" for i in (1, 2) for k in bn}
    return keys


def test_cifar_resnet_exports_to_ldam_resnet_cifar_and_back(cifar20):
    model, variables, run = cifar20
    sd = export_to_torch(variables)
    assert set(sd) == ldam_resnet_cifar_keys(3)  # resnet20: 3 blocks a stage
    assert sd["layer2.0.conv1.weight"].shape == (32, 16, 3, 3)
    assert sd["linear.weight"].shape == (10, 64)
    assert torch_shapes(variables) == {k: v.shape for k, v in sd.items()}
    x = np.random.default_rng(3).normal(size=CIFAR_X_SHAPE).astype(np.float32)
    (logits, aux), _ = run(variables, x, False)
    want_logits, want_features = np_ldam_resnet_cifar(sd, np.transpose(x, (0, 3, 1, 2)), 3)
    np.testing.assert_allclose(aux["features"], want_features, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-4)

    # An LDAM-DRW / FBL checkpoint loads: counters ignored, every value back where it came from.
    counters = {k.replace("running_mean", "num_batches_tracked"): np.array(9) for k in sd
                if k.endswith("running_mean")}  # fmt: skip
    zeros = jax.tree_util.tree_map(np.zeros_like, variables)
    back = load_torch_weights(zeros, {**sd, **counters})
    for (path, got), want in zip(
        jax.tree_util.tree_leaves_with_path(back), jax.tree_util.tree_leaves(variables)
    ):
        np.testing.assert_array_equal(got, want, err_msg=jax.tree_util.keystr(path))

    cifar100_head = {
        **sd,
        "linear.weight": np.ones((100, 64), np.float32),
        "linear.bias": np.ones(100),
    }
    with pytest.raises(ValueError, match=r"linear\.weight.*\(100, 64\)"):
        load_torch_weights(zeros, cifar100_head)
    kept = load_torch_weights(zeros, cifar100_head, skip_head=True)
    np.testing.assert_array_equal(kept["params"]["head"]["bias"], np.zeros(10))
    np.testing.assert_array_equal(kept["params"]["stem"]["conv"]["kernel"],
                                  np.transpose(sd["conv1.weight"], (2, 3, 1, 0)))  # fmt: skip


def test_cifar_cosine_head_exports_as_ldam_normed_linear():
    model = get_model("resnet20", 10, head="cosine")
    variables = numpy_variables(model, 8, seed=4)
    sd = export_to_torch(variables)
    assert set(sd) == ldam_resnet_cifar_keys(3) - {"linear.bias"}
    kernel = np.asarray(variables["params"]["head"]["kernel"])
    # NormedLinear keeps its weight as (in_features, out_features): not transposed
    np.testing.assert_array_equal(sd["linear.weight"], kernel)
    assert torch_shapes(variables)["linear.weight"] == (64, 10)
    f = np.random.default_rng(5).normal(size=(3, 64)).astype(np.float32)
    w = sd["linear.weight"]
    want = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
    got = CosineHead(10).apply({"params": variables["params"]["head"]}, f)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    back = load_torch_weights(jax.tree_util.tree_map(np.zeros_like, variables), sd)
    np.testing.assert_array_equal(back["params"]["head"]["kernel"], kernel)


@pytest.mark.parametrize("skip_head", [False, True])
def test_a_run_starts_from_an_ldam_checkpoint_file(tmp_path, skip_head):
    """config.model.pretrained: a CIFAR run's initial weights from a resnet_cifar state dict."""
    import optax

    from fbl_jax.defaults import get_default_config
    from fbl_jax.train.run_setup import init_train_state

    model = get_model("resnet20", 10)
    sd = export_to_torch(numpy_variables(model, 8, seed=6))
    np.savez(tmp_path / "ldam.npz", **sd)
    config = get_default_config()
    config.model.pretrained = str(tmp_path / "ldam.npz")
    config.model.pretrained_skip_head = skip_head
    state, _ = init_train_state(config, model, (8, 8, 3), optax.constant_schedule(0.1))
    np.testing.assert_array_equal(state.params["stage3"]["block2"]["conv2"]["kernel"],
                                  np.transpose(sd["layer3.2.conv2.weight"], (2, 3, 1, 0)))  # fmt: skip
    np.testing.assert_array_equal(state.batch_stats["stem"]["bn"]["var"], sd["bn1.running_var"])
    head = np.asarray(state.params["head"]["kernel"])
    assert np.array_equal(head, sd["linear.weight"].T) != skip_head  # a fresh head if skipped


def test_training_checkpoints_of_the_pytorch_codes_unwrap(tmp_path, monkeypatch):
    """LDAM-DRW saves {"state_dict": ...}, FBL's code {"model_state_dict": ...}, beside the epoch,
    the best accuracy and the optimizer: the model's tensors are what loads."""

    class FakeTensor:
        dtype = "float32"

        def __init__(self, a):
            self.a = np.asarray(a, np.float32)

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    weights = {
        "conv1.weight": FakeTensor(np.ones((16, 3, 3, 3))),
        "linear.bias": FakeTensor([1, 2]),
    }
    saved = {}
    fake_torch = type(sys)("torch")
    fake_torch.Tensor, fake_torch.bfloat16 = FakeTensor, "bfloat16"
    fake_torch.load = lambda path, map_location, weights_only: saved[str(path)]
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    for wrapper in ("state_dict", "model_state_dict"):
        path = tmp_path / f"{wrapper}.pth.tar"
        path.write_bytes(b"x")
        saved[str(path)] = {"epoch": 200, "best_acc1": 82.5, wrapper: weights, "optimizer": {}}
        got = load_state_dict_file(path)
        assert set(got) == set(weights)
        np.testing.assert_array_equal(got["linear.bias"], [1.0, 2.0])


# ----------------------------------------------------------------------------- mixed precision


def test_bfloat16_compute_float32_params_and_outputs(cifar20):
    _, variables, run32 = cifar20
    model16 = get_model("resnet20", 10, dtype=jnp.bfloat16)
    run16 = make_runner(model16)
    x = jax.random.normal(jax.random.key(7), CIFAR_X_SHAPE)
    v16 = jax.eval_shape(lambda: model16.init(jax.random.key(1), x, train=False))
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(v16))
    (l32, a32), _ = run32(variables, x, train=False)
    (l16, a16), inter = run16(variables, x, train=False)
    assert l16.dtype == jnp.float32 and a16["features"].dtype == jnp.float32
    # It really computes in bf16: the stem conv output is bfloat16.
    assert inter["intermediates"]["stem"]["conv"]["__call__"][0].dtype == jnp.bfloat16
    scale = float(np.max(np.abs(np.asarray(l32))))
    np.testing.assert_allclose(np.asarray(l16), np.asarray(l32), atol=0.05 * scale + 0.02)
    np.testing.assert_allclose(
        np.asarray(a16["features"]), np.asarray(a32["features"]), rtol=0.05, atol=0.05
    )
    # Training in bf16 keeps float32 running statistics close to the float32 update.
    (_, _), new16 = run16(variables, x, train=True)
    (_, _), new32 = run32(variables, x, train=True)
    for a16_, a32_ in zip(
        jax.tree_util.tree_leaves(new16["batch_stats"]),
        jax.tree_util.tree_leaves(new32["batch_stats"]),
    ):
        assert a16_.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(a16_), np.asarray(a32_), rtol=0.05, atol=0.05)
