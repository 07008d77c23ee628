#!/usr/bin/env bash
# IMDB-Face gender task (bias: age), trained on EB2: baseline, then LNL from the baseline.
# Env as in scripts/run_real_images.sh (EPOCHS, IMAGE_SIZE, BATCH, PRETRAINED, DEVICE, ...).
exec bash "$(dirname "$0")/run_real_images.sh" imdb_gender EB2
