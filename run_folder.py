"""The run folder outputs/<experiment>/, and the one owner of what is written there: args.json,
run.log, checkpoints/, metrics.jsonl, TensorBoard's logs/, results.json and test predictions.

Rules that keep a user's work safe:
- an experiment name is a relative path that stays inside --output_dir;
- one training run at a time holds a folder (an flock on <folder>/.lock, which the kernel
  releases when the process dies, so a crashed run never leaves it stuck);
- --overwrite deletes only files this tool writes (checkpoints, TensorBoard events, metrics,
  results, the log), and only after every check has passed;
- a test run replaces only an earlier prediction file, never a checkpoint or another file;
- every file is written whole (utils' atomic writes), by one process under torchrun.
"""
import errno
import fcntl
import glob
import json
import os

import numpy as np
from torch.utils.tensorboard import SummaryWriter

import metrics
import records
from checkpoints import list_checkpoints
from safe_files import (ARGS, LAST, LOCK, METRICS, MODE_ARGS, PROBE, RESULTS, RUN_LOG, append_text,
                        read_jsonl, read_run, save_npy, save_torch, small_json, whole, write_json,
                        write_text)
from utils import ArgError, log, matrix_figure, save_matrix_png

# Files a training run writes, relative to its folder; --overwrite removes these and no others.
RUN_FILES = (LAST, "checkpoints/epoch_*.pth", "checkpoints/.tmp-*",
             "logs/events.out.tfevents.*", METRICS, RESULTS, RUN_LOG, ".tmp-*")

# what a run writes in its folder: none of these may be a symbolic link
LINKABLE = ("checkpoints", "logs", METRICS, RESULTS, RUN_LOG, *MODE_ARGS.values(), PROBE,
            LOCK)

_held = {}  # folder -> open lock file, kept for the life of the process


def _drop_locks_in_child():
    """A forked child (a DataLoader worker) closes its copies of the lock files: an flock
    belongs to the open file, which fork shares, so a worker that outlives its run (persistent
    workers, shut down when the loader is collected) would keep the folder taken after the
    run let go. Closing a copy never unlocks: the parent's own stays open."""
    for fh, _, _ in _held.values():
        fh.close()
    _held.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


def experiment_dir(args):
    return os.path.join(args.output_dir, args.experiment_name)


def checkpoint_dir(args):
    return os.path.join(experiment_dir(args), "checkpoints")


def checkpoint_to_test(args):
    """Test mode's checkpoint: --load_checkpoint_path, else the run's last.pth."""
    return args.load_checkpoint_path or os.path.join(checkpoint_dir(args), "last.pth")


def check_experiment_name(name):
    """None when the name keeps the run inside --output_dir, else what is wrong with it."""
    if not name or not name.strip():
        return "is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "has a control character (a newline would forge log lines)"
    if os.path.isabs(name) or name.startswith("~"):
        return "is an absolute path"
    parts = name.replace("\\", "/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' part"
    longest = max(len(p.encode("utf-8", "surrogateescape")) for p in parts)
    if longest > NAME_MAX:  # refused before a folder is made, not met as ENAMETOOLONG
        return f"has a part of {longest} bytes, more than a file name may hold ({NAME_MAX})"
    return None


NAME_MAX = 255  # bytes in one file name on Linux's file systems


def lock(folder):
    """Hold folder for this process, from before the first check to the end of the run; a
    second run on the same folder gets an ArgError. The lock file is opened without following
    a link. Folders made only to hold the lock are removed again by unlock if the run ends
    before writing anything (a refused run leaves nothing behind)."""
    if folder in _held:
        return
    made, path = [], os.path.abspath(folder)
    while not os.path.exists(path):
        made.append(path)
        path = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    lock_path = os.path.join(folder, LOCK)
    new_file = not os.path.lexists(lock_path)
    try:
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ArgError(f"{lock_path} is a symbolic link; remove it (its target is "
                           "untouched) or pick another --experiment_name") from None
        raise
    fh = os.fdopen(fd, "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise ArgError(f"another run is using {folder} right now; wait for it to finish, or "
                       "pass another --experiment_name.") from None
    _held[folder] = (fh, made, lock_path if new_file else None)


def unlock(folder):
    fh, made, new_lock = _held.pop(folder, (None, [], None))
    if fh is None:
        return
    fh.close()
    if new_lock and os.listdir(folder) == [LOCK]:  # the run wrote nothing: leave no trace
        os.remove(new_lock)
        for path in made:  # deepest first
            try:
                os.rmdir(path)
            except OSError:
                break


def clear_run_files(folder):
    """--overwrite: delete what an earlier run of this tool wrote in folder, nothing else."""
    removed = 0
    for pattern in RUN_FILES:
        # the folder's own name is literal: 'g_*' or 'h[1]' must never match other runs
        for path in glob.glob(os.path.join(glob.escape(folder), pattern)):
            os.remove(path)
            removed += 1
    for sub in ("checkpoints", "logs"):
        path = os.path.join(folder, sub)
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
    left = sorted(set(os.listdir(folder)) - {LOCK, ARGS, MODE_ARGS["test"]})
    note = f"; kept files this tool did not write: {', '.join(left)}" if left else ""
    log(f"--overwrite: removed {removed} files of the earlier run in {folder}{note}")


def inside(path, folder):
    """Whether path lies inside folder (both resolved, symlinks followed)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


# ------------------------------------------------------------------ before anything is written
def check_experiment(args, error, hold=True):
    """Before anything else is written: never overwrite a run silently, never resume one that
    is not there, and the output folder must be writable. error(message) refuses (main.py
    passes its parser's, for one line and exit code 2). hold: take the run's lock first (the
    main process), so no second process passes these checks while this one runs. Returns
    whether the run resumes (its checkpoints are there and --resume or --resume_if_any asks
    for them, without --overwrite)."""
    out, ckpts = experiment_dir(args), checkpoint_dir(args)
    if not inside(out, args.output_dir):  # a symbolic link out of --output_dir
        error(f"--experiment_name {args.experiment_name} leads outside --output_dir "
              f"(through a link, to {os.path.realpath(out)}); pick another name")
    for folder in (out, ckpts):  # else an unreadable run reads as one without checkpoints
        if os.path.isdir(folder) and not os.access(folder, os.R_OK | os.X_OK):
            error(f"cannot read {folder} (permission denied); make it readable (chmod u+rx "
                  f"{folder}) and run again, or pick another --experiment_name")
    if hold and writable_parent(out):
        lock(out)
    links = [name for name in LINKABLE if os.path.islink(os.path.join(out, name))]
    if links:  # writing or deleting through a link would reach files outside the run
        error(f"{', '.join(os.path.join(out, n) for n in links)} "
              f"{'is a symbolic link' if len(links) == 1 else 'are symbolic links'}; this tool "
              "writes only real files inside a run folder: remove the link (its target is "
              "untouched) or pick another --experiment_name")
    has_run = bool(list_checkpoints(ckpts))
    if args.mode == "train":
        if has_run and not (args.resume or args.resume_if_any or args.overwrite):
            error(f"experiment '{args.experiment_name}' already has checkpoints in "
                  f"{ckpts}; pass --resume to continue it, --overwrite to start again, "
                  "or another --experiment_name")
        if args.resume and not has_run:
            error(f"--resume: experiment '{args.experiment_name}' has no checkpoint in "
                  f"{ckpts}; check the name (and --output_dir), or pass --resume_if_any "
                  "to start it when it is new")
    if not writable_parent(out):
        error(f"cannot write under {nearest_existing(out)} (for {out}); pick a writable "
              "--output_dir")
    # --overwrite wins over --resume_if_any (a script passes the latter to every run)
    return (args.mode == "train" and has_run and (args.resume or args.resume_if_any)
            and not args.overwrite)


def nearest_existing(path):
    """path, or its nearest ancestor that exists."""
    while not os.path.exists(path):
        path = os.path.dirname(os.path.abspath(path))
    return path


def writable_parent(path):
    """Whether path's nearest existing ancestor is a folder this process may write into."""
    existing = nearest_existing(path)
    return os.path.isdir(existing) and os.access(existing, os.W_OK | os.X_OK)


def prediction_target(args, checkpoint, error):
    """Test mode: where predictions go. A relative name lands in the run folder; the target
    must stay inside --output_dir, end in .npy, and may replace only an earlier prediction
    file (never a checkpoint, a folder or another file)."""
    name = args.test_output_npy or "test_predictions.npy"
    path = name if os.path.isabs(name) else os.path.join(experiment_dir(args), name)
    if not inside(path, args.output_dir):
        error(f"--test_output_npy {name} lies outside --output_dir {args.output_dir}; "
              "this tool writes only there: pass a file name (it lands in "
              f"{experiment_dir(args)}/)")
    if not path.endswith(".npy") or os.path.isdir(path):
        error(f"--test_output_npy {name} must be a .npy file name, not a folder or "
              "another kind of file")
    if os.path.lexists(path) and (os.path.realpath(path) == os.path.realpath(checkpoint)
                                  or not is_prediction_file(path)):
        error(f"--test_output_npy {path} exists and is not a prediction file written "
              "by this tool; pass another name")
    summary = summary_path(path)
    exists = os.path.lexists(summary)
    written = small_json(summary, SUMMARY_MAX_BYTES) if exists else None  # read once
    if exists and not is_prediction_summary(written, path):
        error(f"{summary} exists and is not a prediction summary written by this tool (test "
              "mode writes one beside --test_output_npy); pass another --test_output_npy")
    earlier = (written or {}).get("checkpoint")
    if (args.test_output_npy is None and isinstance(earlier, str)
            and not (own_checkpoint(args, earlier) and own_checkpoint(args, checkpoint))
            and os.path.realpath(earlier) != os.path.realpath(checkpoint)):
        # the default name holds this run's own predictions; another run's (or method's)
        # checkpoint replaces them only when the user names the file
        error(f"{path} holds the predictions of {earlier}; testing {checkpoint} would replace "
              "them: pass --test_output_npy NAME.npy to keep both")
    return path


def own_checkpoint(args, path):
    """Whether path is one of this run's own checkpoints (in its checkpoints/ folder)."""
    return os.path.dirname(os.path.realpath(path)) == os.path.realpath(checkpoint_dir(args))


SUMMARY_MAX_BYTES = 1 << 20  # a prediction summary is a few confusion matrices


def summary_path(path):
    """The JSON beside a prediction file: accuracy, checkpoint, confusion matrices."""
    return os.path.splitext(path)[0] + ".json"


def is_prediction_file(path):
    """Whether path holds predictions a test run wrote: a structured array with a pred_label
    field, read without unpickling (an older pickled prediction file counts as foreign) and
    without loading it into memory."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        rows = np.load(path, allow_pickle=False, mmap_mode="r")
        return rows.dtype.names is not None and "pred_label" in rows.dtype.names
    except Exception:  # headers and pickles fail in many ways
        return False


def is_prediction_summary(data, npy):
    """Whether data (a summary file's JSON object, or None) is the summary a test run wrote
    for the prediction file npy."""
    return data is not None and data.get("predictions") == os.path.basename(npy)


def open_run(args, device):
    """Take the run folder (training), clear an --overwrite'n run's files, write args.json (or
    test_args.json, with device_used beside the requested --device, which may say 'auto') and
    open the log. Called once every check has passed."""
    out = experiment_dir(args)
    training = args.mode == "train"
    os.makedirs(out, exist_ok=True)
    lock(out)  # held since check_experiment; taken here by a caller that skipped it
    if training:
        if args.overwrite:
            clear_run_files(out)
    if not (training and finished_record(out, args.epochs, args.output_dir)):
        # (a finished run's args.json stays: its record's config)
        write_json(os.path.join(out, MODE_ARGS[args.mode]),
                   {**vars(args), "device_used": str(device)}, args.output_dir)
    log.open(os.path.join(out, RUN_LOG), args.output_dir)


def finished_record(folder, epochs, root):
    """The results.json of the run in folder if it records exactly `epochs` finished epochs
    and their test accuracy (safe_files.RunView.finished, the one rule every program uses);
    else None (no record, a damaged one, or another length)."""
    view = read_run(folder, root)
    return view.record if view.finished(epochs) else None


# ------------------------------------------------------------------ a run's files
def epoch_rows(path, root):
    """(rows with a whole epoch, lines dropped) of a metrics.jsonl (safe_files.read_jsonl)."""
    rows, torn = read_jsonl(path, root)
    kept = [r for r in rows if whole(r.get("epoch")) is not None]
    return kept, torn + len(rows) - len(kept)


def trim_metrics(path, epoch, root):
    """Drop metric lines past the checkpoint a run resumes from (they will be redone);
    return the last line kept, {} when there is none."""
    if not os.path.lexists(path):
        return {}
    rows, torn = epoch_rows(path, root)
    if torn:
        log(f"note: dropped {torn} incomplete line(s) of {path} (a crash mid-write); those "
            "epochs are redone or were past the checkpoint")
    rows = [r for r in rows if r["epoch"] <= epoch]
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows), root)
    return rows[-1] if rows else {}


class RunFolder:
    """What a run writes into outputs/<experiment>/ once it has started. Under torchrun only
    rank 0 writes (writes=False: every method does nothing). eval_sets names the extra
    evaluation sets, whose accuracies TensorBoard shows under test/."""

    def __init__(self, args, writes=True, eval_sets=()):
        self.args, self.writes, self.eval_sets = args, writes, set(eval_sets)
        self.path, self.checkpoints = experiment_dir(args), checkpoint_dir(args)
        self.metrics = os.path.join(self.path, METRICS)
        self.writer = None

    # checkpoints: what they hold is the Solver's state(); checkpoints.py checks them
    def save_checkpoint(self, state, force=False):
        """last.pth every --checkpoint_every epochs (and when forced), epoch_XXXX.pth every
        --save_every epochs and at the end; never mid-epoch."""
        if not self.writes:
            return
        epoch, mid_epoch = state["epoch"], state["step_in_epoch"]
        final = epoch == self.args.epochs and not mid_epoch
        root = self.args.output_dir
        if force or final or epoch % self.args.checkpoint_every == 0:
            save_torch(state, os.path.join(self.checkpoints, "last.pth"), root)
        if not mid_epoch and (epoch % self.args.save_every == 0 or final):
            save_torch(state, os.path.join(self.checkpoints, f"epoch_{epoch:04d}.pth"), root)

    def last_checkpoint(self):
        """last.pth's path, or 'none written yet'."""
        last = os.path.join(self.checkpoints, "last.pth")
        return last if os.path.exists(last) else "none written yet"

    # metrics.jsonl and TensorBoard: one event file per run
    def open_logs(self, epoch, resumed):
        """Log from `epoch` on: a resumed run's metric lines and events past it are dropped
        (they will be redone). Returns the last metric line kept ({} when none)."""
        if not self.writes:
            return {}
        last = trim_metrics(self.metrics, epoch, self.args.output_dir) if resumed else {}
        self.writer = SummaryWriter(os.path.join(self.path, "logs"), purge_step=epoch + 1)
        return last

    def history(self):
        """Every whole metrics.jsonl line of this run, in order ([] when none)."""
        return epoch_rows(self.metrics, self.args.output_dir)[0]

    def finished_record(self, epoch):
        """results.json of a run that has reached --epochs and recorded its results, or None
        (not finished, or stopped between its last checkpoint and its results)."""
        return (None if epoch < self.args.epochs
                else finished_record(self.path, epoch, self.args.output_dir))

    def log_epoch(self, epoch, stats):
        """One epoch's metrics: TensorBoard scalars and a metrics.jsonl line."""
        if not self.writes:
            return
        for k, v in stats.items():
            self.writer.add_scalar(metrics.tag(k, self.eval_sets), v, epoch)
        self.writer.flush()
        append_text(self.metrics, json.dumps({"epoch": epoch, **stats}) + "\n",
                    self.args.output_dir)

    def write_results(self, record, panels, epoch):
        """results.json, and in TensorBoard the run's configuration and final metrics (the
        HPARAMS view) and the final confusion matrices as figures."""
        if not self.writes:
            return
        write_json(os.path.join(self.path, RESULTS), record, self.args.output_dir)
        records.log_hparams(self.writer, record["config"],
                            {k: v for k, v in record.items() if metrics.is_result(k)}, epoch)
        for name, panel in panels:
            self.writer.add_figure(f"confusion/{name}", matrix_figure(*panel), epoch)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def write_predictions(self, path, rows, summary, panels, line):
        """Test mode: the prediction rows as .npy at path (main.py chose it with
        prediction_target), their summary as <stem>.json, the confusion matrices as
        <stem>_confusion_<name>.png, and the summary line in the log."""
        if not self.writes:
            return
        save_npy(rows, path, self.args.output_dir)
        write_json(summary_path(path), summary, self.args.output_dir)
        stem = os.path.splitext(path)[0]
        for name, panel in panels.items():
            save_matrix_png(panel[0], f"{stem}_confusion_{name}.png", *panel[1:],
                            root=self.args.output_dir)
        log(f"{line} -> {path}, {stem}.json, {stem}_confusion_{{label,bias}}.png")
