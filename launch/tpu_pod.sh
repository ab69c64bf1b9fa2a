#!/usr/bin/env bash
# A TPU pod slice: runs the experiment on every worker, which then calls
# jax.distributed.initialize() (PRAGJAX_DISTRIBUTED=auto) and builds one
# global mesh.
#   launch/tpu_pod.sh TPU_NAME ZONE EXPERIMENT [absl flags...]
#   launch/tpu_pod.sh my-v5p-64 us-east5-a sami \
#       --config=experiments/configs/sami.py:mixtral8x7b --workdir=gs://bucket/runs/sami
# The repo must be at ~/pragjax on every worker (e.g. git clone it there with
# `gcloud compute tpus tpu-vm ssh ... --worker=all --command="git clone ..."`)
# and installed with `pip install -e ~/pragjax[tpu]`.
set -euo pipefail
tpu=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE EXPERIMENT [flags...]}
zone=${2:?zone}
exp=${3:?experiment}
shift 3
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all \
  --command="cd ~/pragjax && PRAGJAX_DISTRIBUTED=auto python -m experiments.${exp}${args}"
