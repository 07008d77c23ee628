"""Checkpoint files: finding, reading and checking them against the current arguments.

A checkpoint (written by the Solver) holds f, g, h, the optimizers, schedulers, RNG states, the
position in the epoch and the run's arguments, so it can say which run it belongs to. Before a
run loads one, this module decides whether it may:
- a checkpoint built for other networks or data is refused, with each field named;
- a resumed run keeps what defines it (data, method, networks, seed, batch) and its recipe (lr,
  momentum, method weights: the checkpoint's values are used, with a warning); only how the run
  is driven (epochs, device, logging, ...) may change;
- a stage-2 run resumed after its stage-1 checkpoint changed is refused (it would report the
  new recipe while holding weights grown from the old one).
"""
import glob
import hashlib
import os
import pickle
import zipfile

import torch

from options import ARCHITECTURE, DEFINES, RECIPE
from utils import ArgError, UserError


def flags_with(roles, *wanted):
    """The flags whose declared role (options.ROLES, main.build_parser's parser.roles) is one
    of wanted: a flag added later carries its role with it."""
    return tuple(name for name, role in roles.items() if role in wanted)


class UnsafeCheckpoint(UserError):
    """A checkpoint that only a full unpickle could read: never loaded, never skipped over
    (resuming from an older checkpoint instead would silently drop the newer progress)."""


class CheckpointMismatch(ArgError):
    """A readable checkpoint that belongs to other networks, data or another run."""


def list_checkpoints(folder):
    """Checkpoints in a folder, newest first (last.pth, then epoch_XXXX.pth descending)."""
    epochs = sorted(glob.glob(os.path.join(glob.escape(folder), "epoch_*.pth")), reverse=True)
    last = os.path.join(folder, "last.pth")
    return ([last] if os.path.exists(last) else []) + epochs


def old_format_globals():
    """What a checkpoint of releases before 2026-11 holds besides tensors and plain values:
    numpy's RNG state, a uint32 array (and numpy scalars), pickled under numpy 1's module
    names or numpy 2's. Loading with only these allowed (torch.serialization.safe_globals)
    reads such a file without a full unpickle: no other class can be built, no code runs."""
    import numpy as np
    core = (np._core if hasattr(np, "_core") else np.core).multiarray  # numpy 2, numpy 1
    dtypes = [getattr(getattr(np, "dtypes", None), name, None)
              for name in ("UInt32DType", "Int64DType", "Float64DType")]  # numpy >= 1.25
    return [core._reconstruct, core.scalar, np.ndarray, np.dtype,
            *[d for d in dtypes if d is not None],
            (core._reconstruct, "numpy.core.multiarray._reconstruct"),
            (core._reconstruct, "numpy._core.multiarray._reconstruct"),
            (core.scalar, "numpy.core.multiarray.scalar"),
            (core.scalar, "numpy._core.multiarray.scalar")]


def load_old_format(path):
    """An old-format checkpoint read with weights_only=True and old_format_globals allowed;
    pickle.UnpicklingError when it holds anything else."""
    with torch.serialization.safe_globals(old_format_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def what_it_holds(path):
    """Why a file is not a loadable checkpoint, in words: 'old format' (this tool's, before
    2026-11: python scripts/convert_checkpoint.py reads it safely), 'foreign' (Python objects
    this tool never writes) or 'corrupt' (not a PyTorch archive, or a damaged one)."""
    if not zipfile.is_zipfile(path):
        return "corrupt"
    try:
        ckpt = load_old_format(path)
    except pickle.UnpicklingError as exc:
        return "foreign" if "weights only load failed" in str(exc).lower() else "corrupt"
    except Exception:  # a damaged archive raises many types
        return "corrupt"
    return "old format" if isinstance(ckpt, dict) and "nets" in ckpt else "foreign"


def read_checkpoint(path):
    """torch.load with errors a user can act on: a file from anyone is read as tensors and
    plain values only (weights_only), and one that is not says which of three things it is."""
    if os.path.isdir(path):
        raise UserError(f"checkpoint {path} is a folder; pass a .pth file in it (e.g. "
                        f"{os.path.join(path, 'last.pth')}).")
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist; pass the path of a .pth file written "
                        "by a training run (outputs/<experiment>/checkpoints/).")
    try:
        # weights_only: tensors and plain values only; a pickled object that would run code
        # when loaded is refused, never executed (a checkpoint may come from anyone)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zips and foreign pickles raise many types
        kind = what_it_holds(path)
        if kind == "old format":
            raise UnsafeCheckpoint(
                f"checkpoint {path} is in the format of releases before 2026-11 (numpy's RNG "
                "state as a numpy array), which this release does not load as it is; convert "
                f"it once (no code in it runs): python scripts/convert_checkpoint.py {path}")
        if kind == "foreign":
            raise UnsafeCheckpoint(
                f"checkpoint {path} holds Python objects this tool never writes (a file made "
                "elsewhere); loading it could run code, so it was not loaded. Use a checkpoint "
                "a training run of this tool wrote.")
        raise UserError(f"checkpoint {path} is unreadable (not a PyTorch checkpoint, or a "
                        f"truncated or corrupt one: {first_line(exc)}); use another checkpoint "
                        "from the same folder.")
    if not isinstance(ckpt, dict) or "nets" not in ckpt:
        raise UserError(f"checkpoint {path} was not written by this tool (no 'nets' entry).")
    return ckpt


def first_line(exc, limit=200):
    """An exception's first line, cut to limit characters (a message may quote a file)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[:limit] + "..."


def newest_readable(folder, warn):
    """(path, checkpoint) of the newest checkpoint in folder that loads, or (None, None); each
    unreadable one is reported through warn(message) and skipped."""
    for path in list_checkpoints(folder):
        try:
            return path, read_checkpoint(path)
        except UnsafeCheckpoint:
            raise
        except UserError as err:
            warn(f"warning: {err} Trying an older checkpoint.")
    return None, None


def check_compatible(ckpt_args, args, path, roles):
    """Refuse, with the fields named, a checkpoint built for other networks or data (the flags
    whose role is ARCHITECTURE)."""
    diffs = [f"{k}: checkpoint={ckpt_args.get(k)!r} vs now={getattr(args, k)!r}"
             for k in flags_with(roles, ARCHITECTURE)
             if k in ckpt_args and ckpt_args[k] != getattr(args, k)]
    if diffs:
        raise CheckpointMismatch(f"checkpoint {path} does not match the current arguments ("
                                 + "; ".join(diffs) + "); pass matching flags or another "
                                 "checkpoint.")


def _differs(key, old, new):
    if key == "init_checkpoint" and old and new:  # the file's content decides, not its path:
        return False  # check_init_unchanged compares digests (a moved outputs folder resumes)
    return old != new


def adopt_resumed_args(ckpt_args, args, path, warn, roles):
    """Resuming: refuse other values of what defines the run; for the recipe, warn and keep
    the checkpoint's values (so args.json tells the truth); take the new driving values.
    Returns the recipe values the run keeps ({flag: checkpoint's value})."""
    defining = flags_with(roles, ARCHITECTURE, DEFINES)
    diffs = [f"{k}: checkpoint={ckpt_args[k]!r} vs now={getattr(args, k)!r}"
             for k in defining if k in ckpt_args and _differs(k, ckpt_args[k],
                                                                getattr(args, k))]
    if diffs:
        raise CheckpointMismatch(
            f"--resume: {path} belongs to another run ({'; '.join(diffs)}); pass the run's own "
            "values, or start a new run under another --experiment_name (or --overwrite this "
            "one).")
    kept = {}
    recipe = flags_with(roles, RECIPE)
    for k, old in sorted(ckpt_args.items()):
        if k not in recipe or not hasattr(args, k):
            continue
        if getattr(args, k) != old:
            warn(f"warning: --{k} {getattr(args, k)} differs from the resumed run's {old}; "
                 f"the run continues with {old} (start a new run with --init_checkpoint "
                 "to change it).")
            kept[k] = old
    if ckpt_args.get("epochs") not in (None, args.epochs):
        warn(f"note: the resumed run was set to {ckpt_args['epochs']} epochs; it now runs to "
             f"{args.epochs} (the schedule depends on the epoch only).")
    return kept


def check_init_optimizer(ckpt, args, path):
    """Stage 2 takes f, g's optimizer state from its --init_checkpoint (the LNL authors'
    trainer): the checkpoint must hold one of the same kind."""
    saved = ckpt.get("args", {}).get("optimizer", args.optimizer)
    if "main" not in ckpt.get("optimizers", {}) or saved != args.optimizer:
        raise ArgError(f"checkpoint {path} has no --optimizer {args.optimizer} state for f, g "
                       f"(it was trained with {saved}); pass --init_fresh_optimizer to start "
                       "from its weights only.")


def file_digest(path):
    """sha256 of a file: identifies the exact stage-1 checkpoint a stage-2 run started from."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def init_source(path, ckpt):
    """What a run records about the checkpoint it started from."""
    return {"path": os.path.abspath(path), "epoch": ckpt.get("epoch"),
            "sha256": file_digest(path)}


def check_init_unchanged(recorded, warn, path=None):
    """A resumed stage-2 run must still match the stage-1 checkpoint it started from: the
    file at `path` (the --init_checkpoint given now; else the path recorded at the start)
    must hold the bytes it held then. The content decides, so a run whose outputs folder was
    moved or restored elsewhere resumes from the checkpoint's new place. Returns the record,
    with that place as its path."""
    if not recorded:
        return recorded
    path = os.path.abspath(path or recorded["path"])
    if not os.path.isfile(path):
        warn(f"warning: {path}, which this run started from, is gone; continuing anyway.")
        return recorded
    if file_digest(path) != recorded["sha256"]:
        now = read_checkpoint(path).get("epoch")
        what = ("that file has changed since" if path == recorded["path"] else
                f"--init_checkpoint {path} holds other weights")
        raise ArgError(
            f"--resume: this run started from {recorded['path']} when it held epoch "
            f"{recorded['epoch']}; {what} (it now holds epoch {now}), so the resumed run "
            "would mix two recipes. Start this run again from the new checkpoint with "
            "--overwrite (scripts/run_cmnist.sh: RESTART_STAGE2=1).")
    return {**recorded, "path": path}
