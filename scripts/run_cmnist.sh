#!/usr/bin/env bash
# The reference two-stage Colored-MNIST recipe (Kim et al., CVPR 2019):
#   stage 1: baseline, 100 epochs, lr 0.01;  stage 2: LNL, 100 epochs, lr 0.001, from stage 1.
# Usage: bash scripts/run_cmnist.sh [SIGMA2]      (default 0.020)
# Env:   EPOCHS (per stage, 100), SEED (0), DATA_SEED (0), DEVICE (auto), DATA_ROOT (./data),
#        OUTPUT_DIR (./outputs), MNIST_FROM (import MNIST from this folder instead of
#        downloading), PYTHON (.venv/bin/python if present, else python3), EXTRA (more flags).
# Re-running continues unfinished stages and skips finished ones (--resume).
set -euo pipefail
cd "$(dirname "$0")/.."

VAR=${1:-0.020}
EPOCHS=${EPOCHS:-100}
SEED=${SEED:-0}
DATA_SEED=${DATA_SEED:-0}
DEVICE=${DEVICE:-auto}
DATA_ROOT=${DATA_ROOT:-./data}
OUTPUT_DIR=${OUTPUT_DIR:-./outputs}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if ! ls "$DATA_ROOT"/MNIST/raw/t10k-labels-idx1-ubyte* >/dev/null 2>&1; then
  if [ -n "${MNIST_FROM:-}" ]; then
    "$PYTHON" fetch_data.py mnist --from "$MNIST_FROM" --data_root_base "$DATA_ROOT"
  else
    "$PYTHON" fetch_data.py mnist --data_root_base "$DATA_ROOT"
  fi
fi

NAME="cmnist_var${VAR}_seed${SEED}"
COMMON=(--dataset_name ColoredMNIST --color_var "$VAR" --seed "$SEED" --data_seed "$DATA_SEED"
        --epochs "$EPOCHS" --device "$DEVICE" --data_root_base "$DATA_ROOT"
        --output_dir "$OUTPUT_DIR" --resume ${EXTRA:-})

"$PYTHON" main.py "${COMMON[@]}" --method baseline --lr 0.01 --experiment_name "${NAME}_baseline"
"$PYTHON" main.py "${COMMON[@]}" --method lnl --lr 0.001 --experiment_name "${NAME}_lnl" \
  --init_checkpoint "$OUTPUT_DIR/${NAME}_baseline/checkpoints/last.pth"

for stage in baseline lnl; do
  "$PYTHON" - "$OUTPUT_DIR/${NAME}_${stage}/results.json" "$stage" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"sigma2={r['experiment'].split('_var')[1].split('_')[0]} {sys.argv[2]:8s} "
      f"test_acc={r['test_acc']:.4f} (epochs={r['epochs']})")
PY
done
