"""A plan's runs and where each stands, read from their folders: the one home of the rules every
program that trains a plan follows (scripts/launch.py through a launcher; the short-lived
machines' budget driver, short_lived/long_runs.py).

- the plan a command line names (`plan_parser`, `plan_of`: scripts/plans.py's plans with
  their folders, PLAN_FOLDERS);
- a run's state (finished, running, stopped, not started) from its work folder and the ledger,
  never from whoever launched it (`Lifecycle.state`); a stage-2 run is ready once its start run
  finished and its checkpoint is there; a chosen-hyperparameter run once its grid finished
  (`prepare` writes the choice, from validation only: hparams.choose);
- a run's main.py arguments (`run_argv`: --resume_if_any, so any launcher continues a stopped run).
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from errors import UserError  # noqa: E402
from options import sigma2  # noqa: E402
from safe_files import LAST, append_text, held, read_run, write_json  # noqa: E402
from plans import (COMPARE_METHODS, COMPARE_RATIOS, CONFIG_PLANS, CONFIG_SEEDS,  # noqa: E402
                   HEADLINE_SIGMAS, LFF_METHODS, LFF_RATIOS, SEEDS, VARIANTS, compare_plan,
                   headline_plan, lff_plan)

# --------------------------------------------------------------------------- run folders
# Every file here is read and written through safe_files (the repository's one file layer):
# resume points and records are committed and cloned, so each is a stranger's file. A damaged
# one counts as absent (a run not finished) or stops the command in one line; a link
# is never followed, copied or written through.
def planned_epochs(run):
    return run["epochs"]


class Lifecycle:
    """Where each run of a plan stands, read from its folder in --work (where it trains and
    resumes) and in --ledger (finished records), never from whoever launched it; and what a
    run needs written before it starts (prepare). The short-lived machines' driver adds the
    ledger copy and the resume points carried through git (short_lived/long_runs.py Runs)."""

    places = ("work", "ledger")  # where a run's folder may be, in the order read

    def __init__(self, plan, opts):
        self.plan, self.opts = plan, opts
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
        return os.path.lexists(os.path.join(getattr(self, where)(run), LAST))


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
        argv += ["--init_checkpoint", os.path.join(life.work(life.by_name[run["after"]]), LAST)]
    return argv


def whole_in(low, high, rule):
    """argparse type: a whole number in [low, high), else one line saying the rule."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value < high:
            raise argparse.ArgumentTypeError(f"{rule}; got {value}")
        return value
    return parse


positive = whole_in(1, float("inf"), "must be at least 1")
seed = whole_in(0, 2 ** 32, "a seed lies in [0, 2^32)")


def plan_of(opts):
    """The plan the options describe (plan_parser's)."""
    plan = getattr(opts, "plan", "headline")
    if plan in CONFIG_PLANS:
        return CONFIG_PLANS[plan](opts.epochs, opts.seeds)
    if plan == "lff":
        return lff_plan(opts.epochs, opts.ratios, opts.seeds, opts.methods, opts.tiny)
    if plan == "compare":
        return compare_plan(opts.epochs, opts.ratios, opts.seeds, opts.compare_methods,
                            opts.tiny, opts.ledger)
    return headline_plan(opts.epochs, opts.sigmas, opts.tiny, opts.seeds, opts.variants)



# --------------------------------------------------------------------------- the plan's options
# each plan's folders: work (under outputs/), keep and ledger (under results/, committed).
# Every resume point lives under results/in_progress/: the LfF plan's in its own subfolder.
PLAN_FOLDERS = {"headline": ("long", "in_progress", "cmnist"),
                "lff": ("long_lff", os.path.join("in_progress", "lff"), "lff_cmnist"),
                "compare": ("long_compare", os.path.join("in_progress", "compare"), "compare")}
# the flags that shape one plan only (--seeds and --epochs shape every plan)
PLAN_FLAGS = {"sigmas": ("headline",), "variants": ("headline",),
              "ratios": ("lff", "compare"), "methods": ("lff",),
              "compare_methods": ("compare",), "tiny": ("headline", "lff", "compare")}


def plan_parser(plans=tuple(PLAN_FOLDERS), folders=True, **kwargs):
    """The options that name a plan (one of `plans`) and, with `folders`, its folders (a
    parent parser: each command adds its own)."""
    p = argparse.ArgumentParser(**kwargs)
    p.add_argument("--plan", choices=plans, default="headline",
                   help="headline: the LNL paper's table (Colored MNIST); lff: LfF's Colored "
                        "MNIST at each method's recipe, every method x --ratios x --seeds; "
                        "compare: every method on LfF's benchmark at hyperparameters chosen "
                        "on validation, then the later methods on LNL's"
                        + ("; " + ", ".join(n for n in plans if n in CONFIG_PLANS)
                           + ": the run scripts' benchmarks, each run a committed config at a "
                           "seed (scripts/plans.py)" if set(plans) & set(CONFIG_PLANS) else ""))
    p.add_argument("--epochs", type=positive, default=None,
                   help="per stage (default: the paper's 100; a config plan's: its config's)")
    p.add_argument("--sigmas", nargs="+", type=sigma2, default=list(HEADLINE_SIGMAS),
                   help="sigma^2 of the plan, in the order they are trained")
    p.add_argument("--seeds", nargs="+", type=seed, default=None,
                   help="the headline: seeds at its two sigma^2 (the others: seed 0); "
                        f"default {' '.join(map(str, SEEDS))} (irm_cmnist: restarts 0-9, "
                        "real_images: 0)")
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
    if folders:
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
    opts.seeds = opts.seeds or list(CONFIG_SEEDS.get(opts.plan, SEEDS))
    if opts.plan not in CONFIG_PLANS:  # a config plan's runs take their config's length
        opts.epochs = opts.epochs or 100
    work, _, ledger = PLAN_FOLDERS.get(opts.plan, (None, None, None))
    opts.work = getattr(opts, "work", None) or os.path.join(ROOT, "outputs", work)
    opts.ledger = getattr(opts, "ledger", None) or os.path.join(ROOT, "results", ledger)
    for flag in ("work", "keep", "ledger"):
        folder = getattr(opts, flag, None)
        if folder and os.path.exists(folder) and not os.path.isdir(folder):
            p.error(f"--{flag} {folder} is a file, not a folder; pass a folder")
    return opts


def parse_plan(argv):
    """The plan options of argv alone (scripts/launch.py's view of a plan)."""
    p = plan_parser()
    return check_plan_options(p.parse_args(argv), p)
