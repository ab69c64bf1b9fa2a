#!/usr/bin/env bash
# Run an experiment on this machine's CPU, optionally simulating devices.
#   launch/local_cpu.sh [-d DEVICES] EXPERIMENT [absl flags...]
#   launch/local_cpu.sh -d 8 sft --config=experiments/configs/sft.py:toy --workdir=/tmp/sft
set -euo pipefail
devices=1
if [[ "${1:-}" == "-d" ]]; then devices=$2; shift 2; fi
exp=${1:?usage: launch/local_cpu.sh [-d DEVICES] EXPERIMENT [flags...]}; shift
export JAX_PLATFORMS=cpu
export XLA_FLAGS="--xla_force_host_platform_device_count=${devices} ${XLA_FLAGS:-}"
exec python -m "experiments.${exp}" "$@"
