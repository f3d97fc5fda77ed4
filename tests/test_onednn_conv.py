"""oneDNN convolutions (models/onednn_conv.py): values and both gradients against NumPy written
from the convolution's formula, under pmap and vmap, the model's parameters and gradients against
XLA's convolutions, and the errors for what it does not run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_helpers import tiny_config

from fbl_jax.defaults import ConfigError
from fbl_jax.models import get_model
from fbl_jax.models import onednn_conv as oc
from fbl_jax.models.layers import resolve_conv_impl
from fbl_jax.train.run_setup import check_run_config

NHWC = ("NHWC", "HWIO", "NHWC")


def np_conv(x, w, stride, pad):
    """y[n,i,j,o] = sum_{a,b,c} xpad[n, i*s+a, j*s+b, c] * w[a,b,c,o]."""
    kh, kw, _, _ = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh = (xp.shape[1] - kh) // stride + 1
    ow = (xp.shape[2] - kw) // stride + 1
    y = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for a in range(kh):
        for b in range(kw):
            patch = xp[
                :, a : a + stride * (oh - 1) + 1 : stride, b : b + stride * (ow - 1) + 1 : stride
            ]
            y += np.einsum("nijc,co->nijo", patch, w[a, b])
    return y


def np_conv_grads(x, w, dy, stride, pad):
    """The same sum differentiated by hand: dw gathers input patches, dx scatters dy back."""
    kh, kw, _, _ = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh, ow = dy.shape[1:3]
    dxp, dw = np.zeros_like(xp), np.zeros(w.shape)
    for a in range(kh):
        for b in range(kw):
            rows = slice(a, a + stride * (oh - 1) + 1, stride)
            cols = slice(b, b + stride * (ow - 1) + 1, stride)
            dw[a, b] = np.einsum("nijc,nijo->co", xp[:, rows, cols], dy)
            dxp[:, rows, cols] += np.einsum("nijo,co->nijc", dy, w[a, b])
    return dxp[:, pad : pad + x.shape[1], pad : pad + x.shape[2]], dw


def onednn(x, w, stride, pad):
    return oc.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                   dimension_numbers=NHWC)  # fmt: skip


# (batch, height, width, in, out, kernel, stride, pad): ResNet-32's 3x3 convolutions, stride 2,
# the ImageNet stem (7x7, stride 2, pad 3) and its 1x1 stride-2 downsample, non-square inputs
CASES = [
    (2, 8, 8, 4, 4, 3, 1, 1),
    (3, 9, 8, 4, 8, 3, 2, 1),
    (2, 12, 10, 3, 8, 7, 2, 3),
    (2, 7, 9, 8, 16, 1, 2, 0),
]


@pytest.mark.parametrize("n, h, w_, cin, cout, k, stride, pad", CASES)
def test_values_and_gradients_equal_the_formula(n, h, w_, cin, cout, k, stride, pad):
    rng = np.random.default_rng(k + stride)
    x = rng.standard_normal((n, h, w_, cin)).astype(np.float32)
    w = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
    y, vjp = jax.vjp(lambda x, w: onednn(x, w, stride, pad), x, w)
    want = np_conv(x.astype(np.float64), w.astype(np.float64), stride, pad)
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-4, atol=1e-4)
    dy = rng.standard_normal(want.shape).astype(np.float32)
    dx, dw = vjp(dy)
    want_dx, want_dw = np_conv_grads(x.astype(np.float64), w.astype(np.float64), dy, stride, pad)
    np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dw), want_dw, rtol=1e-4, atol=1e-4)


def test_under_pmap_and_vmap_each_slice_is_its_own_convolution():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 6, 6, 4)).astype(np.float32)  # 4 devices or runs
    w = rng.standard_normal((4, 3, 3, 4, 4)).astype(np.float32)
    want = np.stack([np_conv(x[i], w[i], 1, 1) for i in range(4)])
    step = jax.jit(jax.vmap(lambda x, w: onednn(x, w, 1, 1)))
    np.testing.assert_allclose(np.asarray(step(x, w)), want, rtol=1e-4, atol=1e-4)
    p_conv = jax.pmap(lambda x, w: onednn(x, w, 1, 1), devices=jax.devices()[:4])
    np.testing.assert_allclose(np.asarray(p_conv(x, w)), want, rtol=1e-4, atol=1e-4)


def test_a_model_on_onednn_has_xlas_parameters_logits_and_gradients():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((4, 16, 16, 3)), jnp.float32)
    models = {impl: get_model("resnet8", 5, conv_impl=impl) for impl in ("xla", "onednn")}
    variables = models["xla"].init(jax.random.key(0), x, train=False)
    assert jax.tree.structure(models["onednn"].init(jax.random.key(0), x, train=False)) == (
        jax.tree.structure(variables)
    )

    def loss(params, impl):
        v = {**variables, "params": params}
        (logits, out), _ = models[impl].apply(v, x, train=True, mutable=["batch_stats"])
        return jnp.sum(logits**2) + jnp.sum(out["features"]), logits

    results = {
        impl: jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(
            variables["params"], impl
        )
        for impl in models
    }
    (_, logits_x), grads_x = results["xla"]
    (_, logits_o), grads_o = results["onednn"]
    np.testing.assert_allclose(logits_o, logits_x, rtol=1e-4, atol=1e-5)
    for gx, go in zip(jax.tree.leaves(grads_x), jax.tree.leaves(grads_o), strict=True):
        np.testing.assert_allclose(go, gx, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rhs_dilation": (2, 2)}, "rhs_dilation"),
        ({"feature_group_count": 2}, "grouped"),
        ({"padding": ((1, 0), (1, 0))}, "one symmetric padding"),
        ({"window_strides": (1, 2)}, "equal strides"),
        ({"dtype": jnp.bfloat16}, "float32 only"),
    ],
)
def test_what_it_does_not_run_is_an_error_naming_it(kwargs, match):
    dtype = kwargs.pop("dtype", jnp.float32)
    args = {"window_strides": (1, 1), "padding": ((1, 1), (1, 1)), **kwargs}
    x, w = jnp.ones((1, 4, 4, 2), dtype), jnp.ones((3, 3, 2, 2), dtype)
    with pytest.raises(ValueError, match=match) as e:
        oc.conv_general_dilated(x, w, dimension_numbers=NHWC, **args)
    assert "model.conv=xla" in str(e.value)


def test_which_convolutions_auto_picks_and_why(monkeypatch):
    assert resolve_conv_impl("xla")[0] == "xla"
    assert resolve_conv_impl("auto")[0] == "onednn"  # the test extra installs oneDNN
    assert resolve_conv_impl("auto", jnp.bfloat16) == (
        "xla",
        "model.conv=auto on the cpu backend in bfloat16",
    )
    with pytest.raises(ValueError, match="float32 convolutions on the CPU backend only"):
        resolve_conv_impl("onednn", jnp.bfloat16)
    with pytest.raises(ValueError, match="valid choices"):
        resolve_conv_impl("mkl")
    # oneDNN missing: auto says so and uses XLA's; asked for by name it is an error with the fix
    monkeypatch.setattr(oc, "_state", {})
    monkeypatch.setattr(oc, "_onednn_prefix", lambda: None)
    impl, why = resolve_conv_impl("auto")
    assert impl == "xla" and "oneDNN is not installed" in why and "fbl-jax[cpu]" in why
    with pytest.raises(
        ValueError, match=r"model.conv=onednn: oneDNN is not installed; pip install"
    ):
        resolve_conv_impl("onednn")


def test_a_config_asking_for_onednn_where_it_cannot_run_fails_before_any_work():
    config = tiny_config(**{"model.conv": "onednn", "half_precision": True})
    with pytest.raises(ConfigError, match="model.conv=onednn runs float32 convolutions"):
        check_run_config(config)


def test_a_failed_build_or_a_broken_library_is_reported_with_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(oc, "_state", {})
    monkeypatch.setenv("FBL_JAX_ONEDNN_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a compiler that always fails
    why = oc.available()
    assert why.startswith("compiling conv.cc failed (false ")
    assert [p.name for p in tmp_path.iterdir()] == [".build.lock"]  # nothing half-built left
    monkeypatch.setattr(oc, "_state", {})
    monkeypatch.setattr(oc, "_build", lambda prefix: tmp_path / "broken.so")
    (tmp_path / "broken.so").write_text("not a shared library")
    assert "delete it to rebuild" in oc.available()
