"""Small shared helpers: seeding, device choice, atomic writes, progress bars, errors."""
import json
import os
import random
import sys
import tempfile

import numpy as np
import torch
from tqdm import tqdm


_UMASK = os.umask(0)
os.umask(_UMASK)


class UserError(Exception):
    """An error the user can fix; main.py prints its message (which says what to do) and exits 1."""


def set_seed(seed):
    """Seed python, numpy and torch: the one place a training seed is applied."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name):
    """Turn --device {auto,cpu,cuda} into a torch.device once; everything else receives it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; "
                        "use --device cpu (or auto).")
    return torch.device(name)


def rng_state():
    """Every random stream a training step may touch, for self-describing checkpoints."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_write(path, write_fn):
    """Write to a temp file in the same folder, fsync, then rename, so a crash never
    leaves a truncated file under the final name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            write_fn(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; honour the user's umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj, path):
    _atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_json_dump(obj, path):
    _atomic_write(path, lambda fh: fh.write(
        (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()))


def atomic_np_save(obj, path):
    _atomic_write(path, lambda fh: np.save(fh, obj, allow_pickle=True))


def progress(iterable, **kwargs):
    """tqdm that stays quiet when stderr is not a terminal (CI logs, pipes)."""
    return tqdm(iterable, disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True,
                **kwargs)
