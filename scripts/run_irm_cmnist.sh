#!/usr/bin/env bash
# IRM's Colored MNIST (Arjovsky et al. 2019): ERM, IRM, the grayscale oracle and AND-mask with the
# paper's hyperparameters (configs/irm_cmnist_*.yaml), over RESTARTS restarts (default 10):
# scripts/launch.py --plan irm_cmnist (restart r: --seed r --data_seed r, the data re-drawn as in
# the paper's script; on a cluster, the same launch with --launcher slurm).
# Env: RESTARTS (10), METHODS ("erm irm gray andmask"), EPOCHS (the configs' 501 steps), DEVICE
#      (auto), DATA_ROOT (./data), OUTPUT_DIR (./outputs), MNIST_FROM, PYTHON, LANES (1 process
#      at a time), EXTRA (more main.py flags for every run).
# Prints mean ± std train and test accuracy per method; the last line is 'IRM test_acc=<mean>'.
set -euo pipefail
cd "$(dirname "$0")/.."
RESTARTS=${RESTARTS:-10}
METHODS=${METHODS:-"erm irm gray andmask"}
source scripts/common.sh
ensure_mnist

OUT="$OUTPUT_DIR/irm_cmnist"
ONLY=()
for m in $METHODS; do ONLY+=("${m}_r*"); done
"$PYTHON" scripts/launch.py --plan irm_cmnist --seeds $(seq 0 $((RESTARTS - 1))) \
  --only "${ONLY[@]}" ${EPOCHS:+--epochs "$EPOCHS"} --device "$DEVICE" --data_root "$DATA_ROOT" \
  --output_dir "$OUT" --lanes "${LANES:-1}" -- ${EXTRA:-}

"$PYTHON" scripts/results.py table "$OUT" --group_by variant --metrics train_acc test_acc \
  $(case " $METHODS " in *" irm "*) echo --final IRM;; esac)
