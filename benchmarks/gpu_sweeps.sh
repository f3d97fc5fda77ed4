#!/usr/bin/env bash
# Issues 10 and 11 on a lent GPU machine, as ONE prepared command (its image has jax, flax,
# optax and orbax; not TensorFlow, tfds or ml-collections; it reaches no registry). Prepare
# here, from the repo root (.whl/ and .data/ are git-ignored):
#
#   W="python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
#      --platform manylinux2014_x86_64"
#   $W -d .whl/core ml-collections==1.1.0 tensorboardX==2.6.5
#   $W -d .whl/fallback pillow flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.12.8  # if the image's fail
#   mkdir -p /tmp/c10 && tar -xzf ../shared/data/cifar10-lossless/cifar10-lossless.tar.gz -C /tmp/c10
#   python benchmarks/pack_lt_split.py --root /tmp/c10 --out .data/c10lt --imbalance-factors 100,50
#
# then, with carry [".whl", ".data/c10lt"] (~47 MB):   bash benchmarks/gpu_sweeps.sh $OUT [BUDGET_S]
# CIFAR-100-LT: pack with --root <cifar100-lossless part 1> --out .data/c100lt --config
# configs/cifar100_lt.py (61 MB: carry [".whl/core", ".data/c100lt"], no fallback wheels), then
#   DATA=.data/c100lt PLAN=gpu100 bash benchmarks/gpu_sweeps.sh $OUT
# A second call with the same OUT resumes what the first left (stages.json, SIGTERM checkpoints).
set -uo pipefail
out="${1:?usage: gpu_sweeps.sh OUT_DIR [BUDGET_SECONDS]}"
budget="${2:-570}"
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/core/*.whl || exit 2
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export FBL_JAX_FAST_CPU=0 FBL_JAX_COMPILATION_CACHE=/tmp/jax_cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
if ! python3 -c "import flax, optax, orbax.checkpoint, PIL.Image; PIL.Image.init(); assert 'WEBP' in PIL.Image.ID" 2>>"$out/versions.txt"; then
  echo "image packages missing; installing the carried fallback wheels" | tee -a "$out/versions.txt"
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/fallback/*.whl .whl/core/*.whl || exit 2
fi
python3 -c "import sys, jax, flax, optax; print(sys.version.split()[0], jax.__version__, flax.__version__, optax.__version__, jax.devices())" | tee -a "$out/versions.txt"
left=$((budget - ($(date +%s) - t0)))
python3 benchmarks/gpu_sweeps.py --out "$out" --data "${DATA:-.data/c10lt}" --budget-s "$left" --plan "${PLAN:-gpu}" 2>&1 | tee -a "$out/session.log"
