"""Shared fixtures: real MNIST imported once per session from ../shared/data/mnist (or $MNIST_DIR)."""
import os
import sys

# as main.py sets it before torch is imported (the in-process runs share this process's torch)
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # a pytest-xdist worker (`make test`): one thread here and in the runs it starts, as
    # workers with a thread per core each would fight over the cores
    os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fetch_data  # noqa: E402

MNIST_CANDIDATES = [os.environ.get("MNIST_DIR", ""),
                    os.path.join(ROOT, "..", "shared", "data", "mnist"),
                    os.path.join(ROOT, "data", "MNIST", "raw")]


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory):
    """A data root holding real MNIST (MNIST/raw), shared by the whole session."""
    src = next((d for d in MNIST_CANDIDATES
                if d and os.path.exists(os.path.join(d, "t10k-labels-idx1-ubyte.gz"))
                or d and os.path.exists(os.path.join(d, "t10k-labels-idx1-ubyte"))), None)
    if src is None:
        pytest.fail("real MNIST not found: set MNIST_DIR to a folder with the four idx files "
                    "(CI uses ../shared/data/mnist)")
    root = tmp_path_factory.mktemp("data")
    fetch_data.import_mnist(src, str(root))
    return str(root)


@pytest.fixture
def fake_mnist():
    """A tiny MNIST-shaped dict: a bright square per image, labels 0..9 cycling."""
    rng = np.random.default_rng(0)
    n_train, n_test = 200, 100
    def images(n):
        x = np.zeros((n, 28, 28), np.uint8)
        x[:, 8:20, 8:20] = rng.integers(128, 256, size=(n, 12, 12))
        return x
    return {"train_images": images(n_train), "train_labels": np.arange(n_train) % 10,
            "test_images": images(n_test), "test_labels": np.arange(n_test) % 10}


@pytest.fixture
def stop_after(monkeypatch):
    """stop_after(steps): SIGTERM to this process once `steps` training steps (of all runs in
    it) have been taken, as a budget or a scheduler stops a run; monkeypatch.undo() ends it."""
    import signal
    import solver as solver_module

    def arm(steps):
        taken, step = [], solver_module.Solver.step

        def counted(self, batch):
            taken.append(1)
            if len(taken) == steps:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(self, batch)
        monkeypatch.setattr(solver_module.Solver, "step", counted)
    return arm
