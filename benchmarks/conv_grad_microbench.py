"""Where the CPU train step spends its time: the 3×3 convolutions of ResNet-32, forward, input
gradient (dx) and filter gradient (dw), at batch 64, as XLA compiles them.

    python benchmarks/conv_grad_microbench.py                 # with fbl-jax's fast CPU flags
    FBL_JAX_FAST_CPU=0 python benchmarks/conv_grad_microbench.py   # XLA's defaults

Prints the median milliseconds of 20 calls after one compiling call.
"""

import time

from fbl_jax.cli.cpu_flags import apply_fast_cpu_flags

apply_fast_cpu_flags()

import jax  # noqa: E402
import numpy as np  # noqa: E402

# (batch, spatial, in channels, out channels, stride) of ResNet-32's conv shapes
SHAPES = [(64, 32, 16, 16, 1), (64, 32, 16, 32, 2), (64, 16, 32, 32, 1), (64, 8, 64, 64, 1)]


def median_ms(fn, *args, n=20):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main():
    rng = np.random.default_rng(0)
    print("| N | H×W | C_in | C_out | stride | fwd ms | dx ms | dw ms |")
    print("|---|---|---|---|---|---|---|---|")
    for n, h, cin, cout, s in SHAPES:
        x = jax.numpy.asarray(rng.random((n, h, h, cin)), np.float32)
        w = jax.numpy.asarray(rng.random((3, 3, cin, cout)) * 0.1, np.float32)

        def conv(x, w, s=s):
            return jax.lax.conv_general_dilated(
                x, w, (s, s), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
            )

        dy = jax.numpy.asarray(rng.random(conv(x, w).shape), np.float32)
        fwd = jax.jit(conv)
        dx = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)[0])
        dw = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)[1])
        print(
            f"| {n} | {h}×{h} | {cin} | {cout} | {s} | {median_ms(fwd, x, w):.2f} | "
            f"{median_ms(dx, x, w, dy):.2f} | {median_ms(dw, x, w, dy):.2f} |"
        )


if __name__ == "__main__":
    main()
