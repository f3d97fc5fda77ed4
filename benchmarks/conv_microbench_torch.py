"""benchmarks/conv_grad_microbench.py's convolutions in PyTorch (oneDNN on the CPU): forward,
input gradient and filter gradient, NCHW and channels-last, 2 threads, median of 20 calls.
Each gradient is timed alone (autograd.grad on one retained graph).

    /path/to/venv-with-torch/bin/python benchmarks/conv_microbench_torch.py
"""

import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [(64, 32, 16, 16, 1), (64, 32, 16, 32, 2), (64, 16, 32, 32, 1), (64, 8, 64, 64, 1)]


def median_ms(fn, n=20):
    for _ in range(3):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main():
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| layout | N | H×W | C_in | C_out | stride | fwd ms | dx ms | dw ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layout in ("NCHW", "channels_last"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        for n, h, cin, cout, s in SHAPES:
            x = torch.rand(n, cin, h, h).to(memory_format=fmt).requires_grad_(True)
            w = (torch.rand(cout, cin, 3, 3) * 0.1).to(memory_format=fmt).requires_grad_(True)
            y = F.conv2d(x, w, stride=s, padding=1)
            dy = torch.rand_like(y)
            with torch.no_grad():
                fwd = median_ms(lambda x=x, w=w, s=s: F.conv2d(x, w, stride=s, padding=1))
            # the backward alone, on one retained graph
            dx = median_ms(lambda y=y, x=x, dy=dy: torch.autograd.grad(y, x, dy, retain_graph=True))
            dw = median_ms(lambda y=y, w=w, dy=dy: torch.autograd.grad(y, w, dy, retain_graph=True))
            print(
                f"| {layout} | {n} | {h}×{h} | {cin} | {cout} | {s} | {fwd:.2f} | {dx:.2f} | {dw:.2f} |"
            )


if __name__ == "__main__":
    main()
