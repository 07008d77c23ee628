#!/usr/bin/env bash
# The real-image benchmarks of Learning Not to Learn (Kim et al., CVPR 2019, §4.2-4.3), with the
# two-stage recipe used on Colored MNIST: stage 1 baseline (lr 0.01), stage 2 LNL (lr 0.001)
# started from the baseline's weights. Prints both results.
# Usage: bash scripts/run_real_images.sh {dogs_cats|imdb_gender|imdb_age} SPLIT
#        (the run_dogs_cats_tb*.sh and run_imdb_eb*_*.sh scripts call this)
# Env:   EPOCHS (per stage; the config's 30), IMAGE_SIZE (224), BATCH (64), SEED (0),
#        PRETRAINED (0; 1 = start from ImageNet weights), DEVICE (auto), DATA_ROOT (./data),
#        OUTPUT_DIR (./outputs), PYTHON, EXTRA (more flags for main.py).
# Re-running continues unfinished stages and skips finished ones (--resume_if_any).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=$1
SPLIT=$2
SEED=${SEED:-0}
source scripts/common.sh

NAME="${BENCH}_${SPLIT}_seed${SEED}"
COMMON=(--config "configs/$BENCH.yaml" --bias_split "$SPLIT" --seed "$SEED"
        --device "$DEVICE" --data_root_base "$DATA_ROOT" --output_dir "$OUTPUT_DIR" --resume_if_any
        ${EPOCHS:+--epochs "$EPOCHS"} ${IMAGE_SIZE:+--image_size "$IMAGE_SIZE"}
        ${BATCH:+--batch_size "$BATCH"} $([ "${PRETRAINED:-0}" = 1 ] && echo --pretrained || true)
        ${EXTRA:-})
"$PYTHON" main.py "${COMMON[@]}" --experiment_name "${NAME}_baseline" --method baseline --lr 0.01
"$PYTHON" main.py "${COMMON[@]}" --experiment_name "${NAME}_lnl" --method lnl --lr 0.001 \
  --init_checkpoint "$OUTPUT_DIR/${NAME}_baseline/checkpoints/last.pth"

for m in baseline lnl; do
  "$PYTHON" - "$OUTPUT_DIR/${NAME}_$m/results.json" "$m" "$BENCH" "$SPLIT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
extra = " ".join(f"{k}={v:.4f}" for k, v in sorted(r.items())
                 if k.endswith("_acc") and k not in ("test_acc", "train_acc", "bias_acc"))
print(f"{sys.argv[3]} {sys.argv[4]} {sys.argv[2]:8s} test_acc={r['test_acc']:.4f} {extra} "
      f"(epochs={r['epochs']})")
PY
done
