#!/usr/bin/env bash
# One-shot GPU check for a bare GPU machine (Python 3.12 + a CUDA torch, no package index): installs the carried
# wheels, then runs scripts/gpu_check.py (device tests on CUDA, every command on a random-weight SD 2.1-base at
# 512 px in bf16, benchmarks/gpu_sd21.py) in under 8 minutes on one H100. Writes gpu_check.json and gpu_check.log
# into $OUT when set, else runs/gpu_check/.
#
#   bash scripts/gpu_wheels.sh              # once, where PyPI is reachable: fills .whl/ (~25 MB)
#   bash scripts/gpu_check.sh               # on the GPU machine (carry .whl)
#   bash scripts/gpu_check.sh --rehearse    # on a CPU: the same rows with the tiny random SD, a few minutes
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUTDIR=${OUT:-$ROOT/runs/gpu_check}
mkdir -p "$OUTDIR"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if [[ "${1:-}" == "--rehearse" ]]; then
  PY=$ROOT/.venv/bin/python
  [[ -x "$PY" ]] || make venv >/dev/null || { echo "gpu_check: make venv failed" >&2; exit 2; }
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
else
  PY=${PYTHON:-python3}
  if compgen -G ".whl/*.whl" >/dev/null; then
    SITE=/tmp/prunefit-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
      || { echo "gpu_check: installing .whl/ failed" >&2; exit 2; }
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "gpu_check: no .whl/ folder: using the machine's packages as they are (scripts/gpu_wheels.sh fills it)" >&2
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi
fi
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
"$PY" scripts/gpu_check.py --out "$OUTDIR" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
