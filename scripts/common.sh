# Sourced by the run scripts. PYTHON: .venv/bin/python when present, else python3.
# ensure_mnist: MNIST into $DATA_ROOT/MNIST/raw, imported from $MNIST_FROM when set, else
# downloaded.
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEVICE=${DEVICE:-auto}
DATA_ROOT=${DATA_ROOT:-./data}
OUTPUT_DIR=${OUTPUT_DIR:-./outputs}

ensure_mnist() {
  if ! ls "$DATA_ROOT"/MNIST/raw/t10k-labels-idx1-ubyte* >/dev/null 2>&1; then
    if [ -n "${MNIST_FROM:-}" ]; then
      "$PYTHON" fetch_data.py mnist --from "$MNIST_FROM" --data_root_base "$DATA_ROOT"
    else
      "$PYTHON" fetch_data.py mnist --data_root_base "$DATA_ROOT"
    fi
  fi
}
