"""Resume points carried through git: the long-run driver's plug-in for machines that keep
nothing (a session's machine, a 15-minute GPU lease). With `--keep DIR` (or `--keep auto`:
results/in_progress/ and its per-plan folders) long_runs.py, beside it, restores each run's resume
point from DIR before it trains, saves it there when it stops, and removes it once the run's
record is in the ledger and no later run starts from it; committing DIR carries the runs to the
next machine. Without --keep the driver never imports this file: a run stays in its work folder
(outputs/long...) and `--resume_if_any` continues it there, as on any machine that keeps its
disk. docs/long_runs.md says how the two fit.
"""
import os
import shutil

from errors import UserError
from safe_files import (ARGS, LAST, METRICS, PACE, RESULTS, RUN_LOG, read_bytes, read_json,
                        write_bytes)

# what resuming needs (results.json only once finished: a baseline kept for its stage 2)
RESUME_POINT = (ARGS, METRICS, RUN_LOG, PACE, RESULTS, LAST)
MOVED_KEEPS = {"lff": "in_progress_lff"}  # a plan's keep before it moved (under results/)


def copy_resume_point(src, dst, src_root, dst_root):
    """A run's RESUME_POINT files that src holds into dst, each a plain file (a link is refused
    in one line: its target would travel into a commit), each written atomically."""
    copied = []
    for name in RESUME_POINT:
        try:
            data = read_bytes(os.path.join(src, name), src_root)
        except FileNotFoundError:
            continue
        except UserError as err:
            raise SystemExit(f"{err} (nothing more was copied from {src})")
        write_bytes(os.path.join(dst, name), data, dst_root)
        copied.append(name)
    return copied


def same(recorded, planned):
    if isinstance(recorded, bool) or isinstance(planned, bool):
        return recorded is planned
    try:
        return float(recorded) == float(planned)
    except (TypeError, ValueError):
        return str(recorded) == str(planned)


def check_record(run, folder, root):
    """One line (SystemExit) when folder's args.json is not the run the plan names."""
    try:
        record = read_json(os.path.join(folder, ARGS), root)
    except (OSError, UserError) as err:
        raise SystemExit(f"{folder}/args.json is unreadable ({err}); restore it from git "
                         f"(git checkout -- {folder}) or move {folder} aside to start again")
    for name, value in run["expect"].items():
        if not same(record.get(name, False if isinstance(value, bool) else None), value):
            raise SystemExit(
                f"{folder} records --{name} {short(record.get(name))}, but the plan's run "
                f"{run['name']} has --{name} {value}: it is another run's resume point; move "
                f"it aside (nothing was changed)")


def short(value, limit=60):
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def nested_keeps(plan_folders, plan="headline"):
    """Names of the folders in `plan`'s keep that are other plans' keeps (the LfF plan's
    in_progress/lff inside the headline's in_progress): never a run's resume point."""
    keep = plan_folders[plan][1] + os.sep
    return {k[len(keep):].split(os.sep)[0] for _, k, _ in plan_folders.values()
            if k.startswith(keep)}


def resolve(opts, error, root, plan_folders):
    """--keep auto: the plan's folder under results/ (a clone that still holds it where it
    lived before it moved is told how to move it, in one line)."""
    keep = plan_folders[opts.plan][1]
    old = os.path.join("results", MOVED_KEEPS[opts.plan]) if opts.plan in MOVED_KEEPS else None
    if opts.keep == "auto" and old and os.path.lexists(os.path.join(root, old)):
        error(f"{os.path.join(root, old)} holds resume points from before they moved to "
              f"results/{keep}: move them there (git mv {old} results/{keep}, or mv), or pass "
              f"--keep {old}")
    return os.path.join(root, "results", keep) if opts.keep == "auto" else opts.keep


class KeptRuns:
    """The lifecycle's steps that involve --keep, over long_runs.Runs (which names its log
    self.note)."""

    places = ("work", "keep", "ledger")  # where a run's folder may be, in the order read
    kept_in = "keep"  # what the tables show of an unfinished run: its resume point

    def keep(self, run):
        return os.path.join(self.opts.keep, run["name"])

    def saved(self, run):
        return os.path.lexists(os.path.join(self.keep(run), "args.json"))

    def restore(self):
        """Resume points in --keep become run folders in --work where these have none. A
        resume point whose record is another run, or a work folder behind its resume point, is
        not touched: one line says what to do. (main.py then checks the checkpoint against
        the same flags when it resumes.)"""
        for run in self.plan:
            keep, work = self.keep(run), self.work(run)
            if not self.saved(run):
                continue
            check_record(run, keep, self.opts.keep)
            if not os.path.lexists(work):
                copy_resume_point(keep, work, self.opts.keep, self.opts.work)
                self.note(f"restored {run['name']} from {keep} (epoch {self.done(run, 'work')})")
            elif self.done(run, "work") < self.done(run, "keep"):
                raise SystemExit(
                    f"{work} is at epoch {self.done(run, 'work')} but its resume point {keep} "
                    f"is at epoch {self.done(run, 'keep')}; move {work} aside to continue from "
                    "the resume point (nothing was changed)")

    def save(self, run):
        """Copy a run's resume point into --keep (its last checkpoint, records and pace)."""
        if self.has_checkpoint(run, "work"):
            copy_resume_point(self.work(run), self.keep(run), self.opts.work, self.opts.keep)

    def drop(self, run):
        """A finished run's resume point, once no unfinished run starts from it, is removed
        (a link there is refused, never followed)."""
        keep = self.keep(run)
        if not os.path.lexists(keep) or self.needed_later(run):
            return
        if os.path.islink(keep) or not os.path.isdir(keep):
            raise SystemExit(f"{keep} is a link or not a folder; this tool removes only the "
                             "resume points it wrote: move it aside")
        shutil.rmtree(keep)
        self.note(f"{run['name']}: finished; its resume point {keep} removed")
