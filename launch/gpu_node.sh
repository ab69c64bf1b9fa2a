#!/usr/bin/env bash
# One GPU node (all local GPUs in one process; one mesh over them).
#   launch/gpu_node.sh EXPERIMENT [absl flags...]
#   launch/gpu_node.sh sft --config=experiments/configs/sft.py:llama8b \
#       --config.model.path=/ckpt/Meta-Llama-3.1-8B-Instruct --workdir=/runs/sft
# Several nodes under SLURM: srun launches this once per node with
# PRAGJAX_DISTRIBUTED=auto (jax.distributed discovers the job itself).
set -euo pipefail
exp=${1:?usage: launch/gpu_node.sh EXPERIMENT [flags...]}; shift
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true ${XLA_FLAGS:-}"
if [[ -n "${SLURM_JOB_ID:-}" && "${SLURM_NNODES:-1}" -gt 1 ]]; then
  export PRAGJAX_DISTRIBUTED=auto
fi
exec python -m "experiments.${exp}" "$@"
