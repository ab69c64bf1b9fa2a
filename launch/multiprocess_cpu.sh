#!/usr/bin/env bash
# N processes x M simulated CPU devices on localhost, joined by jax.distributed.
#   launch/multiprocess_cpu.sh -n 2 -m 4 EXPERIMENT [absl flags...]
# Process 0 writes metrics, checkpoints are written collectively; logs of
# process i go to $LOGDIR/proc_i.log (default /tmp/pragjax_mp).
set -euo pipefail
n=2; m=4; port=${PRAGJAX_PORT:-12355}; logdir=${LOGDIR:-/tmp/pragjax_mp}
while getopts "n:m:p:" opt; do
  case $opt in n) n=$OPTARG;; m) m=$OPTARG;; p) port=$OPTARG;; *) exit 2;; esac
done
shift $((OPTIND - 1))
exp=${1:?usage: launch/multiprocess_cpu.sh -n N -m M EXPERIMENT [flags...]}; shift
mkdir -p "$logdir"
pids=()
for ((i = 0; i < n; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${m}" \
  PRAGJAX_COORDINATOR="127.0.0.1:${port}" PRAGJAX_NUM_PROCESSES=$n PRAGJAX_PROCESS_ID=$i \
    python -m "experiments.${exp}" "$@" >"$logdir/proc_$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
tail -n 20 "$logdir/proc_0.log"
exit $status
