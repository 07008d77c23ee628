"""The one file layer: how every program of the repository (main.py and the scripts alike)
reads and writes the files of run folders, resume points, the ledger, lease records and the
README. Those files are handed around (resume points and records are committed and cloned,
lease archives come back from another machine), so each is read as a stranger's and written
as if the folder held traps:

- a write is atomic: a temp file with a unique name, created exclusively (O_EXCL) next to its
  target and never through a link, written, fsync'd and renamed over the target; a crash leaves
  the old file or the new one, and a full disk leaves the old one and no temp file;
- nothing is written or read through a symbolic link: every path component under the root the
  caller names (the output folder, the ledger, ...) is opened one at a time with O_NOFOLLOW.
  The root itself may be a link (outputs/ on another disk is a common set-up);
- a target that is a link or not a plain file is refused, never replaced (the user's link and
  its target stay as they were);
- a copy into a committed record takes plain files only: a link's target never travels;
- a handed JSON or JSONL file is read within a size and a nesting bound and checked for its
  type; a damaged one is one line naming it (DamagedFile), never a traceback.
"""
import errno
import fcntl
import json
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from typing import Optional

from errors import DiskFull, UserError

JSON_MAX_BYTES = 4 << 20    # results.json, args.json, pace.json, a lease record: a few KB
JSONL_MAX_BYTES = 64 << 20  # metrics.jsonl: a line per epoch
TEXT_MAX_BYTES = 16 << 20   # run.log, the README
FILE_MAX_BYTES = 1 << 30    # a checkpoint copied into a resume point
MAX_DEPTH = 32              # nesting of a JSON value: the tool writes 4 levels at most
LOW_SPACE = 64 << 20        # below this, a failed write is taken for a full disk
# A run folder's files by name, for every program that reads or copies them (run_folder,
# the probe, the ledger, the resume points carried through git)
ARGS, METRICS, RESULTS, RUN_LOG = "args.json", "metrics.jsonl", "results.json", "run.log"
PACE, PROBE = "pace.json", "probe.json"  # the long-run driver's pace; the frozen-f probe's
MODE_ARGS = {"train": ARGS, "test": "test_args.json", "probe": "probe_args.json"}  # per --mode
LOCK = ".lock"  # a training run's flock (run_folder.lock): held while it runs
LAST = os.path.join("checkpoints", "last.pth")  # the newest checkpoint: what a run resumes from
_UMASK = os.umask(0)
os.umask(_UMASK)


class UnsafePath(UserError):
    """A path that would read or write through a link, or outside the folder it belongs to."""


class DamagedFile(UserError):
    """A handed file that is too large, not UTF-8, not JSON, too deeply nested or of the wrong
    shape: one line naming it."""


# --------------------------------------------------------------------------- paths
def under(path, root):
    """The components of path below root (both made absolute, without following links), or
    UnsafePath when path lies outside root."""
    path, root = os.path.abspath(path), os.path.abspath(root)
    rel = os.path.relpath(path, root)
    if rel == "." or rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        raise UnsafePath(f"{path} lies outside {root}; this tool reads and writes only inside "
                         "its own folders")
    return rel.split(os.sep)


def _open_dirs(root, parts, create):
    """A file descriptor of the folder root/parts[0]/..., each component opened without
    following a link (created when create and missing; root too, which may be a link)."""
    if create and not os.path.lexists(root):
        os.makedirs(root, exist_ok=True)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except NotADirectoryError:
        raise UnsafePath(f"{root} is not a folder; pass a folder") from None
    try:
        for i, part in enumerate(parts):
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:  # made meanwhile (another writer), or a dangling link
                    pass
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    where = os.path.join(root, *parts[:i + 1])
                    raise UnsafePath(f"{where} is a symbolic link or not a folder; this tool "
                                     "never reads or writes through a link: remove it (its "
                                     "target is untouched)") from None
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _refuse_link(name, fd, path):
    """UnsafePath when name (in the folder fd) exists and is a link or not a plain file."""
    try:
        st = os.lstat(name, dir_fd=fd)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{path} is a symbolic link; this tool never writes through a link: "
                         "remove it (its target is untouched), then run the command again")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(f"{path} exists and is not a plain file; move it aside")


def root_of(path, root):
    """root, or path's own folder when the caller names none (only the file is checked)."""
    return root if root is not None else os.path.dirname(os.path.abspath(path))


# --------------------------------------------------------------------------- writing
def write_with(path, write_fn, root=None):
    """Atomically write path (inside root) with write_fn(binary file object): a unique temp
    file created exclusively beside it, fsync'd, renamed over it. Refuses a link anywhere
    under root and a target that is a link or not a plain file; a full disk raises DiskFull
    with the old file intact and no temp file left."""
    root = root_of(path, root)
    parts = under(path, root)
    name = parts[-1]
    fd = _open_dirs(root, parts[:-1], create=True)
    tmp = f".tmp-{secrets.token_hex(6)}-{name}"[:255]
    try:
        _refuse_link(name, fd, path)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                      0o666 & ~_UMASK, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as fh:
                write_fn(fh)
                fh.flush()
                os.fsync(fh.fileno())
            _refuse_link(name, fd, path)  # planted while we wrote: still never replaced
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException as exc:
            try:
                os.unlink(tmp, dir_fd=fd)
            except FileNotFoundError:
                pass
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(path) from None
            if isinstance(exc, RuntimeError) and free_bytes(path) < LOW_SPACE:
                # torch.save reports a full disk as a RuntimeError, not as an OSError
                raise disk_full(path) from None
            raise
    finally:
        os.close(fd)


def free_bytes(path):
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    return shutil.disk_usage(folder).free


def disk_full(path):
    """The one-line report of a full disk: which file, how much space is left."""
    return DiskFull(f"no space left on the disk while writing {path} "
                    f"({free_bytes(path) / 2**20:.0f} MiB free); the file under that name is "
                    "unchanged.")


def write_bytes(path, data, root=None):
    write_with(path, lambda fh: fh.write(data), root)


def write_text(path, text, root=None):
    write_bytes(path, text.encode("utf-8"), root)


def write_json(path, data, root=None, indent=2):
    """JSON as the tool writes its records: sorted keys, one value per line."""
    write_text(path, json.dumps(data, indent=indent, sort_keys=True, default=str) + "\n", root)


def append_text(path, text, root=None):
    """Append to a log (run.log, lease.log): opened without following a link, under root."""
    root = root_of(path, root)
    parts = under(path, root)
    fd = _open_dirs(root, parts[:-1], create=True)
    try:
        _refuse_link(parts[-1], fd, path)
        out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                      0o666 & ~_UMASK, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(out, "a", encoding="utf-8") as fh:
        fh.write(text)


def save_torch(obj, path, root=None):
    """A checkpoint (torch.save), atomically."""
    import torch  # here: the scripts read and write records without loading torch
    write_with(path, lambda fh: torch.save(obj, fh), root)


def save_npy(array, path, root=None):
    """A .npy that np.load reads without unpickling anything."""
    import numpy as np
    write_with(path, lambda fh: np.save(fh, array, allow_pickle=False), root)


def save_npz(arrays, path, root=None):
    import numpy as np
    write_with(path, lambda fh: np.savez(fh, **arrays), root)


def make_folder(path, root=None):
    """Create path and its parents under root, each never through a link."""
    root = root_of(path, root)
    parts = [] if os.path.abspath(path) == os.path.abspath(root) else under(path, root)
    os.close(_open_dirs(root, parts, create=True))


# --------------------------------------------------------------------------- reading
def read_bytes(path, root=None, limit=FILE_MAX_BYTES):
    """A plain file's bytes, read without following a link anywhere under root; at most
    limit bytes (DamagedFile beyond). FileNotFoundError when it is not there."""
    root = root_of(path, root)
    parts = under(path, root)
    fd = _open_dirs(root, parts[:-1], create=False)
    try:
        try:
            src = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"{path} is a symbolic link; this tool reads only plain "
                                 "files of its folders: remove the link") from None
            raise
    finally:
        os.close(fd)
    with os.fdopen(src, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise DamagedFile(f"{path} is not a plain file; move it aside")
        if st.st_size > limit:
            raise DamagedFile(f"{path} is {st.st_size} bytes, more than such a file holds "
                              f"({limit}); move it aside")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise DamagedFile(f"{path} grew past {limit} bytes while read; move it aside")
    return data


def read_text(path, root=None, limit=TEXT_MAX_BYTES):
    data = read_bytes(path, root, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedFile(f"{path} is not UTF-8 text (byte {exc.start}); restore it from git "
                          "or move it aside") from None


def depth(value):
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level + 1)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict)
                                                  else item))
    return deepest


def parse_json(text, path):
    """A JSON value from text, within MAX_DEPTH; DamagedFile naming path otherwise."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise DamagedFile(f"{path} is nested deeper than a record of this tool; move it "
                          "aside") from None
    except ValueError as exc:
        raise DamagedFile(f"{path} is not valid JSON ({str(exc)[:80]}); restore it from git "
                          "or move it aside") from None
    if depth(value) > MAX_DEPTH:
        raise DamagedFile(f"{path} is nested deeper than a record of this tool; move it aside")
    return value


MISSING = object()


def read_json(path, root=None, default=MISSING, kind=dict, limit=JSON_MAX_BYTES):
    """The JSON value of a handed file, of type kind (a dict unless said), or DamagedFile in
    one line. A missing file returns default when one is given (else FileNotFoundError)."""
    try:
        text = read_text(path, root, limit)
    except FileNotFoundError:
        if default is MISSING:
            raise
        return default
    value = parse_json(text, path)
    if kind is not None and not isinstance(value, kind):
        raise DamagedFile(f"{path} holds a JSON {type(value).__name__}, not the "
                          f"{'object' if kind is dict else kind.__name__} this file holds; "
                          "restore it from git or move it aside")
    return value


def read_jsonl(path, root=None, limit=JSONL_MAX_BYTES):
    """(rows, skipped): the JSON objects of a JSONL file, one per line, and how many lines
    were not one (a torn last line after a crash, a hand edit, bytes that are not UTF-8).
    A missing file is ([], 0); one over limit is DamagedFile."""
    try:
        data = read_bytes(path, root, limit)
    except FileNotFoundError:
        return [], 0
    rows, skipped = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = parse_json(line.decode("utf-8"), path)
        except (UnicodeDecodeError, DamagedFile):
            skipped += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            skipped += 1
    return rows, skipped


def small_json(path, limit, root=None):
    """The JSON object in path when it is a plain file (not a link) of at most limit bytes
    holding one, else None: for deciding whether a file is one this tool wrote before replacing
    it (nothing is said about a file that is not)."""
    try:
        return read_json(path, root, default=None, limit=limit)
    except (DamagedFile, UnsafePath, OSError):
        return None


def whole(value):
    """value when it is a whole number (not a bool), else None: JSON gives 3, 3.0 or "3"."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number(value):
    """value as a float when it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


# --------------------------------------------------------------------------- run folders
@dataclass
class RunView:
    """One reading of a run folder: what every program asks of it."""
    folder: str
    epochs: int                   # whole epochs its metrics.jsonl records (0: none)
    record: Optional[dict]        # its results.json when that is a finished run's record
    damaged: Optional[str] = None  # one line when results.json or metrics.jsonl is damaged

    def finished(self, epochs=None):
        """The one rule: results.json records `epochs` finished epochs (any, when None) and a
        finite test accuracy."""
        return self.record is not None and (epochs is None or self.record["epochs"] == epochs)


def held(folder):
    """Whether a process holds the run folder's lock (run_folder.lock) right now: the one test
    of 'running' (a shared lock taken for an instant, never through a link)."""
    try:
        fd = os.open(os.path.join(folder, LOCK), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a fifo or a device is no run's lock
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the shared lock
    return False


EPOCHS_MAX = 10 ** 6  # more epochs than any run here trains: a record claiming them is damaged


def record_problem(record):
    """Why a results.json value is not a finished run's record, or None: it must hold whole
    epochs in 1..EPOCHS_MAX and a test accuracy in [0, 1]."""
    if not isinstance(record, dict):
        return "it is not a JSON object"
    epochs, acc = whole(record.get("epochs")), number(record.get("test_acc"))
    if epochs is None or not 1 <= epochs <= EPOCHS_MAX:
        return f"epochs {short_value(record.get('epochs'))} is not a whole number of epochs"
    if acc is None or not 0.0 <= acc <= 1.0:
        return f"test_acc {short_value(record.get('test_acc'))} is not an accuracy in [0, 1]"
    return None


def short_value(value, limit=20):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def valid_record(record):
    """Whether a results.json value is a finished run's record (record_problem)."""
    return record_problem(record) is None


def metrics_epochs(rows):
    """The last whole epoch among metrics rows (0 when none)."""
    return max((e for e in (whole(r.get("epoch")) for r in rows) if e is not None and e > 0),
               default=0)


def read_run(folder, root=None):
    """A run folder read once (results.json, metrics.jsonl), tolerant of damage: a damaged
    file counts as absent, and `damaged` says which."""
    root = root if root is not None else os.path.dirname(os.path.abspath(folder))
    damaged = []
    try:
        record = read_json(os.path.join(folder, "results.json"), root, default=None)
    except (DamagedFile, UnsafePath) as err:
        record = None
        damaged.append(str(err))
    try:
        rows, _ = read_jsonl(os.path.join(folder, "metrics.jsonl"), root)
    except (DamagedFile, UnsafePath, NotADirectoryError) as err:
        rows = []
        damaged.append(str(err))
    except FileNotFoundError:
        rows = []
    if record is not None and record_problem(record):
        damaged.append(f"{os.path.join(folder, 'results.json')}: {record_problem(record)}")
        record = None
    epochs = metrics_epochs(rows)
    if record is not None:
        epochs = max(epochs, record["epochs"])
    return RunView(folder, epochs, record, "; ".join(damaged) or None)
