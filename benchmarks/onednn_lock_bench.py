"""Whether one mutex around every oneDNN call costs speed when pmap runs devices side by side.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python benchmarks/onednn_lock_bench.py

Builds ``models/onednn/conv.cc`` as it is (plans shared, calls concurrent) and a copy with one
process-wide mutex around every call (what it had before), registers both under their own names
and times, under pmap over all local devices, the forward pass, input gradient and filter
gradient of ResNet-32's 3×3 convolution shapes (batch 64 over the devices) on each, alternating
call by call so that the machine's drift hits both alike. Prints the median ms of each and the
largest difference between their results (the same kernels: zero).
"""

import argparse
import ctypes
import time

import jax
import numpy as np

from fbl_jax.models import onednn_conv as oc

# (spatial, in channels, out channels, stride) of ResNet-32's 3×3 convolutions
SHAPES = [(32, 16, 16, 1), (32, 16, 32, 2), (16, 32, 32, 1), (8, 64, 64, 1)]
SERIAL = """    static std::mutex call_mutex;  // one call at a time, process-wide
    std::lock_guard<std::mutex> call_guard(call_mutex);
"""


def register(suffix: str, source: str, tmp: str) -> None:
    """Builds `source` through onednn_conv's own build and registers its targets + suffix."""
    path = f"{tmp}/conv.cc"
    with open(path, "w") as f:
        f.write(source)
    saved, oc.SOURCE = oc.SOURCE, type(oc.SOURCE)(path)
    try:
        library = ctypes.CDLL(str(oc._build(oc._onednn_prefix())))
    finally:
        oc.SOURCE = saved
    for name, symbol in oc.TARGETS.items():
        capsule = jax.ffi.pycapsule(getattr(library, symbol))
        jax.ffi.register_ffi_target(name + suffix, capsule, platform="cpu")


def step(suffix: str):
    def call(target, shape, *args, stride):
        out = jax.ShapeDtypeStruct(shape, np.float32)
        fn = jax.ffi.ffi_call(f"fbl_onednn_conv_{target}{suffix}", out)
        return fn(*args, stride=np.int64(stride), pad=np.int64(1))

    def run(xs, ws, dys):
        outs = []
        for (_, _, _, stride), x, w, dy in zip(SHAPES, xs, ws, dys, strict=True):
            outs.append(call("forward", dy.shape, x, w, stride=stride))
            outs.append(call("backward_data", x.shape, dy, w, stride=stride))
            outs.append(call("backward_weights", w.shape, x, dy, stride=stride))
        return outs

    return jax.pmap(run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=40, help="timed calls of each variant")
    p.add_argument("--batch", type=int, default=64, help="global batch over the devices")
    args = p.parse_args()
    import tempfile

    oc.load()  # the OpenMP wait policy, as in training
    source = oc.SOURCE.read_text()
    anchor = 'return ffi::Error::InvalidArgument("oneDNN conv: " + problem);\n'
    assert anchor in source, "conv.cc changed: update this benchmark's SERIAL insertion"
    variants = {"concurrent": source, "one mutex": source.replace(anchor, anchor + SERIAL)}
    n = jax.local_device_count()
    rng = np.random.default_rng(0)
    xs, ws, dys = [], [], []
    for size, cin, cout, stride in SHAPES:
        xs.append(rng.standard_normal((n, args.batch // n, size, size, cin), np.float32))
        ws.append(rng.standard_normal((n, 3, 3, cin, cout), np.float32))
        out = (size + 2 - 3) // stride + 1
        dys.append(rng.standard_normal((n, args.batch // n, out, out, cout), np.float32))
    steps, times, results = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, text) in enumerate(variants.items()):
            register(f"_v{i}", text, tmp)
            steps[name] = step(f"_v{i}")
            results[name] = jax.block_until_ready(steps[name](xs, ws, dys))
            times[name] = []
    for _ in range(args.calls):
        for name, fn in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(xs, ws, dys))
            times[name].append(time.perf_counter() - start)
    diff = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(*results.values(), strict=True)
    )
    print(f"{n} devices, batch {args.batch}, {len(SHAPES)} shapes × fwd/dx/dw per call")
    for name, t in times.items():
        q = np.percentile(np.asarray(t) * 1e3, [25, 50, 75])
        print(f"{name:>10}: median {q[1]:.1f} ms (quartiles {q[0]:.1f}–{q[2]:.1f})")
    print(f"largest difference between the variants' results: {diff}")


if __name__ == "__main__":
    main()
