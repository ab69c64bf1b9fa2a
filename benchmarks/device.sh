#!/usr/bin/env bash
# The accelerator checks of issue 18 in one run, under 8 minutes on one H100/H200 (each step is cut at its own
# budget; every JSON is rewritten as it goes, so a cut run keeps what it measured). From the repository root:
#
#   OUT=/some/dir bash benchmarks/device.sh
#   OUT=/tmp/dev QUICK=1 bash benchmarks/device.sh     # CPU smoke test of the script itself (about 1 minute)
#
# 1. benchmarks/device_checks.py (budget CHECKS_S, default 240 s): cuDNN vs XLA attention parity (outputs and
#    gradients, bf16 vs an f32 reference; and a 4-layer llama's logits), greedy generation tokens/s of a
#    SmolLM2-135M-shaped model, and its AdamW train step (tokens/s, MFU).
# 2. benchmarks/train_step.py --gpu-1b --skip-cpu (budget MFU_S, default 180 s): MFU of a ~1B llama (D=2048,
#    16 layers, bf16 compute, cuDNN attention, falling back to XLA) at 8 x 2048 tokens, against the published
#    bf16 peak of the part (target >= 40%).
# Output: $OUT/device.log (everything printed), $OUT/device_checks.json, $OUT/train_step_gpu.json.
set -o pipefail
OUT=${OUT:?set OUT to an output directory}
mkdir -p "$OUT"
LOG="$OUT/device.log"
: > "$LOG"
CHECKS_S=${CHECKS_S:-240}
MFU_S=${MFU_S:-180}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -n "$QUICK" ]; then
  export JAX_PLATFORMS=cpu
  CHECK_ARGS=(--quick) MFU_ARGS=(--quick)
elif command -v nvidia-smi > /dev/null 2>&1; then
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
  CHECK_ARGS=() MFU_ARGS=()
else
  echo "no nvidia-smi: run with QUICK=1 for the CPU smoke test" | tee -a "$LOG"
  exit 2
fi
# Keep XLA from grabbing 75% of the GPU up front: the sections allocate and free in turn.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}

{
  echo "== $(date -u +%FT%TZ) JAX_PLATFORMS=$JAX_PLATFORMS QUICK=${QUICK:-} CHECKS_S=$CHECKS_S MFU_S=$MFU_S"
  nvidia-smi -L 2> /dev/null || echo "nvidia-smi: none"
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
  echo "cpus: $(nproc)"
} 2>&1 | tee -a "$LOG"

timeout "$CHECKS_S" python3 benchmarks/device_checks.py "${CHECK_ARGS[@]}" --out "$OUT/device_checks.json" 2>&1 \
  | tee -a "$LOG"
rc1=$?
echo "== device_checks exit status $rc1 (124: cut at CHECKS_S=$CHECKS_S)" | tee -a "$LOG"

if [ -n "$QUICK" ]; then
  GPU_FLAG=()  # --gpu-1b needs a GPU; the smoke test times the CPU comparison instead
else
  GPU_FLAG=(--gpu-1b --skip-cpu)
fi
timeout "$MFU_S" python3 benchmarks/train_step.py "${GPU_FLAG[@]}" "${MFU_ARGS[@]}" --cpus 0 \
  --out "$OUT/train_step_gpu.json" 2>&1 | tee -a "$LOG"
rc2=$?
echo "== train_step exit status $rc2 (124: cut at MFU_S=$MFU_S)" | tee -a "$LOG"
[ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ]
