#!/usr/bin/env bash
# One host, all of its GPUs (jax.pmap shards each batch over every visible device).
#
#   launch/local.sh --config=configs/cifar10_lt.py --workdir=runs/c10 --config.data.root=$HOME/data/cifar10
#
# Every argument goes to fbl-train unchanged. Pick GPUs with CUDA_VISIBLE_DEVICES=0,1 as usual.
# Rerunning the same command resumes from the workdir's latest checkpoint.
set -euo pipefail
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
exec fbl-train "$@"
