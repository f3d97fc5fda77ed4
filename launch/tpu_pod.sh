#!/usr/bin/env bash
# A Cloud TPU VM pod slice: runs the same fbl-train command on every worker. JAX reads the pod's
# topology itself (jax.distributed.initialize with no arguments), so config.distributed stays "auto".
#
#   launch/tpu_pod.sh TPU_NAME ZONE --config=configs/imagenet_lt.py --workdir=gs://bucket/runs/inlt \
#       --config.data.root=/data/imagenet --config.data.train_list=...
#
# The repository must be installed on every worker (pip install -e '.[tf]'), and the data and the
# workdir must be visible from every worker (a GCS bucket or a shared disk).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 TPU_NAME ZONE FBL_TRAIN_ARGS..." >&2
  exit 2
fi
tpu="$1"; zone="$2"; shift 2
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all \
  --command="cd \$HOME/fbl-jax && fbl-train${args}"
