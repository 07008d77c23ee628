#!/usr/bin/env bash
# AND-mask's synthetic memorisation task (Parascandolo et al., ICLR 2021), configs/spiral.yaml:
# tau = 0 (plain averaged gradients, the baseline), AND-mask tau = 1, its geometric-mean
# variant, and GEN-mask, over SEEDS seeds (default 3): scripts/launch.py --plan
# andmask_synthetic. Prints mean ± std train and test accuracy: the baseline memorises the
# signatures (high train, near-chance test), AND-mask generalises.
# Env: SEEDS (3), EPOCHS (150), DEVICE (auto), OUTPUT_DIR (./outputs), PYTHON, LANES (1), EXTRA.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-3}
source scripts/common.sh
OUT="$OUTPUT_DIR/andmask_synthetic"
"$PYTHON" scripts/launch.py --plan andmask_synthetic --seeds $(seq 0 $((SEEDS - 1))) \
  ${EPOCHS:+--epochs "$EPOCHS"} --device "$DEVICE" --data_root "$DATA_ROOT" --output_dir "$OUT" \
  --lanes "${LANES:-1}" -- ${EXTRA:-}
"$PYTHON" scripts/results.py table "$OUT" --group_by variant --metrics train_acc test_acc
