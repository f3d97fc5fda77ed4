"""The PyTorch reference for fbl-bench: the LDAM/FBL ResNet-32 + FBL train step, written from the
architecture (not copied): 3×3 convs, BatchNorm, option-A shortcuts, FBL loss in the authors' form,
SGD momentum 0.9, weight decay 2e-4. Random CIFAR-sized batches, median images/s.

Needs PyTorch (not a dependency of fbl-jax), e.g. in its own venv:

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0 numpy
    /tmp/tv/bin/python benchmarks/torch_reference.py --batch-size 64 --steps 40 [--channels-last]
"""

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if stride != 1 or cin != cout else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = (
            x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        )
        return F.relu(out + short)


class ResNet32(nn.Module):
    def __init__(self, num_classes=10, n=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in [(16, 1), (32, 2), (64, 2)]:
            for i in range(n):
                layers.append(Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        f = self.layers(F.relu(self.bn(self.conv(x)))).mean((2, 3))
        return self.fc(f), f


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    counts = np.array([int(5000 * 0.01 ** (i / 9)) for i in range(10)], np.float64)
    lam = np.log(counts.max()) - np.log(counts)
    lam = torch.tensor(60.0 * lam / lam.max(), dtype=torch.float32)
    model = ResNet32()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    x = torch.randn(args.batch_size, 3, 32, 32).to(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch_size,))
    alpha = 0.5

    def step():
        logits, f = model(x)
        zb = logits - alpha * lam / (f.norm(dim=1, keepdim=True) + 1e-12)
        loss = F.cross_entropy(zb, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    rates = [args.batch_size / t for t in times]
    print(
        f"torch {torch.__version__} threads {torch.get_num_threads()} "
        f"{'channels_last' if args.channels_last else 'NCHW'} batch {args.batch_size}: "
        f"median {statistics.median(rates):.1f} img/s (min {min(rates):.1f}, max {max(rates):.1f})"
    )


if __name__ == "__main__":
    main()
