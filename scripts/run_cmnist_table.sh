#!/usr/bin/env bash
# The Colored-MNIST table: SIGMAS x SEEDS x METHODS with the reference two-stage recipe
# (as scripts/run_cmnist.sh runs it for one sigma^2), trained as sweeps (README, "Sweeps"):
#   stage 1: every baseline run in one process (and every gray run in another sweep after it),
#   stage 2: every LNL and BlindEye run in one process, each from its own stage-1 checkpoint,
# then outputs/cmnist_table/{results.csv,results.md,accuracy_vs_var.png} (scripts/results.py
# cmnist). Runs are named as run_cmnist.sh names them: cmnist_var<sigma2>_seed<seed>_<method>.
# Env: SIGMAS ("0.020 0.025 0.030 0.035 0.040 0.045 0.050"), SEEDS (3), METHODS ("baseline lnl
#      blindeye gray"), EPOCHS (100 per stage), plus what run_cmnist.sh takes (DEVICE,
#      DATA_ROOT, OUTPUT_DIR, MNIST_FROM, EXTRA). Finished runs are skipped and stopped ones
#      continued (--resume_if_any), so an interrupted table just continues when run again.
set -euo pipefail
cd "$(dirname "$0")/.."
SIGMAS=${SIGMAS:-"0.020 0.025 0.030 0.035 0.040 0.045 0.050"}
SEEDS=${SEEDS:-3}
EPOCHS=${EPOCHS:-100}
METHODS=${METHODS:-"baseline lnl blindeye gray"}
source scripts/common.sh
ensure_mnist

NAME='cmnist_var{color_var}_seed{seed}'  # main.py fills the fields per run
COMMON=(--dataset_name ColoredMNIST --color_var $SIGMAS --seed $(seq 0 $((SEEDS - 1)))
        --data_seed "${DATA_SEED:-0}" --epochs "$EPOCHS" --device "$DEVICE"
        --data_root_base "$DATA_ROOT" --output_dir "$OUTPUT_DIR" --resume_if_any ${EXTRA:-})
mkdir -p "$OUTPUT_DIR"
failed=()
sweep() {  # sweep LABEL main.py-flags...: one stage's runs as one process, logged aside
  local label=$1; shift
  echo "$label: $(set -- $SIGMAS; echo $#) sigma^2 x $SEEDS seeds" \
       "(log: $OUTPUT_DIR/.cmnist_table_$label.log)"
  "$PYTHON" main.py "${COMMON[@]}" "$@" > "$OUTPUT_DIR/.cmnist_table_$label.log" 2>&1 ||
    failed+=("$label")
}
recipe() {  # recipe VARIANT: the reference recipe's flags for that row, into REC (plans.py)
  mapfile -t REC < <("$PYTHON" scripts/plans.py stage "$1")
  [ ${#REC[@]} -gt 0 ] || exit 2
}
stage2=()
for m in $METHODS; do
  case $m in
    baseline|gray) ;;
    lnl|blindeye) stage2+=("$m") ;;
    *) echo "unknown method '$m' in METHODS (baseline, lnl, blindeye, gray)" >&2; exit 2 ;;
  esac
done
if [[ " $METHODS " == *" baseline "* || ${#stage2[@]} -gt 0 ]]; then
  recipe baseline
  sweep baseline "${REC[@]}" --experiment_name "${NAME}_baseline"
fi
if [[ " $METHODS " == *" gray "* ]]; then
  recipe gray
  sweep gray "${REC[@]}" --experiment_name "${NAME}_gray"
fi
if [ ${#stage2[@]} -gt 0 ]; then
  if [[ " ${failed[*]} " == *" baseline "* ]]; then
    failed+=("stage2 (not started: it starts from the baseline runs)")
  else
    recipe "${stage2[0]}"  # one stage-2 recipe; --method then names every stage-2 row
    sweep stage2 "${REC[@]}" --method "${stage2[@]}" --experiment_name "${NAME}_{method}" \
      --init_checkpoint "$OUTPUT_DIR/${NAME}_baseline/checkpoints/last.pth"
  fi
fi
if [ ${#failed[@]} -gt 0 ]; then
  for label in "${failed[@]}"; do
    echo "sweep failed: $label; its log: $OUTPUT_DIR/.cmnist_table_${label%% *}.log" >&2
    tail -n 5 "$OUTPUT_DIR/.cmnist_table_${label%% *}.log" >&2 2>/dev/null || true
  done
  echo "run this script again to continue (finished runs are skipped)" >&2
  exit 1
fi
"$PYTHON" scripts/results.py cmnist "$OUTPUT_DIR" --where 'experiment_name=cmnist_var*' \
  --out "$OUTPUT_DIR/cmnist_table"
