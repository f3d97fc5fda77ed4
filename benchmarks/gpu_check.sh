#!/usr/bin/env bash
# The GPU check of issue 6, as ONE prepared script for a lent GPU machine (jax, flax, optax and
# orbax are there; TensorFlow, tfds and ml-collections are not). Prepare here, from the repo root:
#
#   echo /.whl/ >> .git/info/exclude && python3 -m pip download --no-deps --only-binary=:all: \
#     --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     ml-collections==1.1.0 tensorboardX==2.6.5
#   mkdir -p .data && echo /.data/ >> .git/info/exclude && cp ../shared/data/cifar10/cifar10-jpeg.tar.gz .data/
#
# then run it with carry [".whl", ".data"]:   bash benchmarks/gpu_check.sh $OUT [EPOCHS]
# It prints the throughput table (ResNet-32 at batch 64, 128, 512; ResNet-50 at 224 px), then, with
# EPOCHS > 0, trains CIFAR-10-LT IF 100 with FBL and with cross-entropy for EPOCHS epochs each
# (200 = the paper's protocol) and copies metrics.jsonl of both runs to OUT.
set -euo pipefail
out="${1:?usage: gpu_check.sh OUT_DIR [EPOCHS]}"
epochs="${2:-0}"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
for bs in 64 128 512; do
  python3 -m fbl_jax.benchmark --model resnet32 --batch-size "$bs" --steps 50 --what all | tee -a "$out/bench.md"
done
python3 -m fbl_jax.benchmark --model resnet50 --image-size 224 --num-classes 1000 --batch-size 128 \
  --steps 20 --what train --half-precision | tee -a "$out/bench.md"
if [ "$epochs" -gt 0 ]; then
  mkdir -p /tmp/cifar10 && tar -xzf .data/cifar10-jpeg.tar.gz -C /tmp/cifar10
  for loss in fbl ce; do
    python3 -m fbl_jax.main --config=configs/cifar10_lt.py --workdir="/tmp/runs/$loss" \
      --config.data.root=/tmp/cifar10 --config.loss.name="$loss" --config.num_epochs="$epochs"
    cp "/tmp/runs/$loss/metrics.jsonl" "$out/metrics_$loss.jsonl"
  done
fi
