"""oneDNN convolutions (models/onednn_conv.py): values and both gradients against NumPy written
from the convolution's formula, under pmap and vmap, the model's parameters and gradients against
XLA's convolutions, the errors for what it does not run, the shape checks in Python and in the
kernels, and the build: its cache key, timeout, stale folders and the fallback when it cannot run."""

import concurrent.futures
import importlib.metadata
import logging
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_helpers import tiny_config

from fbl_jax.defaults import ConfigError
from fbl_jax.models import get_model
from fbl_jax.models import onednn_conv as oc
from fbl_jax.models.layers import resolve_conv_impl
from fbl_jax.train.run_setup import build_model, check_run_config

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
    x = rng.standard_normal((4, 2, 6, 6, 4)).astype(np.float32)  # four devices or runs
    w = rng.standard_normal((4, 3, 3, 4, 4)).astype(np.float32)
    want = np.stack([np_conv(x[i], w[i], 1, 1) for i in range(4)])
    step = jax.jit(jax.vmap(lambda x, w: onednn(x, w, 1, 1)))
    np.testing.assert_allclose(np.asarray(step(x, w)), want, rtol=1e-4, atol=1e-4)
    p_conv = jax.pmap(lambda x, w: onednn(x, w, 1, 1), devices=jax.devices()[:4])
    np.testing.assert_allclose(np.asarray(p_conv(x, w)), want, rtol=1e-4, atol=1e-4)


def test_calls_from_several_threads_at_once_each_get_their_own_result():
    """The kernels share their plans and run concurrently: each thread's buffers its own."""
    rng = np.random.default_rng(2)
    jobs = []
    for n, h, w_, cin, cout, k, stride, pad in CASES * 2:  # two threads per shape, four shapes
        x = rng.standard_normal((n, h, w_, cin)).astype(np.float32)
        w = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
        dy = rng.standard_normal(np_conv(x, w, stride, pad).shape).astype(np.float32)
        jobs.append((x, w, dy, stride, pad))

    def run(job):
        x, w, dy, stride, pad = job
        y, vjp = jax.vjp(lambda x, w: onednn(x, w, stride, pad), x, w)
        results = []
        for _ in range(5):
            results.append([np.asarray(a) for a in (y, *vjp(dy))])
        return results

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        outputs = list(pool.map(run, jobs))
    for (x, w, dy, stride, pad), results in zip(jobs, outputs, strict=True):
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        want = (np_conv(x64, w64, stride, pad), *np_conv_grads(x64, w64, dy, stride, pad))
        for got in results:
            for g, ref in zip(got, want, strict=True):
                np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-4)


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
        ({"window_strides": (0, 0)}, "each >= 1"),
        ({"padding": ((-1, -1), (-1, -1))}, "non-negative padding only"),
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
    assert why.startswith("compiling conv.cc with /usr/bin/false failed (exit 1)"), why
    assert "\n" not in why and "fbl-jax[cpu]" in why
    (log,) = tmp_path.glob("fbl_onednn_conv_*.log")  # the command, for whoever debugs it
    assert str(log) in why and log.read_text().startswith("/usr/bin/false ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".build.lock", log.name]  # no half-built
    monkeypatch.setattr(oc, "_state", {})
    monkeypatch.setattr(oc, "_build", lambda prefix: tmp_path / "broken.so")
    (tmp_path / "broken.so").write_text("not a shared library")
    assert "delete it to rebuild" in oc.available()


# --- shapes: checked while tracing, and again by the kernels on every buffer ----------------


def test_mismatched_channels_are_a_python_error_in_laxs_words_naming_both_shapes():
    x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 4, 8))  # three input channels, a filter for four
    with pytest.raises(ValueError) as lax_error:
        jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)
    for run in (lambda x, w: onednn(x, w, 1, 1), jax.jit(lambda x, w: onednn(x, w, 1, 1))):
        with pytest.raises(ValueError) as e:
            run(x, w)
        assert str(e.value).startswith(str(lax_error.value).rstrip("."))
        assert "(2, 6, 6, 3)" in str(e.value) and "(3, 3, 4, 8)" in str(e.value)
    with pytest.raises(ValueError, match=r"filter larger than the input padded by 0"):
        onednn(jnp.ones((1, 2, 2, 3)), jnp.ones((3, 3, 3, 8)), 1, 0)


# Direct calls to the FFI targets, past the Python checks: (target, result shape, the two
# argument shapes, stride, what the kernel's error names). Each would make oneDNN read or write
# outside XLA's buffers if the kernel trusted its plan.
KERNEL_MISMATCHES = [
    ("forward", (2, 6, 6, 8), (2, 6, 6, 3), (3, 3, 4, 8), 1,
     "input feature dimension size must equal the filter input feature dimension size, "
     "but 3 != 4 (input (2, 6, 6, 3), filter (3, 3, 4, 8), output (2, 6, 6, 8)"),
    ("forward", (2, 6, 6, 16), (2, 6, 6, 4), (3, 3, 4, 8), 1,
     "output shape must be (2, 6, 6, 8)"),
    ("forward", (2, 6, 6, 8), (2, 6, 6, 4), (3, 3, 4, 8), 0, "1 <= stride"),
    ("backward_data", (2, 6, 6, 4), (2, 7, 6, 8), (3, 3, 4, 8), 1,
     "output gradient shape must be (2, 6, 6, 8) (input gradient (2, 6, 6, 4), filter "
     "(3, 3, 4, 8), output gradient (2, 7, 6, 8)"),
    ("backward_data", (2, 6, 6, 5), (2, 6, 6, 8), (3, 3, 4, 8), 1, "but 5 != 4"),
    ("backward_weights", (3, 3, 4, 8), (2, 6, 6, 4), (2, 6, 6, 9), 1,
     "output gradient shape must be (2, 6, 6, 8)"),
    ("backward_weights", (3, 3, 5, 8), (2, 6, 6, 4), (2, 6, 6, 8), 1,
     "input feature dimension size must equal the filter gradient input feature"),
]  # fmt: skip


@pytest.mark.parametrize("kernel, out, a, b, stride, match", KERNEL_MISMATCHES)
def test_the_kernels_check_every_buffer_themselves(kernel, out, a, b, stride, match):
    oc.load()
    args = (jnp.ones(a), jnp.ones(b))
    with pytest.raises(jax.errors.JaxRuntimeError, match="oneDNN conv: ") as e:
        oc._call(f"fbl_onednn_conv_{kernel}", out, *args, stride=stride, pad=1)
    assert match in str(e.value)
    # and the kernels still compute afterwards
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 6, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
    y = oc._call("fbl_onednn_conv_forward", (2, 6, 6, 8), x, w, stride=1, pad=1)
    np.testing.assert_allclose(np.asarray(y), np_conv(x, w, 1, 1), rtol=1e-4, atol=1e-4)


# --- the build: where it cannot run, what its cache key holds, its timeout and leftovers -----


def fake_compiler(folder: pathlib.Path, compile_body: str, version_body: str = "") -> pathlib.Path:
    """A shell script standing in for c++: `--version` prints version.txt beside it (after
    `version_body`), anything else runs `compile_body` with $out the file after -o."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "version.txt").write_text("fake-c++ 1.0\n")
    script = folder / "fake-c++"
    script.write_text(
        "#!/bin/sh\n"
        'here="$(dirname "$0")"\n'
        f'if [ "$1" = --version ]; then {version_body or ":"}; cat "$here/version.txt"; exit 0; fi\n'
        'while [ $# -gt 0 ]; do if [ "$1" = -o ]; then out="$2"; fi; shift; done\n'
        f"{compile_body}\n"
    )
    script.chmod(0o755)
    return script


WRITES_A_LIBRARY = 'echo built >> "$here/builds.txt"; printf lib > "$out"'


def fake_prefix(root: pathlib.Path) -> pathlib.Path:
    """An install of oneDNN as the key sees it: its version header, its library."""
    (root / "include/oneapi/dnnl").mkdir(parents=True)
    (root / "include/oneapi/dnnl/dnnl_version.h").write_text("#define DNNL_VERSION_MINOR 2\n")
    (root / "lib").mkdir()
    (root / "lib/libdnnl.so.3.2").write_bytes(b"x" * 100)
    (root / "lib/libdnnl.so").symlink_to("libdnnl.so.3.2")
    return root


def test_an_upgraded_onednn_or_another_compiler_builds_its_own_library(monkeypatch, tmp_path):
    prefix = fake_prefix(tmp_path / "prefix")
    compiler = fake_compiler(tmp_path / "cxx", WRITES_A_LIBRARY)
    monkeypatch.setenv("FBL_JAX_ONEDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(compiler))

    def build() -> tuple[str, int]:
        path = oc._build(prefix)
        assert path.read_text() == "lib"
        builds = sum(len(f.read_text().splitlines()) for f in tmp_path.glob("*/builds.txt"))
        return path.name, builds

    first = build()
    assert build() == (first[0], 1)  # built once, then found
    names = {first[0]}

    def rebuilt() -> None:
        name, builds = build()
        assert name not in names and builds == len(names) + 1
        names.add(name)

    version = importlib.metadata.version
    monkeypatch.setattr(  # the wheel upgraded in place
        importlib.metadata,
        "version",
        lambda wheel: "2099.1" if wheel == "onednn-cpu-gomp" else version(wheel),
    )
    rebuilt()
    (prefix / "include/oneapi/dnnl/dnnl_version.h").write_text("#define DNNL_VERSION_MINOR 3\n")
    rebuilt()
    (prefix / "lib/libdnnl.so.3.2").write_bytes(b"x" * 101)  # another build of the library
    rebuilt()
    (tmp_path / "cxx/version.txt").write_text("fake-c++ 2.0\n")  # the compiler upgraded
    rebuilt()
    monkeypatch.setenv("CXX", str(fake_compiler(tmp_path / "other", WRITES_A_LIBRARY)))
    (tmp_path / "other/version.txt").write_text("fake-c++ 2.0\n")  # the same, elsewhere
    rebuilt()
    assert build()[0] in names  # and nothing else changes the key


def test_stale_build_folders_are_removed_and_nothing_else(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    stale = cache / (oc.BUILD_PREFIX + "killed")
    stale.mkdir(parents=True)
    (stale / "fbl_onednn_conv_0123.so").write_bytes(b"half a library")
    (cache / "tmpkeep").mkdir()  # not ours: the cache may be a folder others use
    monkeypatch.setenv("FBL_JAX_ONEDNN_CACHE", str(cache))
    monkeypatch.setenv("CXX", str(fake_compiler(tmp_path / "cxx", WRITES_A_LIBRARY)))
    target = oc._build(fake_prefix(tmp_path / "prefix"))
    assert sorted(p.name for p in cache.iterdir()) == [".build.lock", target.name, "tmpkeep"]


def process_gone(pid: int, within_s: float = 10.0) -> bool:
    """Whether `pid` ends within `within_s`: a SIGKILL takes effect when the process next runs,
    which on a loaded CPU can be a moment after kill() returns."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            proc_status = pathlib.Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        if "\nState:\tZ" in proc_status:  # killed, not yet reaped by init
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@pytest.mark.parametrize("where", ["build", "version"])
def test_a_compiler_that_hangs_is_stopped_and_auto_uses_xla(monkeypatch, tmp_path, where):
    hang = 'sleep 60 & echo $! > "$here/pid"; wait'
    compiler = fake_compiler(
        tmp_path / "cxx", hang if where == "build" else WRITES_A_LIBRARY,
        version_body=hang if where == "version" else "",
    )  # fmt: skip
    monkeypatch.setattr(oc, "_state", {})
    monkeypatch.setattr(oc, "BUILD_TIMEOUT_S", 1.0)
    monkeypatch.setenv("FBL_JAX_ONEDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(compiler))
    start = time.monotonic()
    impl, why = resolve_conv_impl("auto")
    assert time.monotonic() - start < 30  # not the 60 s of the compiler's child
    assert impl == "xla" and "\n" not in why
    expected = "took over 1 s and was stopped" if where == "build" else "did not answer --version"
    assert expected in why and "set CXX to a working C++ compiler" in why
    assert process_gone(int((tmp_path / "cxx/pid").read_text()))
    assert not list((tmp_path / "cache").glob(oc.BUILD_PREFIX + "*"))


def test_a_build_another_process_holds_too_long_is_given_up(monkeypatch, tmp_path):
    import fcntl

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(oc, "BUILD_TIMEOUT_S", 0.3)
    monkeypatch.setenv("FBL_JAX_ONEDNN_CACHE", str(cache))
    monkeypatch.setenv("CXX", str(fake_compiler(tmp_path / "cxx", WRITES_A_LIBRARY)))
    with open(cache / ".build.lock", "a") as lock_holder:  # another open file: flock blocks on it
        fcntl.flock(lock_holder, fcntl.LOCK_EX)
        with pytest.raises(oc.OnednnUnavailable, match="another process has been building"):
            oc._build(fake_prefix(tmp_path / "prefix"))


def test_an_unwritable_cache_folder_means_xlas_convolutions_or_a_one_line_error(
    monkeypatch, tmp_path, caplog
):
    (tmp_path / "a_file").write_text("")  # no folder can be made under a file, even by root
    monkeypatch.setenv("FBL_JAX_ONEDNN_CACHE", str(tmp_path / "a_file" / "onednn"))
    monkeypatch.setattr(oc, "_state", {})
    impl, why = resolve_conv_impl("auto")
    assert impl == "xla" and "\n" not in why
    assert f"cannot build the oneDNN kernels in {tmp_path / 'a_file' / 'onednn'}" in why
    assert "set FBL_JAX_ONEDNN_CACHE to a writable folder" in why
    with caplog.at_level(logging.INFO, logger="fbl_jax"):
        build_model(tiny_config(**{"model.conv": "auto"}), num_classes=10)
    (line,) = [r.getMessage() for r in caplog.records if "convolutions" in r.getMessage()]
    assert line == f"convolutions: XLA's ({why})"
    with pytest.raises(ConfigError) as e:
        check_run_config(tiny_config(**{"model.conv": "onednn"}))
    assert str(e.value).startswith("model.conv=onednn: cannot build the oneDNN kernels in ")
    assert "\n" not in str(e.value)
    assert not os.path.exists(tmp_path / "a_file" / "onednn")
