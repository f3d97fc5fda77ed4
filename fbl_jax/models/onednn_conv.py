"""oneDNN convolutions for the CPU backend, as an XLA FFI custom call with a custom VJP.

XLA's CPU backend runs convolutions on Eigen kernels; oneDNN's channels-last kernels (what
PyTorch uses on the CPU) are 2-3x faster on AVX-512 CPUs, and convolutions are most of a CIFAR
ResNet's train step (BENCHMARKS.md). ``conv_general_dilated`` has ``lax.conv_general_dilated``'s
signature, so ``nn.Conv(..., conv_general_dilated=...)`` keeps flax's parameters (checkpoints are
interchangeable with the XLA convolutions).

The kernels are C++ (``onednn/conv.cc``), compiled on first use with the machine's C++ compiler
against the ``onednn-cpu-gomp`` wheel (``pip install 'fbl-jax[cpu]'``) and jaxlib's FFI headers,
and kept in ``~/.cache/fbl_jax/onednn`` (``FBL_JAX_ONEDNN_CACHE=DIR`` moves it), one library
per version of everything it depends on (``_cache_key``). A build that cannot run (no compiler,
an unwritable cache folder, a compiler past ``BUILD_TIMEOUT_S``) is an ``OnednnUnavailable`` with
a one-line reason and fix, so ``model.conv=auto`` falls back to XLA's convolutions.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

SOURCE = pathlib.Path(__file__).with_name("onednn") / "conv.cc"
TARGETS = {
    "fbl_onednn_conv_forward": "FblOnednnConvForward",
    "fbl_onednn_conv_backward_data": "FblOnednnConvBackwardData",
    "fbl_onednn_conv_backward_weights": "FblOnednnConvBackwardWeights",
}
INSTALL_HINT = "pip install 'fbl-jax[cpu]' (oneDNN) and a C++ compiler"
# The wheels whose library and headers the kernels are built against (part of the cache key).
ONEDNN_WHEELS = ("onednn-cpu-gomp", "onednn-devel-cpu-gomp")
# Longest a compiler may take (its `--version` answer, the build, or the wait for another
# process's build); the build takes ~10 s on 2 cores. Past it, model.conv=auto uses XLA's.
BUILD_TIMEOUT_S = 300.0
# Temporary build folders in the cache folder; a killed build leaves one, the next build removes it.
BUILD_PREFIX = ".fbl_onednn_build-"
CACHE_HINT = "make it writable or set FBL_JAX_ONEDNN_CACHE to a writable folder"

_lock = threading.Lock()  # one load() at a time; the kernels themselves run concurrently
_state: dict[str, object] = {}


class OnednnUnavailable(RuntimeError):
    """oneDNN convolutions cannot be used here; the one-line message says why and what to do."""


def _onednn_prefix() -> pathlib.Path | None:
    """Where the onednn wheel put include/ and lib/ (the environment's prefix, or the user's)."""
    candidates = [os.environ.get("FBL_JAX_ONEDNN_ROOT"), sys.prefix, site.getuserbase()]
    for root in filter(None, candidates):
        root = pathlib.Path(root)
        if (root / "include/oneapi/dnnl/dnnl.hpp").exists() and (root / "lib/libdnnl.so").exists():
            return root
    return None


def _cache_dir() -> pathlib.Path:
    default = pathlib.Path.home() / ".cache" / "fbl_jax" / "onednn"
    return pathlib.Path(os.environ.get("FBL_JAX_ONEDNN_CACHE", default))


def _run(command: list[str]) -> subprocess.CompletedProcess:
    """Runs a compiler, killed with all its children (cc1plus, ld) past BUILD_TIMEOUT_S.

    Its own session, so the kill reaches the whole group: killing only the driver would leave a
    child holding the output pipes open, and the wait would last as long as the child."""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            out, err = process.communicate(timeout=BUILD_TIMEOUT_S)
        except BaseException:  # the timeout, or Ctrl-C: no compiler outlives the build
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:  # all of it had just ended
                pass
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _compiler() -> str:
    """The C++ compiler's path: $CXX, else c++ or g++ on the PATH."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx) or cxx
    found = shutil.which("c++") or shutil.which("g++")
    if found is None:
        raise OnednnUnavailable(
            f"oneDNN convolutions need a C++ compiler (none found); {INSTALL_HINT}"
        )
    return found


def _compiler_version(compiler: str) -> str:
    """What `compiler --version` prints: another compiler (or version) builds another library."""
    try:
        done = _run([compiler, "--version"])
    except FileNotFoundError:
        raise OnednnUnavailable(
            f"C++ compiler {compiler} not found; set CXX to a C++ compiler, or {INSTALL_HINT}"
        ) from None
    except subprocess.TimeoutExpired:
        raise OnednnUnavailable(
            f"C++ compiler {compiler} did not answer --version within {BUILD_TIMEOUT_S:g} s; "
            "set CXX to a working C++ compiler, or model.conv=xla"
        ) from None
    except OSError as e:
        raise OnednnUnavailable(
            f"cannot run C++ compiler {compiler} ({e}); set CXX to a working C++ compiler"
        ) from None
    return f"{done.returncode}\n{done.stdout}{done.stderr}"


def _onednn_version(prefix: pathlib.Path) -> str:
    """The oneDNN the library is built against: the wheels' versions, the version and config
    headers, and the shared library's real name and size (an in-place upgrade changes them)."""
    wheels = []
    for wheel in ONEDNN_WHEELS:
        try:
            wheels.append(f"{wheel}=={importlib.metadata.version(wheel)}")
        except importlib.metadata.PackageNotFoundError:
            wheels.append(f"{wheel} absent")
    headers = hashlib.sha256()
    for header in ("dnnl_version.h", "dnnl_config.h"):
        path = prefix / "include/oneapi/dnnl" / header
        headers.update(path.read_bytes() if path.exists() else b"absent")
    library = (prefix / "lib/libdnnl.so").resolve()
    return (
        f"{' '.join(wheels)} headers {headers.hexdigest()} {library.name} {library.stat().st_size}"
    )


def _flags(prefix: pathlib.Path) -> list[str]:
    return [
        "-O2", "-std=c++17", "-shared", "-fPIC", f"-I{jax.ffi.include_dir()}",
        f"-I{prefix / 'include'}", f"-L{prefix / 'lib'}", "-ldnnl", f"-Wl,-rpath,{prefix / 'lib'}",
    ]  # fmt: skip


def _cache_key(prefix: pathlib.Path, compiler: str, flags: list[str]) -> str:
    """Everything the library depends on: the source, jaxlib (its FFI headers), oneDNN, the
    compiler (path and version) and the flags."""
    import jaxlib

    parts = [
        SOURCE.read_bytes(),
        jaxlib.__version__.encode(),
        _onednn_version(prefix).encode(),
        compiler.encode(),
        _compiler_version(compiler).encode(),
        " ".join(flags).encode(),
    ]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _lock_build(lock, folder: pathlib.Path) -> None:
    """Waits for another process's build, at most BUILD_TIMEOUT_S."""
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise OnednnUnavailable(
                    f"another process has been building the oneDNN kernels in {folder} for "
                    f"over {BUILD_TIMEOUT_S:g} s; stop it, or set model.conv=xla"
                ) from None
            time.sleep(0.1)


def _remove_stale_builds(folder: pathlib.Path) -> None:
    """Temporary build folders of killed builds (called under the build lock: none is live)."""
    for stale in folder.glob(BUILD_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)


def _compile(compiler: str, flags: list[str], target: pathlib.Path) -> None:
    """Compiles SOURCE into `target` through a temporary folder (a reader never sees half a
    file); one-line errors, the compiler's whole output in a log beside the target."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=target.parent))
    try:
        out = tmp / target.name
        try:
            done = _run([compiler, str(SOURCE), "-o", str(out), *flags])
        except subprocess.TimeoutExpired:
            raise OnednnUnavailable(
                f"compiling {SOURCE.name} with {compiler} took over {BUILD_TIMEOUT_S:g} s and "
                "was stopped; set CXX to a working C++ compiler, or model.conv=xla"
            ) from None
        except OSError as e:
            raise OnednnUnavailable(
                f"cannot run C++ compiler {compiler} ({e}); set CXX to a working C++ compiler"
            ) from None
        if done.returncode != 0:
            log = target.with_suffix(".log")
            try:
                log.write_text(f"{' '.join(done.args)}\n{done.stdout}{done.stderr}")
            except OSError:
                log = "(the cache folder could not hold the log)"
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            first = next((line for line in lines if "error" in line), lines[0] if lines else "")
            raise OnednnUnavailable(
                f"compiling {SOURCE.name} with {compiler} failed (exit {done.returncode}"
                f"{': ' + first.strip()[:300] if first else ''}); command and output in {log}; "
                f"{INSTALL_HINT}"
            )
        os.replace(out, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build(prefix: pathlib.Path) -> pathlib.Path:
    """Compiles conv.cc once per cache key (see _cache_key); returns the shared library."""
    compiler = _compiler()
    flags = _flags(prefix)
    folder = _cache_dir()
    target = folder / f"fbl_onednn_conv_{_cache_key(prefix, compiler, flags)}.so"
    if target.exists():  # a read-only cache folder that holds the library is enough
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # one build for processes starting together (test workers, several runs on one host)
        with open(folder / ".build.lock", "a") as lock:
            _lock_build(lock, folder)
            if target.exists():
                return target
            _remove_stale_builds(folder)
            _compile(compiler, flags, target)
    except OSError as e:
        raise OnednnUnavailable(
            f"cannot build the oneDNN kernels in {folder} ({e.strerror or e}); {CACHE_HINT}"
        ) from None
    return target


def load() -> None:
    """Build (first time) and register the FFI targets; raises OnednnUnavailable with the fix."""
    with _lock:
        if "error" in _state:
            raise OnednnUnavailable(_state["error"])
        if "library" in _state:
            return
        # oneDNN's OpenMP threads sleep between kernels instead of spinning on the cores XLA's
        # own threads need next (ResNet-32 train step +5-18 % in three alternating rounds on a
        # 2-core EPYC, BENCHMARKS.md); read when libgomp loads; a value the user set wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            prefix = _onednn_prefix()
            if prefix is None:
                raise OnednnUnavailable(f"oneDNN is not installed; {INSTALL_HINT}")
            try:
                path = _build(prefix)
            except OSError as e:  # reading oneDNN's headers or the source: never out of auto
                raise OnednnUnavailable(
                    f"cannot prepare the oneDNN kernels ({e}); reinstall fbl-jax[cpu], or "
                    "model.conv=xla"
                ) from e
            try:
                library = ctypes.CDLL(str(path))
            except OSError as e:
                raise OnednnUnavailable(f"cannot load {path} ({e}); delete it to rebuild") from e
            for name, symbol in TARGETS.items():
                capsule = jax.ffi.pycapsule(getattr(library, symbol))
                jax.ffi.register_ffi_target(name, capsule, platform="cpu")
        except OnednnUnavailable as e:
            _state["error"] = str(e)
            raise
        _state["library"] = library


def available() -> str | None:
    """None if oneDNN convolutions work here, else the reason (with the fix)."""
    try:
        load()
    except OnednnUnavailable as e:
        return str(e)
    return None


def _call(target: str, shape: tuple[int, ...], *args: jax.Array, stride: int, pad: int):
    out = jax.ShapeDtypeStruct(shape, jnp.float32)
    # a vmapped sweep's runs each call the kernel in turn (the CPU trains sweeps run by run)
    call = jax.ffi.ffi_call(target, out, vmap_method="sequential")
    return call(*args, stride=np.int64(stride), pad=np.int64(pad))


def _out_shape(x_shape, w_shape, stride: int, pad: int) -> tuple[int, int, int, int]:
    n, h, w, _ = x_shape
    kh, kw, _, o = w_shape
    return (n, (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1, o)


def check_shapes(lhs_shape: tuple[int, ...], rhs_shape: tuple[int, ...], pad: int) -> None:
    """The checks conv.cc repeats on every buffer, made while tracing: a mismatch is a
    ValueError in ``lax.conv_general_dilated``'s words, naming both shapes."""
    shapes = f": lhs shape {tuple(lhs_shape)} (NHWC), rhs shape {tuple(rhs_shape)} (HWIO)"
    if lhs_shape[3] != rhs_shape[2]:
        raise ValueError(
            "conv_general_dilated lhs feature dimension size divided by feature_group_count "
            "must equal the rhs input feature dimension size, but "
            f"{lhs_shape[3]} // 1 != {rhs_shape[2]}{shapes}"
        )
    if any(lhs_shape[i] + 2 * pad < rhs_shape[i - 1] for i in (1, 2)):
        raise ValueError(
            f"oneDNN convolution does not support a filter larger than the input padded by "
            f"{pad}{shapes}; set model.conv=xla"
        )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
    """NHWC x HWIO -> NHWC float32 convolution, `stride` and symmetric zero padding `pad`."""
    return _call("fbl_onednn_conv_forward", _out_shape(x.shape, w.shape, stride, pad), x, w,
                 stride=stride, pad=pad)  # fmt: skip


def _conv2d_fwd(x, w, stride, pad):
    return conv2d(x, w, stride, pad), (x, w)


def _conv2d_bwd(stride, pad, residuals, dy):
    x, w = residuals
    dx = _call("fbl_onednn_conv_backward_data", x.shape, dy, w, stride=stride, pad=pad)
    dw = _call("fbl_onednn_conv_backward_weights", w.shape, x, dy, stride=stride, pad=pad)
    return dx, dw


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """``lax.conv_general_dilated`` for the convolutions fbl-jax's models use, on oneDNN.

    Anything else (dilation, groups, asymmetric padding, other layouts or dtypes) is an error
    naming it, never a quiet change of kernel."""
    strides = tuple(window_strides)
    pads = [tuple(p) for p in padding] if not isinstance(padding, str) else padding
    problems = []
    if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
        problems.append(f"dtypes {lhs.dtype}/{rhs.dtype} (float32 only)")
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    given = dimension_numbers
    if given is not None and not isinstance(given, lax.ConvDimensionNumbers):
        given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, given)
    if lhs.ndim != 4 or given != nhwc:
        problems.append(f"layout {dimension_numbers} (NHWC/HWIO/NHWC only)")
    if len(set(strides)) != 1 or min(strides) < 1:
        problems.append(f"strides {strides} (equal strides only, each >= 1)")
    if isinstance(pads, str) or len({p for pair in pads for p in pair}) != 1:
        problems.append(f"padding {padding} (one symmetric padding only)")
    elif pads[0][0] < 0:
        problems.append(f"padding {padding} (non-negative padding only)")
    for name, dilation in (("lhs_dilation", lhs_dilation), ("rhs_dilation", rhs_dilation)):
        if dilation is not None and any(d != 1 for d in dilation):
            problems.append(f"{name} {dilation}")
    if feature_group_count != 1 or batch_group_count != 1:
        problems.append("grouped convolution")
    if problems:
        raise ValueError(
            "oneDNN convolution does not support " + ", ".join(problems) + "; set model.conv=xla"
        )
    check_shapes(lhs.shape, rhs.shape, pads[0][0])
    load()
    return conv2d(lhs, rhs, strides[0], pads[0][0])
