"""A plan's runs and where each stands, read from their folders: the one home of the rules every
program that trains a plan follows (scripts/launch.py through a launcher; the short-lived
machines' budget driver, short_lived/long_runs.py).

- the plan a command line names (`plan_parser`, `plan_of`: scripts/plans.py's plans with
  their folders, PLAN_FOLDERS);
- a run's state (finished, running, stopped, not started) from its work folder and the ledger,
  never from whoever launched it (`Lifecycle.state`); a stage-2 run is ready once its start run
  finished and its checkpoint is there; a chosen-hyperparameter run once its grid finished
  (`prepare` writes the choice, from validation only: hparams.choose);
- a finished run's record into the ledger (ledger.add_record);
- a run's main.py arguments (`run_argv`: --resume_if_any, so any launcher continues a stopped run).
"""
import argparse
import fcntl
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from errors import UserError  # noqa: E402
from ledger import add_record  # noqa: E402
from options import sigma2  # noqa: E402
from safe_files import ARGS, RESULTS, append_text, read_json, read_run, write_json  # noqa: E402
from plans import (COMPARE_METHODS, COMPARE_RATIOS, HEADLINE_SIGMAS, LFF_METHODS,  # noqa: E402
                   LFF_RATIOS, SEEDS, VARIANTS, compare_plan, headline_plan, lff_plan)

# --------------------------------------------------------------------------- run folders
# Every file here is read and written through safe_files (the repository's one file layer):
# resume points and records are committed and cloned, so each is a stranger's file. A damaged
# one counts as absent (a run not finished) or stops the command in one line; a link
# is never followed, copied or written through.
def epochs_done(folder, root=None):
    """Epochs a run folder has completed (safe_files.read_run: its metrics' last whole epoch,
    or its finished record's)."""
    return read_run(folder, root).epochs


def finished(folder, epochs, root=None):
    """The one rule (safe_files.RunView.finished): results.json records exactly `epochs`
    finished epochs and a finite test accuracy."""
    return read_run(folder, root).finished(epochs)


def held(folder):
    """Whether a main.py process holds the run folder's lock right now."""
    path = os.path.join(folder, ".lock")
    if not os.path.isfile(path) or os.path.islink(path):
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


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


def planned_epochs(run):
    return run["epochs"]


class Lifecycle:
    """The plan's runs between --work (their live folders) and --ledger (finished records). A
    run resumes from its work folder; restore, save and drop do nothing here (the short-lived
    machines' driver adds them: short_lived/keep.py carries resume points through git)."""

    places = ("work", "ledger")  # where a run's folder may be, in the order read
    kept_in = "work"  # what the tables show of an unfinished run: its work folder

    def __init__(self, plan, opts, whole=None):
        """whole: the plan before --sigmas, --seeds, --variants ... narrowed it (plan_of with
        the defaults): a resume point a run outside the narrowed plan starts from is kept."""
        self.plan, self.opts = plan, opts
        self.whole = {r["name"]: r for r in (whole or []) + plan}
        self.by_name = {r["name"]: r for r in plan}

    def work(self, run):
        return os.path.join(self.opts.work, run["name"])

    def ledger(self, run):
        return os.path.join(self.opts.ledger, run["name"])

    def view(self, run, where):
        """One reading of the run's folder in work, keep or ledger (safe_files.RunView)."""
        return read_run(getattr(self, where)(run), getattr(self.opts, where))

    def done(self, run, where):
        return self.view(run, where).epochs

    def state(self, run):
        """finished (its record in the work folder or in the ledger: a finished run whose
        resume point was removed is never trained again), running, stopped or not started."""
        if any(self.view(run, w).finished(planned_epochs(run)) for w in ("work", "ledger")):
            return "finished"
        if held(self.work(run)):
            return "running"
        if self.has_checkpoint(run, "work"):
            return "stopped"
        return "not started"

    def restore(self):
        """Nothing to restore: a run's checkpoint stays in its work folder."""

    def save(self, run):
        """Nothing to save: the work folder is the run's resume point."""

    def drop(self, run):
        """Nothing to remove."""

    def saved(self, run):
        return False

    def note(self, text):
        log(text)

    def check(self, run, folder, root):
        check_record(run, folder, root)

    def needed_later(self, run):
        """Whether an unfinished run of the whole plan (not only the narrowed one this driver
        trains) starts from this one's checkpoint."""
        return any(r["after"] == run["name"] and self.state(r) != "finished"
                   for r in self.whole.values())

    def settle(self):
        """Finished runs into the ledger; resume points nobody needs any more removed; every
        other started run's resume point saved."""
        for run in self.plan:
            state = self.state(run)
            if state == "finished":
                self.to_ledger(run)
                if self.needed_later(run):
                    self.save(run)
                else:
                    self.drop(run)
            elif state in ("stopped", "running"):  # running: its last end-of-epoch checkpoint
                self.save(run)

    def to_ledger(self, run):
        """A finished run's record into the ledger (ledger.add_record: plain files, nothing
        there overwritten but a log the run has since extended)."""
        if not self.view(run, "work").finished(planned_epochs(run)):
            return  # finished elsewhere: the ledger already has its record
        dest = self.ledger(run)
        added, _, differ = add_record(self.work(run), dest, self.opts.work, self.opts.ledger)
        for name in differ:
            log(f"kept {os.path.join(dest, name)}: the ledger's copy differs from the run's "
                "(move one aside to replace it)")
        if RESULTS in added:
            log(f"{run['name']}: finished; its record is in {dest}")

    def ready(self, run):
        return self.state(run) != "finished" and (
            run["after"] is None or self.state(self.by_name[run["after"]]) == "finished"
            and self.start_kept(run)) and not self.waiting_for(run)

    def waiting_for(self, run):
        """The runs this one waits for without starting from them (a chosen-hyperparameter
        run waits for its grid: plans.compare_plan) that have not finished."""
        return [n for n in run.get("waits_for", ()) if self.state(self.by_name[n]) != "finished"]

    def prepare(self, run):
        """What a run needs written before it starts: the selection a chosen-hyperparameter
        run reads (hparams.choose over its grid's ledger records), once; an existing one is
        kept (a fresh clone continues with the choice the first machine made)."""
        spec = run.get("choose")
        if not spec or os.path.lexists(spec["path"]):
            return
        import hparams  # here: the other commands need no torch
        records = [(point, self.view(self.by_name[name], "ledger").record, name)
                   for point, name in spec["grid"]]
        selection = hparams.choose(spec["method"], records, spec["criterion"])
        write_json(spec["path"], selection, self.opts.ledger)
        log(f"{run['name']}: {spec['method']} chose {selection['choice']} on "
            f"{spec['criterion']} over {len(records)} grid runs"
            + ("" if selection["separable"] else f" ({selection['note']})")
            + f"; written to {spec['path']}")

    def start_kept(self, run):
        """Whether the checkpoint a stage-2 run starts from is here: in its start run's work
        folder, or in its resume point (which `run` restores). A start run that finished before
        this run was planned may have lost it: then this run cannot start."""
        after = self.by_name[run["after"]]
        return any(self.has_checkpoint(after, where) for where in self.places[:-1])

    def has_checkpoint(self, run, where):
        """Whether the run's folder in work or keep holds its last checkpoint."""
        return os.path.lexists(os.path.join(getattr(self, where)(run), "checkpoints",
                                            "last.pth"))


LOG = {"path": None, "root": None}  # the budget driver also keeps its lines in a log file


def log(text):
    line = f"[long_runs {time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    if LOG["path"]:
        try:
            append_text(LOG["path"], f"{time.strftime('%Y-%m-%d')} {line}\n", LOG["root"])
        except (OSError, UserError) as err:  # the log is a copy: training goes on without it
            LOG["path"] = None
            print(f"[long_runs] no longer writing its log file: {err}", flush=True)


def run_argv(life, run):
    """main.py's arguments for one run of the plan, in the work folder."""
    opts = life.opts
    argv = [*run["flags"], "--experiment_name", run["name"], "--output_dir", opts.work,
            "--data_root_base", opts.data_root, "--device", opts.device, "--resume_if_any"]
    if run["after"]:
        argv += ["--init_checkpoint", os.path.join(life.work(life.by_name[run["after"]]),
                                                   "checkpoints", "last.pth")]
    return argv


def positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"a seed lies in [0, 2^32); got {value}")
    return value


def plan_of(opts):
    """The plan the options describe (plan_parser's)."""
    if getattr(opts, "plan", "headline") == "lff":
        return lff_plan(opts.epochs, opts.ratios, opts.seeds, opts.methods, opts.tiny)
    if getattr(opts, "plan", "headline") == "compare":
        return compare_plan(opts.epochs, opts.ratios, opts.seeds, opts.compare_methods,
                            opts.tiny, opts.ledger)
    return headline_plan(opts.epochs, opts.sigmas, opts.tiny, opts.seeds, opts.variants)


def whole_plan_of(opts):
    """The plan --plan names with nothing narrowed (its --epochs and --tiny kept)."""
    defaults = parse_plan(["--plan", opts.plan])
    for key in ("epochs", "tiny", "ledger"):
        setattr(defaults, key, getattr(opts, key))
    return plan_of(defaults)


# --------------------------------------------------------------------------- the plan's options
# each plan's folders: work (under outputs/), keep and ledger (under results/, committed).
# Every resume point lives under results/in_progress/: the LfF plan's in its own subfolder.
PLAN_FOLDERS = {"headline": ("long", "in_progress", "cmnist"),
                "lff": ("long_lff", os.path.join("in_progress", "lff"), "lff_cmnist"),
                "compare": ("long_compare", os.path.join("in_progress", "compare"), "compare")}
# the flags that shape one plan only (--seeds and --epochs shape every plan)
PLAN_FLAGS = {"sigmas": ("headline",), "variants": ("headline",),
              "ratios": ("lff", "compare"), "methods": ("lff",),
              "compare_methods": ("compare",)}


def plan_parser(**kwargs):
    """The options that name a plan and its folders (a parent parser: each command adds its
    own)."""
    p = argparse.ArgumentParser(**kwargs)
    p.add_argument("--plan", choices=tuple(PLAN_FOLDERS), default="headline",
                   help="headline: the LNL paper's table (Colored MNIST); lff: LfF's Colored "
                        "MNIST at each method's recipe, every method x --ratios x --seeds; "
                        "compare: every method on LfF's benchmark at hyperparameters chosen "
                        "on validation, then the later methods on LNL's (each plan with its "
                        "own --keep and --ledger)")
    p.add_argument("--epochs", type=positive, default=100, help="per stage (the paper's 100)")
    p.add_argument("--sigmas", nargs="+", type=sigma2, default=list(HEADLINE_SIGMAS),
                   help="sigma^2 of the plan, in the order they are trained")
    p.add_argument("--seeds", nargs="+", type=seed, default=list(SEEDS),
                   help="seeds at the headline's two sigma^2 (the others: seed 0)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                   help="headline: the table's rows to train (gray: the baseline on grayscale "
                        "images)")
    p.add_argument("--ratios", nargs="+", choices=LFF_RATIOS, default=None,
                   help="lff, compare: shares of conflicting training images, in the order "
                        "they are trained (lff: 0.005 first; compare: 0.01 first)")
    p.add_argument("--methods", nargs="+", choices=LFF_METHODS, default=list(LFF_METHODS),
                   help="lff: methods (baseline: the LfF paper's vanilla)")
    p.add_argument("--compare_methods", nargs="+", choices=COMPARE_METHODS,
                   default=list(COMPARE_METHODS),
                   help="compare: methods (each over its grid at seed 0, then at its choice)")
    p.add_argument("--device", default="cpu", help="main.py's --device")
    p.add_argument("--work", default=None,
                   help="the live run folders (default outputs/long, outputs/long_lff with "
                        "--plan lff)")
    p.add_argument("--ledger", default=None,
                   help="finished runs' small records (committed; default results/cmnist, "
                        "results/lff_cmnist with --plan lff)")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data"))
    p.add_argument("--tiny", action="store_true", help="512 training images: a rehearsal")
    return p


def check_plan_options(opts, p):
    """The plan's options checked (p.error: one line) and its folders filled in: each value of
    a list once, a plan's own flags only with that plan, work and ledger by the plan."""
    for flag in ("sigmas", "seeds", "variants", "ratios", "methods", "compare_methods"):
        values = getattr(opts, flag) or []
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:  # each run would be listed, and counted, twice
            p.error(f"--{flag} lists {', '.join(twice)} more than once; give each value once")
    for flag, plans in PLAN_FLAGS.items():
        if opts.plan not in plans and getattr(opts, flag) != p.get_default(flag):
            p.error(f"--{flag} applies to --plan {' or '.join(plans)} only; drop it with "
                    f"--plan {opts.plan}")
    opts.ratios = opts.ratios or list(COMPARE_RATIOS if opts.plan == "compare" else LFF_RATIOS)
    work, _, ledger = PLAN_FOLDERS[opts.plan]
    opts.work = opts.work or os.path.join(ROOT, "outputs", work)
    opts.ledger = opts.ledger or os.path.join(ROOT, "results", ledger)
    for flag in ("work", "keep", "ledger"):
        folder = getattr(opts, flag, None)
        if folder and os.path.exists(folder) and not os.path.isdir(folder):
            p.error(f"--{flag} {folder} is a file, not a folder; pass a folder")
    return opts


def parse_plan(argv):
    """The plan options of argv alone (scripts/launch.py's view of a plan)."""
    p = plan_parser()
    return check_plan_options(p.parse_args(argv), p)
