# Sourced by the run scripts: makes sure MNIST is in $DATA_ROOT/MNIST/raw (import from
# $MNIST_FROM when set, else download), using $PYTHON.
if ! ls "$DATA_ROOT"/MNIST/raw/t10k-labels-idx1-ubyte* >/dev/null 2>&1; then
  if [ -n "${MNIST_FROM:-}" ]; then
    "$PYTHON" fetch_data.py mnist --from "$MNIST_FROM" --data_root_base "$DATA_ROOT"
  else
    "$PYTHON" fetch_data.py mnist --data_root_base "$DATA_ROOT"
  fi
fi
