"""Small shared helpers: seeding, process rank, atomic writes, progress bars, errors, the log."""
import errno
import json
import os
import random
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm


_UMASK = os.umask(0)
os.umask(_UMASK)


class UserError(Exception):
    """An error the user can fix; main.py prints its message (which says what to do) and exits 1."""


class ArgError(UserError):
    """A bad argument found after parsing (a resumed run's settings, a method that cannot use
    the dataset's b): one line, exit code 2, like argparse's own errors."""


class DiskFull(UserError):
    """No space left while writing a file: the message names the file and the free space."""


class BadInput(UserError):
    """A data file that cannot be used (e.g. an unreadable image), met while training: the
    Solver saves its progress before stopping. A DataLoader worker's copy of this error
    arrives with the worker's traceback in its message; only the message itself is kept."""

    def __init__(self, message):
        if "Original Traceback" in message:
            message = message.strip().splitlines()[-1].split("BadInput: ", 1)[-1]
        super().__init__(message)


class RunStopped(Exception):
    """Training stopped on purpose (a signal, a diverged loss): message and exit code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def set_seed(seed):
    """Seed python, numpy and torch: the one place a training seed is applied."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dist_world():
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def dist_rank():
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def set_deterministic():
    """Bit-identical results for the same seed: deterministic kernels only."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def rng_state():
    """Every random stream a training step may touch, for self-describing checkpoints. Only
    tensors and plain values, so a checkpoint loads with torch.load(weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    numpy = state["numpy"]
    if isinstance(numpy, dict):
        numpy = (numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                 numpy["has_gauss"], numpy["cached_gaussian"])
    np.random.set_state(numpy)
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
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)  # the old file under the final name is untouched
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path) from None
        if isinstance(exc, RuntimeError) and shutil.disk_usage(folder).free < LOW_SPACE:
            # torch.save reports a full disk as a RuntimeError ("file write failed",
            # "unexpected pos ..."), not as an OSError
            raise disk_full(path) from None
        raise


LOW_SPACE = 64 * 2 ** 20  # below this, a failed write is taken for a full disk


def disk_full(path):
    """The one-line report of a full disk: which file, how much space is left."""
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path)) or ".").free
    return DiskFull(f"no space left on the disk while writing {path} ({free / 2**20:.0f} MiB "
                    "free); the file under that name is unchanged.")


def atomic_torch_save(obj, path):
    _atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_json_dump(obj, path):
    _atomic_write(path, lambda fh: fh.write(
        (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()))


def read_small_json(path, max_bytes=1 << 20):
    """The JSON object in path when path is a plain file (not a link) of at most max_bytes;
    else None. For deciding whether a file is one this tool wrote before replacing it."""
    if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > max_bytes:
        return None
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def atomic_np_save(obj, path):
    _atomic_write(path, lambda fh: np.save(fh, obj, allow_pickle=False))


def atomic_npz_save(arrays, path):
    _atomic_write(path, lambda fh: np.savez(fh, **arrays))


def progress(iterable, **kwargs):
    """tqdm that stays quiet when stderr is not a terminal (CI logs, pipes)."""
    return tqdm(iterable, disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True,
                **kwargs)


def confusion_matrix(rows, cols, n_rows, n_cols):
    """Counts of (rows[i], cols[i]) pairs, as an n_rows x n_cols integer matrix."""
    m = np.zeros((n_rows, n_cols), dtype=np.int64)
    np.add.at(m, (np.asarray(rows), np.asarray(cols)), 1)
    return m


def matrix_figure(matrix, title, ylabel, xlabel, row_colours=None):
    """A row-normalised heat map of a confusion matrix with the counts written in, and a colour
    bar saying what the shading is. row_colours (RGB in [0, 1], one per row) are drawn as
    swatches beside the row labels: on Colored MNIST's prediction-vs-colour matrix a reader
    sees which colour each row is, not only its index."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    width, height = 0.55 * matrix.shape[1] + 3.2, 0.5 * matrix.shape[0] + 1.8
    fig, ax = plt.subplots(figsize=(width, height))
    # fixed margins in inches (labels, swatches, colour bar) instead of tight_layout, which
    # draws every text once more to measure it: a third of the figure's cost at each run's end
    fig.subplots_adjust(left=1.3 / width, right=1 - 1.0 / width, bottom=0.65 / height,
                        top=1 - 0.4 / height)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if share[i, j] > 0.6 else "black")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel,
           xticks=range(matrix.shape[1]), yticks=range(matrix.shape[0]))
    ax.title.set_fontsize(9)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the row's images (numbers: counts)", fontsize=8)
    if row_colours is not None:
        for i, colour in enumerate(row_colours[:matrix.shape[0]]):
            ax.add_patch(Rectangle((-1.35, i - 0.35), 0.7, 0.7, facecolor=colour,
                                   edgecolor="black", linewidth=0.5, clip_on=False))
        ax.tick_params(axis="y", pad=16)  # the swatches sit between the axis and its labels
        ax.yaxis.labelpad = 24  # and the axis label clears them
    return fig


def save_matrix_png(matrix, path, title, ylabel, xlabel, row_colours=None):
    """matrix_figure written to path as a PNG."""
    import matplotlib.pyplot as plt

    fig = matrix_figure(matrix, title, ylabel, xlabel, row_colours)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


class Log:
    """Progress lines for the terminal and the run's log file. Lines printed before the run
    folder exists (e.g. while a dataset is built) are kept and written first when it opens."""

    def __init__(self):
        self.path, self.pending, self.prefix = None, [], ""

    def __call__(self, message, err=False):
        print(self.prefix + message, file=sys.stderr if err else sys.stdout, flush=True)
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n"
        if self.path is None:
            self.pending.append(line)
            return
        with open(self.path, "a") as fh:
            fh.write(line)

    def open(self, path):
        """From now on append to path (after the lines kept so far)."""
        self.path = path
        with open(path, "a") as fh:
            fh.writelines(self.pending)
        self.pending = []

    def close(self):
        self.path, self.pending = None, []

    def swap(self, state):
        """Make state = (path, pending lines, terminal prefix) the log's; return the old one
        (a sweep gives each run its own run.log and a [name] prefix on the terminal)."""
        old = (self.path, self.pending, self.prefix)
        self.path, self.pending, self.prefix = state
        return old


log = Log()


class EpochPace:
    """Seconds per epoch for an ETA, from the recent epochs: the median of the last `window`
    epochs' durations. A mean since the process started would carry a pause (a machine shared
    for half an hour) into every later estimate; the median of the recent ones forgets it as
    soon as the epochs after it are in the majority, and ignores a short resumed partial epoch."""

    def __init__(self, start, window=5):
        self.last, self.window, self.durations = start, window, []

    def tick(self, now):
        """An epoch ended at `now` (time.time())."""
        self.durations = (self.durations + [now - self.last])[-self.window:]
        self.last = now

    def seconds(self):
        ordered = sorted(self.durations)
        if not ordered:
            return 0.0
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def format_duration(seconds):
    """12 s, 3 min 20 s, 2 h 05 min: for ETAs."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
