#!/usr/bin/env bash
# Dogs and Cats, trained on TB1 (dark cats + bright dogs): baseline, then LNL from the baseline.
# Env as in scripts/run_real_images.sh (EPOCHS, IMAGE_SIZE, BATCH, PRETRAINED, DEVICE, ...).
exec bash "$(dirname "$0")/run_real_images.sh" dogs_cats TB1
