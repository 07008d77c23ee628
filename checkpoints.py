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

import torch

from utils import ArgError, UserError

# Arguments that fix the shape of the saved networks: a checkpoint loaded under other values
# cannot fit, so they are compared before load_state_dict.
ARCH_FIELDS = ("dataset_name", "f_network_name", "g_network_name", "h_network_name",
               "num_main_classes", "num_bias_classes", "hidden_dim", "resnet_split")

# What a run *is*: resuming under other values would train another run under this one's name.
DEFINING_FIELDS = ARCH_FIELDS + (
    "method", "seed", "batch_size", "optimizer", "init_checkpoint", "pretrained",
    "cmnist_source", "color_var", "data_seed", "max_train_samples", "max_test_samples",
    "grayscale", "env_from_bias", "random_labels_fraction", "bias_split", "imdb_task",
    "holdout_fraction", "image_size", "n_envs", "examples_per_env", "spiral_dims",
    "spiral_revolutions", "spiral_test_examples")


def defining_fields():
    """DEFINING_FIELDS plus every registered dataset's own flags that do not only drive the
    run: a dataset's flags shape its data, so a dataset added later is covered too."""
    import dataset_specs  # here, not at the top: checkpoints need not import the data builders
    extra = tuple(o.name for o in dataset_specs.all_options()
                  if o.name not in DEFINING_FIELDS and o.name not in DRIVING_FIELDS)
    return DEFINING_FIELDS + extra


# How a run is driven: a resumed run takes the new values (more epochs continue the same
# schedule, which depends on the epoch index only).
DRIVING_FIELDS = (
    "config", "mode", "resume", "resume_if_any", "overwrite", "load_checkpoint_path",
    "test_output_npy", "output_dir", "experiment_name", "data_root_base", "dogs_cats_lists",
    "num_workers", "device", "fast", "precision", "tf32", "deterministic", "skip_nonfinite",
    "sync_bn", "init_fresh_optimizer",
    "save_every", "checkpoint_every", "eval_every", "epochs", "skip_bad_images")
# Every other argument is part of the recipe (lr, momentum, weight decay, schedule, method
# weights): the optimizer state and the method in the checkpoint already carry it.


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


def read_checkpoint(path):
    """torch.load with errors a user can act on."""
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
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise UserError(f"checkpoint {path} is unreadable (corrupt: {first_line(exc)}); "
                            "use another checkpoint from the same folder.")
        raise UnsafeCheckpoint(
            f"checkpoint {path} holds Python objects besides tensors and plain values (the "
            "format of releases before 2026-11, or a file made elsewhere); loading it could "
            "run code, so it was not loaded. If you trust where it came from, convert it "
            f"once: python scripts/convert_checkpoint.py {path}")
    except Exception as exc:  # truncated zips raise many types
        raise UserError(f"checkpoint {path} is unreadable (truncated or corrupt: "
                        f"{first_line(exc)}); use another checkpoint from the same folder.")
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


def check_compatible(ckpt_args, args, path, fields=ARCH_FIELDS):
    """Refuse, with the fields named, a checkpoint built for other networks or data."""
    diffs = [f"{k}: checkpoint={ckpt_args.get(k)!r} vs now={getattr(args, k)!r}"
             for k in fields if k in ckpt_args and ckpt_args[k] != getattr(args, k)]
    if diffs:
        raise CheckpointMismatch(f"checkpoint {path} does not match the current arguments ("
                                 + "; ".join(diffs) + "); pass matching flags or another "
                                 "checkpoint.")


def _differs(key, old, new):
    if key == "init_checkpoint" and old and new:  # the file's content decides, not its path:
        return False  # check_init_unchanged compares digests (a moved outputs folder resumes)
    return old != new


def adopt_resumed_args(ckpt_args, args, path, warn):
    """Resuming: refuse other values of what defines the run; for the recipe, warn and keep
    the checkpoint's values (so args.json tells the truth); take the new driving values."""
    defining = defining_fields()
    diffs = [f"{k}: checkpoint={ckpt_args[k]!r} vs now={getattr(args, k)!r}"
             for k in defining if k in ckpt_args and _differs(k, ckpt_args[k],
                                                                getattr(args, k))]
    if diffs:
        raise CheckpointMismatch(
            f"--resume: {path} belongs to another run ({'; '.join(diffs)}); pass the run's own "
            "values, or start a new run under another --experiment_name (or --overwrite this "
            "one).")
    for k, old in sorted(ckpt_args.items()):
        if k in defining or k in DRIVING_FIELDS or not hasattr(args, k):
            continue
        if getattr(args, k) != old:
            warn(f"warning: --{k} {getattr(args, k)} differs from the resumed run's {old}; "
                 f"the run continues with {old} (start a new run with --init_checkpoint "
                 "to change it).")
            setattr(args, k, old)
    if ckpt_args.get("epochs") not in (None, args.epochs):
        warn(f"note: the resumed run was set to {ckpt_args['epochs']} epochs; it now runs to "
             f"{args.epochs} (the schedule depends on the epoch only).")


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
