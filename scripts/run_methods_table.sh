#!/usr/bin/env bash
# Every method on its benchmark, then outputs/methods_table/results.md (scripts/results.py methods).
#   IRM Colored MNIST: ERM, IRM, Gray, AND-mask      (scripts/run_irm_cmnist.sh, RESTARTS)
#   AND-mask synthetic: tau=0, AND, geom, GEN-mask   (scripts/run_andmask_synthetic.sh, SEEDS)
#   Colored MNIST: baseline, LNL, BlindEye, Gray     (scripts/run_cmnist.sh per SIGMAS x SEEDS)
#   CIFAR-10 random labels: tau=0 vs AND-mask        (only with CIFAR=1; needs fetch_data.py cifar10)
# Env: RESTARTS (10), SEEDS (3), SIGMAS ("0.020 ... 0.050"), CMNIST_EPOCHS (100 per stage),
#      CMNIST_METHODS ("baseline lnl blindeye gray"), CIFAR (0), plus what the scripts take.
# Finished runs are skipped, so the table can be built up over several sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-3}
SIGMAS=${SIGMAS:-"0.020 0.025 0.030 0.035 0.040 0.045 0.050"}
source scripts/common.sh
export PYTHON OUTPUT_DIR DATA_ROOT DEVICE

bash scripts/run_irm_cmnist.sh
SEEDS=$SEEDS bash scripts/run_andmask_synthetic.sh
for var in $SIGMAS; do
  for ((s = 0; s < SEEDS; s++)); do
    SEED=$s EPOCHS=${CMNIST_EPOCHS:-100} METHODS=${CMNIST_METHODS:-"baseline lnl blindeye gray"} \
      bash scripts/run_cmnist.sh "$var"
  done
done
if [ "${CIFAR:-0}" = 1 ]; then
  for ((s = 0; s < SEEDS; s++)); do
    for tau in 0 0.2; do
      name=$([ "$tau" = 0 ] && echo baseline || echo andmask)
      "$PYTHON" main.py --config configs/cifar_random_labels.yaml --andmask_tau "$tau" \
        --seed "$s" --data_seed "$s" --output_dir "$OUTPUT_DIR/cifar_random_labels" \
        --experiment_name "${name}_s$s" --resume_if_any ${EXTRA:-} | tail -n 1
    done
  done
fi
"$PYTHON" scripts/results.py methods "$OUTPUT_DIR"
