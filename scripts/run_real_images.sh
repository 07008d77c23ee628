#!/usr/bin/env bash
# The real-image benchmarks of Learning Not to Learn (Kim et al., CVPR 2019, §4.2-4.3), with the
# two-stage recipe used on Colored MNIST: stage 1 baseline (lr 0.01), stage 2 LNL (lr 0.001)
# started from the baseline's weights: scripts/launch.py --plan real_images, one benchmark and
# split. Prints both results.
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
"$PYTHON" scripts/launch.py --plan real_images --seeds "$SEED" --only "${NAME}_*" \
  ${EPOCHS:+--epochs "$EPOCHS"} --device "$DEVICE" --data_root "$DATA_ROOT" \
  --output_dir "$OUTPUT_DIR" --lanes 1 -- ${IMAGE_SIZE:+--image_size "$IMAGE_SIZE"} \
  ${BATCH:+--batch_size "$BATCH"} $([ "${PRETRAINED:-0}" = 1 ] && echo --pretrained || true) \
  ${EXTRA:-}
"$PYTHON" scripts/results.py table "$OUTPUT_DIR" --where "experiment_name=${NAME}_*" \
  --group_by variant --metrics test_acc \
  $(case "$BENCH" in dogs_cats) echo mixed_acc;; *) echo opposite_acc;; esac)
