"""Small shared helpers: seeding, process rank, progress bars, figures, the log (atomic writes
and reading handed files: safe_files.py; the errors: errors.py)."""
import os
import random
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from errors import ArgError, BadInput, DiskFull, RunStopped, UserError  # noqa: F401 (re-exported)
from safe_files import append_text, write_with


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


def save_matrix_png(matrix, path, title, ylabel, xlabel, row_colours=None, root=None):
    """matrix_figure written to path (inside root) as a PNG, through the file layer."""
    import matplotlib.pyplot as plt

    fig = matrix_figure(matrix, title, ylabel, xlabel, row_colours)
    write_with(path, lambda fh: fig.savefig(fh, format="png", dpi=120), root)
    plt.close(fig)


class Log:
    """Progress lines for the terminal and the run's log file. Lines printed before the run
    folder exists (e.g. while a dataset is built) are kept and written first when it opens."""

    def __init__(self):
        self.path, self.pending, self.prefix, self.root = None, [], "", None

    def __call__(self, message, err=False):
        print(self.prefix + message, file=sys.stderr if err else sys.stdout, flush=True)
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n"
        if self.path is None:
            self.pending.append(line)
            return
        append_text(self.path, line, self.root)

    def open(self, path, root=None):
        """From now on append to path (inside root: the file layer's checks) after the lines
        kept so far."""
        self.path, self.root = path, root
        append_text(path, "".join(self.pending), root)
        self.pending = []

    def close(self):
        self.path, self.pending, self.root = None, [], None

    def swap(self, state):
        """Make state = (path, pending lines, terminal prefix, root) the log's; return the old
        one (a sweep gives each run its own run.log and a [name] prefix on the terminal)."""
        old = (self.path, self.pending, self.prefix, self.root)
        self.path, self.pending, self.prefix, self.root = state
        return old


log = Log()


class EpochPace:
    """Seconds per epoch for an ETA, from the recent epochs: the median of the last `window`
    epochs' durations. A mean since the process started would carry a pause (a machine shared
    for half an hour) into every later estimate; the median of the recent ones forgets it as
    soon as the epochs after it are in the majority. An epoch resumed part-way counts at its
    whole-epoch rate: its duration divided by the share of its steps this process ran."""

    def __init__(self, start, window=5):
        self.last, self.window, self.durations = start, window, []

    def tick(self, now, share=1.0):
        """An epoch ended at `now` (time.time()); this process ran `share` of its steps."""
        self.durations = (self.durations + [(now - self.last) / max(share, 1e-3)])[-self.window:]
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
