#!/usr/bin/env bash
# fbl-jax against the PyTorch reference, side by side on this CPU: ROUNDS rounds of
# (PyTorch NCHW, PyTorch channels-last, fbl-jax as the trainer runs on the CPU — oneDNN
# convolutions, fused-gradient BatchNorm, 4 steps per compiled call —, the same with XLA's
# convolutions, the former default, and with 1 step per call), each the median images/s of STEPS
# timed ResNet-32 + FBL train steps at batch 64.
# Alternating them spreads the machine's drift over all of them; compare within a round.
#
#   TORCH_PYTHON=/path/to/venv-with-torch/bin/python bash benchmarks/cpu_pairs.sh [ROUNDS] [STEPS]
set -euo pipefail
rounds="${1:-4}"
steps="${2:-40}"
torch_py="${TORCH_PYTHON:?set TORCH_PYTHON to a python with torch (see benchmarks/torch_reference.py)}"
jax_bench() {
  fbl-bench --model resnet32 --batch-size 64 --steps "$3" --conv "$1" --steps-per-call "$2" \
    --json 2>/dev/null | tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); r=d['results'][0]
print(f\"fbl-jax conv {d['conv']}, {d['batch_norm']} BN, {d['steps_per_call']} step(s)/call: median {r['images_per_s']:.1f} img/s (min {r['min_images_per_s']:.1f}, max {r['max_images_per_s']:.1f})\")"
}
for i in $(seq "$rounds"); do
  echo "round $i $(date -u +%FT%TZ)"
  "$torch_py" benchmarks/torch_reference.py --batch-size 64 --steps "$steps" | tail -1
  "$torch_py" benchmarks/torch_reference.py --batch-size 64 --steps "$steps" --channels-last | tail -1
  jax_bench auto 4 "$((steps / 4 + 1))"
  jax_bench xla 4 "$((steps / 4 + 1))"
  jax_bench auto 1 "$steps"
done
