#!/usr/bin/env bash
# The Colored-MNIST table: SIGMAS x SEEDS x METHODS with the reference two-stage recipe
# (scripts/run_cmnist.sh), then outputs/cmnist_table/{results.csv,results.md,accuracy_vs_var.png}
# (scripts/results.py cmnist).
# Env: SIGMAS ("0.020 0.025 0.030 0.035 0.040 0.045 0.050"), SEEDS (3), METHODS ("baseline lnl
#      blindeye gray"), EPOCHS (100 per stage), JOBS (runs at once; default 1 on the CPU and,
#      when a GPU is visible, half the CPU cores: small runs leave one GPU mostly idle, and
#      each run needs some CPU to feed it), plus what run_cmnist.sh takes (DEVICE, DATA_ROOT, OUTPUT_DIR,
#      MNIST_FROM, EXTRA). Finished runs are skipped, so an interrupted sweep just continues.
set -euo pipefail
cd "$(dirname "$0")/.."
SIGMAS=${SIGMAS:-"0.020 0.025 0.030 0.035 0.040 0.045 0.050"}
SEEDS=${SEEDS:-3}
if [ -z "${JOBS:-}" ]; then
  JOBS=1
  if [ "${DEVICE:-auto}" != cpu ] && nvidia-smi -L >/dev/null 2>&1; then
    JOBS=$(( $(nproc) / 2 > 1 ? $(nproc) / 2 : 1 ))
  fi
fi
export METHODS=${METHODS:-"baseline lnl blindeye gray"}
source scripts/common.sh
export PYTHON DEVICE DATA_ROOT OUTPUT_DIR
ensure_mnist  # once, before runs start in parallel

mkdir -p "$OUTPUT_DIR"
rm -f "$OUTPUT_DIR"/.cmnist_failed_*
for var in $SIGMAS; do
  for ((s = 0; s < SEEDS; s++)); do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    log="$OUTPUT_DIR/.cmnist_var${var}_seed$s.log"
    (SEED=$s bash scripts/run_cmnist.sh "$var" > "$log" 2>&1 ||
       touch "$OUTPUT_DIR/.cmnist_failed_var${var}_seed$s") &
  done
done
wait
if ls "$OUTPUT_DIR"/.cmnist_failed_* >/dev/null 2>&1; then
  echo "some runs failed: $(ls "$OUTPUT_DIR"/.cmnist_failed_* | sed 's/.*failed_//' | tr '\n' ' ')" \
       "(logs: $OUTPUT_DIR/.cmnist_var*_seed*.log)" >&2
  exit 1
fi
"$PYTHON" scripts/results.py cmnist "$OUTPUT_DIR" --where 'experiment_name=cmnist_var*' \
  --out "$OUTPUT_DIR/cmnist_table"
