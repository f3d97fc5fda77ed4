"""Where the CPU train step spends its time: the 3×3 convolutions of ResNet-32, forward, input
gradient (dx) and filter gradient (dw), at batch 64, on XLA's kernels and on oneDNN's.

    python benchmarks/conv_grad_microbench.py                      # fbl-jax's fast CPU flags
    python benchmarks/conv_grad_microbench.py --conv xla           # one implementation
    FBL_JAX_FAST_CPU=0 python benchmarks/conv_grad_microbench.py   # XLA's defaults

Prints the median milliseconds of 20 calls after one compiling call.
benchmarks/conv_microbench_torch.py times the same shapes in PyTorch.
"""

import argparse
import time

from fbl_jax.cli.cpu_flags import apply_fast_cpu_flags

apply_fast_cpu_flags()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from fbl_jax.models import onednn_conv  # noqa: E402

# (batch, spatial, in channels, out channels, stride) of ResNet-32's conv shapes
SHAPES = [(64, 32, 16, 16, 1), (64, 32, 16, 32, 2), (64, 16, 32, 32, 1), (64, 8, 64, 64, 1)]
CONVS = {"xla": jax.lax.conv_general_dilated, "onednn": onednn_conv.conv_general_dilated}


def median_ms(fn, *args, n=20):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--conv", default="xla,onednn", help="comma-separated: xla, onednn")
    impls = p.parse_args().conv.split(",")
    rng = np.random.default_rng(0)
    print("| conv | N | H×W | C_in | C_out | stride | fwd ms | dx ms | dw ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, h, cin, cout, s in SHAPES:
        x = jax.numpy.asarray(rng.random((n, h, h, cin)), np.float32)
        w = jax.numpy.asarray(rng.random((3, 3, cin, cout)) * 0.1, np.float32)
        for impl in impls:

            def conv(x, w, s=s, impl=impl):
                return CONVS[impl](
                    x, w, (s, s), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
                )

            dy = jax.numpy.asarray(rng.random(conv(x, w).shape), np.float32)
            fwd = jax.jit(conv)
            dx = jax.jit(lambda x, w, dy, conv=conv: jax.vjp(conv, x, w)[1](dy)[0])
            dw = jax.jit(lambda x, w, dy, conv=conv: jax.vjp(conv, x, w)[1](dy)[1])
            print(
                f"| {impl} | {n} | {h}×{h} | {cin} | {cout} | {s} | {median_ms(fwd, x, w):.2f} | "
                f"{median_ms(dx, x, w, dy):.2f} | {median_ms(dw, x, w, dy):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
