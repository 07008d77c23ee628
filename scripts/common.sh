# Sourced by the run scripts. PYTHON: .venv/bin/python when present, else python3.
# ensure_mnist: MNIST into $DATA_ROOT/MNIST/raw, imported from $MNIST_FROM when set, else
# downloaded.
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEVICE=${DEVICE:-auto}
DATA_ROOT=${DATA_ROOT:-./data}
OUTPUT_DIR=${OUTPUT_DIR:-./outputs}

ensure_mnist() {  # fetch_data.py's own check: nothing happens when MNIST is there
  "$PYTHON" fetch_data.py mnist --if_missing ${MNIST_FROM:+--from "$MNIST_FROM"} \
    --data_root_base "$DATA_ROOT"
}
