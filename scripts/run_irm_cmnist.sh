#!/usr/bin/env bash
# IRM's Colored MNIST (Arjovsky et al. 2019): ERM, IRM, the grayscale oracle and AND-mask with the
# paper's hyperparameters (configs/irm_cmnist_*.yaml), over RESTARTS restarts (default 10).
# Each restart r uses --seed r and --data_seed r (the data is re-drawn, as in the paper's script).
# Env: RESTARTS (10), METHODS ("erm irm gray andmask"), EPOCHS (501 steps), DEVICE (auto),
#      DATA_ROOT (./data), OUTPUT_DIR (./outputs), MNIST_FROM, PYTHON, EXTRA (more flags).
# Prints mean ± std train and test accuracy per method; the last line is 'IRM test_acc=<mean>'.
set -euo pipefail
cd "$(dirname "$0")/.."
RESTARTS=${RESTARTS:-10}
METHODS=${METHODS:-"erm irm gray andmask"}
source scripts/common.sh
ensure_mnist

OUT="$OUTPUT_DIR/irm_cmnist"
for ((r = 0; r < RESTARTS; r++)); do
  for m in $METHODS; do
    "$PYTHON" main.py --config "configs/irm_cmnist_$m.yaml" --seed "$r" --data_seed "$r" \
      ${EPOCHS:+--epochs "$EPOCHS"} --device "$DEVICE" --data_root_base "$DATA_ROOT" \
      --output_dir "$OUT" --experiment_name "${m}_r$r" --resume_if_any ${EXTRA:-} | tail -n 1
  done
done

"$PYTHON" scripts/results.py table "$OUT" --group_by variant --metrics train_acc test_acc \
  $(case " $METHODS " in *" irm "*) echo --final IRM;; esac)
