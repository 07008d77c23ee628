"""The run folder outputs/<experiment>/: where it is, who holds it, what may be deleted.

Rules that keep a user's work safe:
- an experiment name is a relative path that stays inside --output_dir;
- one training run at a time holds a folder (an flock on <folder>/.lock, which the kernel
  releases when the process dies, so a crashed run never leaves it stuck);
- --overwrite deletes only files this tool writes (checkpoints, TensorBoard events, metrics,
  results, the log), and only after every check has passed.
"""
import fcntl
import glob
import os

from utils import ArgError, log

# Files a training run writes, relative to its folder; --overwrite removes these and no others.
RUN_FILES = ("checkpoints/last.pth", "checkpoints/epoch_*.pth", "checkpoints/.tmp-*",
             "logs/events.out.tfevents.*", "metrics.jsonl", "results.json", "run.log",
             ".tmp-*")

_held = {}  # folder -> open lock file, kept for the life of the process


def experiment_dir(args):
    return os.path.join(args.output_dir, args.experiment_name)


def checkpoint_dir(args):
    return os.path.join(experiment_dir(args), "checkpoints")


def check_experiment_name(name):
    """None when the name keeps the run inside --output_dir, else what is wrong with it."""
    if not name or not name.strip():
        return "is empty"
    if os.path.isabs(name) or name.startswith("~"):
        return "is an absolute path"
    parts = name.replace("\\", "/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' part"
    return None


def lock(folder):
    """Hold folder for this process; a second run on the same folder gets an ArgError."""
    if folder in _held:
        return
    os.makedirs(folder, exist_ok=True)
    fh = open(os.path.join(folder, ".lock"), "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise ArgError(f"another run is using {folder} right now; wait for it to finish, or "
                       "pass another --experiment_name.") from None
    _held[folder] = fh


def unlock(folder):
    fh = _held.pop(folder, None)
    if fh is not None:
        fh.close()


def clear_run_files(folder):
    """--overwrite: delete what an earlier run of this tool wrote in folder, nothing else."""
    removed = 0
    for pattern in RUN_FILES:
        for path in glob.glob(os.path.join(folder, pattern)):
            os.remove(path)
            removed += 1
    for sub in ("checkpoints", "logs"):
        path = os.path.join(folder, sub)
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
    left = sorted(set(os.listdir(folder)) - {".lock", "args.json", "test_args.json"})
    note = f"; kept files this tool did not write: {', '.join(left)}" if left else ""
    log(f"--overwrite: removed {removed} files of the earlier run in {folder}{note}")


def inside(path, folder):
    """Whether path lies inside folder (both resolved, symlinks followed)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def refuse_outside(path, folder, what):
    if not inside(path, folder):
        raise ArgError(f"{what} {path} lies outside the output folder {folder}; this tool "
                       "writes only there. Pass a name inside it.")
