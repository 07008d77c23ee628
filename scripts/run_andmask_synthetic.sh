#!/usr/bin/env bash
# AND-mask's synthetic memorisation task (Parascandolo et al., ICLR 2021), configs/spiral.yaml:
# tau = 0 (plain averaged gradients, the baseline), AND-mask tau = 1, its geometric-mean
# variant, and GEN-mask, over SEEDS seeds (default 3). Prints mean ± std train and test accuracy:
# the baseline memorises the signatures (high train, near-chance test), AND-mask generalises.
# Env: SEEDS (3), EPOCHS (150), DEVICE (auto), OUTPUT_DIR (./outputs), PYTHON, EXTRA.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-3}
source scripts/common.sh
OUT="$OUTPUT_DIR/andmask_synthetic"
declare -A FLAGS=(
  [baseline]="--method andmask --andmask_tau 0"
  [andmask]="--method andmask --andmask_tau 1"
  [geom]="--method andmask --andmask_variant geom --andmask_tau 1"
  [genmask]="--method genmask"
)
for ((s = 0; s < SEEDS; s++)); do
  for m in baseline andmask geom genmask; do
    "$PYTHON" main.py --config configs/spiral.yaml ${FLAGS[$m]} --seed "$s" --data_seed "$s" \
      ${EPOCHS:+--epochs "$EPOCHS"} --device "$DEVICE" --output_dir "$OUT" \
      --experiment_name "${m}_s$s" --resume_if_any ${EXTRA:-} | tail -n 1
  done
done
"$PYTHON" scripts/results.py table "$OUT" --group_by variant --metrics train_acc test_acc
