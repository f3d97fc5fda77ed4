#!/usr/bin/env bash
# Issue 6's GPU check, as ONE prepared command for a lent GPU machine (its image has jax, flax,
# optax and orbax, not TensorFlow, tfds or ml-collections, and reaches no registry). Prepare here,
# from the repo root:
#
#   echo /.whl/ >> .git/info/exclude && echo /.data/ >> .git/info/exclude
#   W="python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
#      --platform manylinux2014_x86_64"
#   $W -d .whl ml-collections==1.1.0 tensorboardX==2.6.5
#   $W -d .whl/fallback flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.12.8  # if the image's fail
#   mkdir -p .data && cp ../shared/data/cifar10/cifar10-jpeg.tar.gz .data/
#
# then, with carry [".whl", ".data"]:   bash benchmarks/gpu_check.sh $OUT [BUDGET_SECONDS]
# A demo-sized fbl-train run checks the image's packages first (falling back to the carried
# flax/optax/orbax wheels); benchmarks/gpu_session.py then spends the rest of the budget.
set -uo pipefail
out="${1:?usage: gpu_check.sh OUT_DIR [BUDGET_SECONDS]}"
budget="${2:-570}"
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH="/tmp/site:$PWD${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export FBL_JAX_FAST_CPU=0  # the CPU-only XLA flag is not for this backend
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache  # runs share their identical eval steps
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
mkdir -p /tmp/cifar10 && (tar -xzf .data/cifar10-jpeg.tar.gz -C /tmp/cifar10; echo untarred) &
untar=$!
versions='import sys, jax, flax, optax, orbax.checkpoint as o, numpy
print(sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__, "optax",
      optax.__version__, "orbax", o.__version__, "numpy", numpy.__version__, jax.devices())'
preflight() {
  python3 -c "$versions" 2>&1 | tee -a "$out/versions.txt"
  rm -rf /tmp/preflight
  python3 -m fbl_jax.cli.train --config=configs/demo.py --workdir=/tmp/preflight \
    --config.model.name=resnet8 --config.num_epochs=2 --config.loss.curriculum_offset=0.5 --config.eval_every_epochs=1 \
    --config.checkpoint_every_epochs=1 --config.optimizer.warmup_epochs=0.5 \
    --config.optimizer.decay_epochs='(1,)' --config.optimizer.decay_multipliers='(0.1,)' >>"$out/preflight.log" 2>&1
}
if ! preflight; then
  echo "preflight failed with the image's packages; trying the carried flax/optax/orbax" | tee -a "$out/versions.txt"
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
    .whl/fallback/*.whl .whl/*.whl || exit 2
  preflight || { tail -40 "$out/preflight.log"; exit 3; }
fi
tail -3 "$out/preflight.log"
wait "$untar"
left=$((budget - ($(date +%s) - t0)))
echo "preflight done after $(( $(date +%s) - t0 ))s; session budget ${left}s"
python3 benchmarks/gpu_session.py --out "$out" --data-root /tmp/cifar10 --budget-s "$left" \
  --plan "${PLAN:-gpu}" 2>&1 \
  | tee "$out/session.log"
