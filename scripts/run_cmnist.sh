#!/usr/bin/env bash
# The reference two-stage Colored-MNIST recipe (Kim et al., CVPR 2019; its flags per row from
# scripts/plans.py, the one home of the recipe the long-run plans use too):
#   stage 1: baseline, 100 epochs, lr 0.01;  stage 2: LNL, 100 epochs, lr 0.001, from stage 1.
# Comparison methods (METHODS="baseline lnl blindeye gray"): BlindEye runs as stage 2 like LNL
# (same start, lr and epochs); Gray is the baseline recipe on grayscale images.
# Usage: bash scripts/run_cmnist.sh [SIGMA2]      (default 0.020)
# Env:   EPOCHS (per stage, 100), METHODS ("baseline lnl"), SEED (0), DATA_SEED (0),
#        DEVICE (auto), DATA_ROOT (./data), OUTPUT_DIR (./outputs), MNIST_FROM (import MNIST
#        from this folder instead of downloading), PYTHON (.venv/bin/python if present, else
#        python3), EXTRA (more flags for main.py), RESTART_STAGE2 (1: start the stage-2 runs
#        again with --overwrite, e.g. after re-running stage 1 with more EPOCHS).
# Re-running continues unfinished stages and skips finished ones (--resume_if_any). A stage-2
# run whose stage-1 checkpoint has changed since it started is refused, not resumed.
set -euo pipefail
cd "$(dirname "$0")/.."

VAR=${1:-0.020}
EPOCHS=${EPOCHS:-100}
METHODS=${METHODS:-"baseline lnl"}
SEED=${SEED:-0}
DATA_SEED=${DATA_SEED:-0}
source scripts/common.sh
ensure_mnist

NAME="cmnist_var${VAR}_seed${SEED}"
COMMON=(--dataset_name ColoredMNIST --color_var "$VAR" --seed "$SEED" --data_seed "$DATA_SEED"
        --epochs "$EPOCHS" --device "$DEVICE" --data_root_base "$DATA_ROOT"
        --output_dir "$OUTPUT_DIR" --resume_if_any ${EXTRA:-})
BASELINE="$OUTPUT_DIR/${NAME}_baseline/checkpoints/last.pth"

run() {  # run VARIANT more-main.py-flags...: the recipe's flags for that row (plans.py)
  local label=$1; shift
  local recipe
  mapfile -t recipe < <("$PYTHON" scripts/plans.py stage "$label")
  [ ${#recipe[@]} -gt 0 ] || exit 2
  "$PYTHON" main.py "${COMMON[@]}" "${recipe[@]}" --experiment_name "${NAME}_$label" "$@"
}
needs_baseline=0
for m in $METHODS; do case $m in baseline|lnl|blindeye) needs_baseline=1;; esac; done
[ $needs_baseline = 1 ] && run baseline
for m in $METHODS; do
  case $m in
    baseline) ;;
    lnl|blindeye) run "$m" --init_checkpoint "$BASELINE" ${RESTART_STAGE2:+--overwrite} ;;
    gray) run gray ;;
    *) echo "unknown method '$m' in METHODS (baseline, lnl, blindeye, gray)" >&2; exit 2 ;;
  esac
done

for m in $METHODS; do
  "$PYTHON" - "$OUTPUT_DIR/${NAME}_$m/results.json" "$m" "$VAR" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
import os
print(f"sigma2={sys.argv[3]} {sys.argv[2]:8s} test_acc={r['test_acc']:.4f} (epochs={r['epochs']}) "
      f"-> {os.path.dirname(sys.argv[1])}")
PY
done
