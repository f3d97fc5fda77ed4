#!/usr/bin/env bash
# The real trainer on CIFAR-10-LT (IF 100, configs/cifar10_lt.py) laid out two ways on the CPU:
# one process on every core, then one process per core, all at once (what sweep_processes=0
# does). A few epochs with an evaluation after each; prints each run's timing.json totals and
# the images/s they give. Let nothing else run meanwhile: other work changes the figures.
#
#   benchmarks/trainer_layouts.sh DATA_ROOT [EPOCHS] [OUT]
#   DATA_ROOT: CIFAR-10 as an image-folder tree, DATA_ROOT/{train,test}/<class>/ (docs/protocols.md);
#   EPOCHS defaults to 4
set -euo pipefail
root=${1:?give the CIFAR-10 image-folder root}; epochs=${2:-4}; out=${3:-$(mktemp -d)}
cores=$(nproc)
repo=$(cd "$(dirname "$0")/.." && pwd)
lscpu | grep -E 'Model name' ; lscpu | grep Flags | tr ' ' '\n' | grep -E '^(avx2|avx512f|amx_tile)$' | tr '\n' ' '; echo
train() {  # NAME CPUS THREADS
  taskset -c "$2" env OMP_NUM_THREADS="$3" fbl-train --config="$repo/configs/cifar10_lt.py" \
    --workdir="$out/$1" --config.data.root="$root" --config.data.cache_dir="$out/cache" \
    --config.num_epochs="$epochs" --config.eval_every_epochs=1 \
    --config.checkpoint_every_epochs="$epochs" --config.optimizer.warmup_epochs=1.0 \
    --config.optimizer.decay_epochs="($((epochs - 1)),)" --config.optimizer.decay_multipliers='(0.01,)' \
    --config.loss.curriculum_offset=1.0 --config.loss.drw_start_epoch=$((epochs - 1)) \
    > "$out/$1.log" 2>&1
}
report() {  # NAME...
  python3 - "$out" "$epochs" "$@" <<'PY'
import json, sys
out, epochs, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
images = epochs * 193 * 64  # a CIFAR-10-LT IF 100 epoch: 193 steps of 64
for name in names:
    t = json.load(open(f"{out}/{name}/timing.json"))["total"]
    print(f"{name}: train {t['train']:.1f} s ({images / t['train']:.0f} img/s), "
          f"{epochs} evaluations {t['eval']:.1f} s ({t['eval'] / epochs:.1f} s each, 10,900 images), "
          f"compile {t['compile']:.1f} s")
PY
}
train one_process "0-$((cores - 1))" "$cores"
report one_process
names=()
for ((c = 0; c < cores; c++)); do train "process_on_core$c" "$c" 1 & names+=("process_on_core$c"); done
wait
report "${names[@]}"
