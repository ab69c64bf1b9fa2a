#!/usr/bin/env bash
# One short accelerator run of benchmarks/sawmil_fit.py (issue 7): pragjax's sAwMIL on the GPU (solver auto =
# FISTA there) at 100x256, 1800x4096 and 400x4096 (bags x dims, 10 tokens), and the authors' `sawmil` package
# (OSQP, "paper" variant) on the same machine's CPU where it finishes in seconds (<= 3,000 training tokens).
# Budget: under 5 minutes on an H200 + 16 CPU cores (the benchmark is cut at BUDGET_S; its JSON is rewritten after
# every size, so a cut run keeps what it measured). Run from the repository root:
#
#   OUT=/some/dir bash benchmarks/device_sawmil.sh
#
# Env: OUT (required), SIZES (default 100x256,1800x4096,400x4096: the 1,800-bag pragjax row comes before the
# package's slowest row), BUDGET_S (default 270), SKIP_WHEELS=1 (do not install .whl/, e.g. for a local CPU
# check), JAX_PLATFORMS (default cuda when nvidia-smi is present, else cpu).
# Wheels: .whl/ (git-ignored; carry it to the device) holds sawmil 0.2.1, osqp 1.1.3 (cp312) and their small
# pure-Python dependencies; only the ones the image cannot import are installed, into /tmp/site.
set -o pipefail
OUT=${OUT:?set OUT to an output directory}
mkdir -p "$OUT"
LOG="$OUT/sawmil_gpu.log"
: > "$LOG"
SIZES=${SIZES:-100x256,1800x4096,400x4096}
BUDGET_S=${BUDGET_S:-270}
export PYTHONUNBUFFERED=1
if command -v nvidia-smi > /dev/null 2>&1; then
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
else
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
fi

if [ -z "$SKIP_WHEELS" ]; then
  need=()
  for w in .whl/*.whl; do
    [ -e "$w" ] || continue
    mod=$(basename "$w" | cut -d- -f1 | tr 'A-Z' 'a-z')
    python3 -c "import $mod" > /dev/null 2>&1 || need+=("$w")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing into /tmp/site: ${need[*]}" | tee -a "$LOG"
    if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "${need[@]}" 2>&1 | tee -a "$LOG"; then
      echo "pip install failed; unpacking the wheels into /tmp/site instead" | tee -a "$LOG"
      for w in "${need[@]}"; do python3 -m zipfile -e "$w" /tmp/site 2>&1 | tee -a "$LOG"; done
    fi
  fi
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

{
  echo "== $(date -u +%FT%TZ) JAX_PLATFORMS=$JAX_PLATFORMS SIZES=$SIZES BUDGET_S=$BUDGET_S"
  nvidia-smi -L 2> /dev/null || echo "nvidia-smi: none"
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
  python3 -c "import sawmil, osqp; print('sawmil', getattr(sawmil, '__version__', '?'), 'osqp', osqp.__version__)" \
    || echo "sawmil/osqp not importable: the package columns will be empty"
  echo "cpus: $(nproc)"
} 2>&1 | tee -a "$LOG"

timeout "$BUDGET_S" python3 benchmarks/sawmil_fit.py --sizes "$SIZES" --solver auto --variants paper \
  --max-sawmil-tokens 3000 --same-qp-max-tokens 800 --out "$OUT/sawmil_fit_gpu.json" 2>&1 \
  | grep -v "^Linear kernel has no parameters" | tee -a "$LOG"
rc=$?
echo "== benchmark exit status $rc (124: cut at BUDGET_S=$BUDGET_S; rows written so far are in sawmil_fit_gpu.json)" \
  | tee -a "$LOG"
exit "$rc"
