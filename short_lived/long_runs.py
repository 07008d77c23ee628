"""Long runs: a plan of runs trained within a time budget, in pieces that resume bit-exactly.

    python short_lived/long_runs.py run --budget 2h --low_priority   # train until the budget
    python short_lived/long_runs.py status                          # where every run stands
    python short_lived/long_runs.py table --readme README.md        # the README's headline table

The short-lived machines' driver (a session's CPU, a 15-minute GPU lease): on a machine that
keeps its disk or on a cluster, scripts/launch.py runs the same plans. A plan is a list of
main.py runs, some starting from another's last checkpoint (the Colored-MNIST recipe's stage 2
starts from its baseline; scripts/plan_runs.py reads where each stands). `run`:
1. trains the runs whose start is ready, --lanes at a time, each lane with its share of the
   cores (two one-thread runs do more per hour on 2 cores than one two-thread run), each in
   its folder in --work (default outputs/long/), continued there by main.py --resume_if_any;
2. at the budget sends every run SIGTERM: each finishes its step and saves a checkpoint
   (main.py's own stop);
3. a finished run's small record (ledger.py: results.json, metrics.jsonl, args.json, ...)
   goes into the --ledger (default results/cmnist/), committed.
Exit codes: 0 every run of the plan finished; 3 the budget ran out first (run again to
continue); 1 a run failed (its log says why); 2 bad arguments.

On a machine that keeps nothing, --keep DIR (--keep auto: results/in_progress/...) carries the
runs through git: keep.py, beside this file, restores each resume point from DIR before
training, saves it there at the stop (`save` does it at once) and removes it once no
unfinished run starts from it. main.py checks a checkpoint against args.json when it resumes,
so a resume point that does not match its record is refused there in one line.

--low_priority: each run in its own process session with nice 19 *and* its autogroup set to
19. Linux's autogroup scheduler shares the CPU between sessions whatever their nice, so nice
alone does not yield the CPU to the user's other work once a job has its own session.
"""
import argparse
import fcntl
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "scripts"), HERE]
from errors import UserError  # noqa: E402
from launchers import start_main  # noqa: E402
from ledger import add_record  # noqa: E402
from plan_runs import (LOG, PLAN_FOLDERS, Lifecycle, check_plan_options, held,  # noqa: E402,F401
                       log, parse_plan, plan_of, plan_parser, planned_epochs, positive, run_argv)
from plan_tables import (TABLE_MARKS, compare_table, full_compare_table,  # noqa: E402,F401
                         headline_table, lff_table, selection_of, table_of, write_table)
from safe_files import (LAST, METRICS, PACE, PROBE, RESULTS, make_folder, number,  # noqa: E402
                        read_json, read_run, read_text, whole, write_json, append_text,
                        write_text)
MORE_TO_DO = 3
RECENT_EPOCHS = 10  # status's pace: the newest pieces covering this many epochs
KEPT_PIECES = 20  # pieces pace.json lists per device kind (its totals keep every piece)


# --------------------------------------------------------------------------- run folders
# Every file here is read and written through safe_files (the repository's one file layer):
# resume points and records are committed and cloned, so each is a stranger's file. A damaged
# one counts as absent (a run not finished, no pace) or stops the driver in one line; a link
# is never followed, copied or written through.
def epochs_done(folder, root=None):
    """Epochs a run folder has completed (safe_files.read_run: its metrics' last whole epoch,
    or its finished record's)."""
    return read_run(folder, root).epochs


def finished(folder, epochs, root=None):
    """The one rule (safe_files.RunView.finished): results.json records exactly `epochs`
    finished epochs and a finite test accuracy."""
    return read_run(folder, root).finished(epochs)


class Runs(Lifecycle):
    """The plan's runs as the driver keeps them (plan_runs.Lifecycle reads where each stands):
    a finished run's record copied into --ledger, and, with --keep, its resume point carried
    through git (keep.KeptRuns: restore, save, drop; here those steps do nothing and a run
    resumes from its work folder)."""

    kept_in = "work"  # what the tables show of an unfinished run: its work folder

    def __init__(self, plan, opts, whole=None):
        """whole: the plan before --sigmas, --seeds, --variants ... narrowed it (plan_of with
        the defaults): a resume point a run outside the narrowed plan starts from is kept."""
        super().__init__(plan, opts)
        self.whole = {r["name"]: r for r in (whole or []) + plan}

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


def lifecycle(plan, opts, whole=None):
    """The plan's Runs; with --keep, the Runs that carry resume points through git
    (keep.KeptRuns)."""
    if not getattr(opts, "keep", None):
        return Runs(plan, opts, whole)
    from keep import KeptRuns
    return type("KeptRuns", (KeptRuns, Runs), {})(plan, opts, whole)


def whole_plan_of(opts):
    """The plan --plan names with nothing narrowed (its --epochs, --tiny and --ledger kept)."""
    defaults = parse_plan(["--plan", opts.plan])
    for key in ("epochs", "tiny", "ledger"):
        setattr(defaults, key, getattr(opts, key))
    return plan_of(defaults)


def hold_folders(opts):
    """`run`'s exclusive hold on --work, --keep and --ledger (an flock on each folder itself,
    which the kernel drops when the process ends, and which leaves no file in the committed
    folders): a second driver on the same folders is refused in one line instead of training
    the same runs and reporting each other's as failed."""
    held_files = []
    for folder in dict.fromkeys(os.path.realpath(f) for f in (opts.work, opts.keep,
                                                              opts.ledger) if f):
        make_folder(folder, folder)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SystemExit(f"another `long_runs.py run` is using {folder}; wait for it to "
                             f"end (or stop that one alone: {stop_advice(opts)}), or pass "
                             "other --work/--keep/--ledger folders") from None
        held_files.append(fd)
    write_text(os.path.join(opts.work, DRIVER_PID), f"{os.getpid()}\n", opts.work)
    return held_files


DRIVER_PID = ".long_runs.pid"  # in --work: which process holds the plan's folders


def stop_advice(opts):
    """How to stop the driver holding these folders, and no other: its pid, from --work."""
    try:
        pid = whole(int(read_text(os.path.join(opts.work, DRIVER_PID), opts.work, 64)))
    except (OSError, UserError, ValueError):
        pid = None
    return (f"kill -TERM {pid}" if pid else "send SIGTERM to the driver started on these "
            "folders (ps -ef | grep long_runs.py; each driver prints its folders)")


# --------------------------------------------------------------------------- training
class Lane:
    """One main.py process at a time, with its share of the cores, training one run of the plan
    or (--per_process K) up to K together: main.py --runs_from, the sweep engine, which trains
    each run exactly as alone (on a GPU each on its own CUDA stream)."""

    def __init__(self, threads, index=0):
        self.threads, self.index = threads, index
        self.proc, self.runs, self.started, self.at_start = None, [], 0.0, {}
        self.probing = None  # the run whose frozen-f probe this lane's process is


def start(life, lane, runs):
    """Start the lane's process on runs (one, or several trained together)."""
    opts = life.opts
    if len(runs) == 1:
        args, out_name = run_argv(life, runs[0]), f".{runs[0]['name']}.out"
    else:  # the list is a file main.py reads through the file layer, like any handed file
        listing = os.path.join(opts.work, f".lane{lane.index}.json")
        write_json(listing, [run_argv(life, r) for r in runs], opts.work, indent=1)
        args, out_name = ["--runs_from", listing], f".lane{lane.index}.out"
    out_path = os.path.join(opts.work, out_name)
    append_text(out_path, "", opts.work)  # made or checked by the file layer: never a link
    with open(out_path, "a") as out:
        lane.proc = start_main(args, {"OMP_NUM_THREADS": str(lane.threads)}, out,
                               opts.low_priority)
    lane.runs, lane.started = list(runs), time.time()
    lane.at_start = {r["name"]: life.done(r, "work") for r in runs}
    together = f", {len(runs)} runs in one process" if len(runs) > 1 else ""
    for run in runs:
        done = lane.at_start[run["name"]]
        log(f"{run['name']}: {'continuing from epoch ' + str(done) if done else 'starting'} "
            f"({lane.threads} thread{'s' * (lane.threads > 1)}{together}; output {out_path})")


# what a probe's command keeps of its run's flags (its epochs and lr are the probe's own recipe)
TRAINING_ONLY_FLAGS = ("--epochs", "--lr")


def needs_probe(life, run):
    """Whether a run finished here and its frozen-f probe has not run, here or wherever its
    record came from (main.py --mode probe: how much of the bias a fresh head still reads
    from the run's f; issues #25, #33)."""
    work = life.work(run)
    return (run.get("probe", True) and life.view(run, "work").finished(planned_epochs(run))
            and os.path.lexists(os.path.join(work, LAST))
            and not any(os.path.lexists(os.path.join(folder, PROBE))
                        for folder in (work, life.ledger(run))))


def start_probe(life, lane, run):
    """The lane's next process: the probe of a run that has just finished (a few minutes; its
    probe.json then travels with the run's record into the ledger)."""
    opts, flags = life.opts, run["flags"]
    keep = [a for i, a in enumerate(flags) if a not in TRAINING_ONLY_FLAGS
            and (i == 0 or flags[i - 1] not in TRAINING_ONLY_FLAGS)]
    args = [*keep, "--mode", "probe", "--experiment_name", run["name"], "--output_dir",
            opts.work, "--data_root_base", opts.data_root, "--device", opts.device]
    out_path = os.path.join(opts.work, f".{run['name']}.probe.out")
    append_text(out_path, "", opts.work)
    with open(out_path, "a") as out:
        lane.proc = start_main(args, {"OMP_NUM_THREADS": str(lane.threads)}, out,
                               opts.low_priority)
    lane.runs, lane.probing, lane.started = [], run, time.time()
    log(f"{run['name']}: finished; its frozen-f probe runs (output {out_path})")


def pace_key(opts, lane):
    """pace.json's entry for this lane's layout: device kind, threads and, when several runs
    share a process, how many (a run among 16 is slower than alone)."""
    key = f"{device_kind(opts.device)}_{lane.threads}_threads"
    return key + (f"_{len(lane.runs)}_together" if len(lane.runs) > 1 else "")


def record_pace(life, lane):
    """Add this piece's whole epochs, and its seconds up to the end of the last of them, to
    each of the lane's runs' pace.json. The tail after that epoch (the part of an epoch a budget
    stopped) is left out with its partial epoch: counted, it would charge a short piece for
    work it did not finish (the next piece's first epoch, continued from the middle, is short
    by as much)."""
    for run in lane.runs:
        work = life.work(run)
        gained = life.done(run, "work") - lane.at_start.get(run["name"], 0)
        if gained <= 0:  # also when the folder is gone: no metrics.jsonl, no epochs
            continue
        path = os.path.join(work, PACE)
        pace = read_pace(path, life.opts.work)  # damaged: start it again
        key = pace_key(life.opts, lane)
        total, pieces = pace_entry(pace.get(key)) or ((0.0, 0), [])
        # metrics.jsonl gets a line as each epoch ends: its time is the last whole epoch's end
        last_epoch_end = os.path.getmtime(os.path.join(work, METRICS))
        seconds = max(last_epoch_end - lane.started, 0.0)
        pace[key] = {"seconds": total[0] + seconds, "epochs": total[1] + gained,
                     "pieces": (pieces + [[round(seconds, 1), gained]])[-KEPT_PIECES:]}
        write_json(path, pace, life.opts.work, indent=1)


def read_pace(path, root):
    """A pace.json (a handed file: it travels with the resume point), {} when it is missing
    or damaged."""
    try:
        return read_json(path, root, default={})
    except (OSError, UserError):
        return {}


def run_plan(life, opts):
    """Train the plan until every run finished or the budget is spent (the caller holds the
    folders: hold_folders). Returns the exit code."""
    life.restore()
    deadline = time.time() + opts.budget
    cores = max(1, opts.cores or os.cpu_count() or 1)
    lanes = [Lane(max(1, cores // opts.lanes), i) for i in range(opts.lanes)]
    failed, unprobed = [], set()
    stopping = [False]

    def on_signal(signum, frame):  # the driver itself told to stop: stop like the budget
        stopping[0] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while True:
        for lane in lanes:
            if lane.proc is not None and lane.probing is not None and (
                    lane.proc.poll() is not None):
                if lane.proc.returncode != 0:  # the run stands; its record lacks a probe
                    unprobed.add(lane.probing["name"])
                    log(f"{lane.probing['name']}: its probe failed (exit "
                        f"{lane.proc.returncode}); the run's record stands without it")
                lane.proc, lane.probing = None, None
                life.settle()  # probe.json joins the record in the ledger
            if lane.proc is not None and lane.proc.poll() is not None:
                code = lane.proc.returncode
                record_pace(life, lane)
                lane.proc = None
                states = {run["name"]: life.state(run) for run in lane.runs}
                if "finished" in states.values():
                    life.settle()
                for name, state in states.items():
                    if state != "finished" and code != 0:
                        failed.append(name)
                        log(f"{name}: failed (exit {code}); see the output named when it "
                            f"started in {opts.work}")
        out_of_time = stopping[0] or time.time() >= deadline
        busy = {run["name"] for lane in lanes if lane.proc is not None for run in lane.runs}
        busy |= {lane.probing["name"] for lane in lanes if lane.probing is not None}
        if not out_of_time:
            for lane in lanes:
                probe = next((r for r in life.plan if r["name"] not in busy | unprobed
                              and needs_probe(life, r)), None)
                if lane.proc is None and probe is not None:
                    start_probe(life, lane, probe)
                    busy.add(probe["name"])
                    continue
                if lane.proc is None:
                    ready = [r for r in life.plan if r["name"] not in busy
                             and r["name"] not in failed and life.ready(r)][:opts.per_process]
                    for r in list(ready):
                        try:
                            life.prepare(r)
                        except UserError as err:
                            failed.append(r["name"])
                            ready.remove(r)
                            log(f"{r['name']}: cannot start: {err}")
                    if ready:
                        start(life, lane, ready)
                        busy.update(r["name"] for r in ready)
        running = [lane for lane in lanes if lane.proc is not None]
        if out_of_time and running:
            log("budget reached: every run finishes its step and saves a checkpoint")
            for lane in running:
                lane.proc.send_signal(signal.SIGTERM)
            for lane in running:
                lane.proc.wait()
                if lane.probing is None:
                    record_pace(life, lane)
                lane.proc, lane.probing = None, None
            running = []
        if not running:
            break
        time.sleep(opts.poll)
    life.settle()
    left = [r["name"] for r in life.plan if life.state(r) != "finished"]
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    if left:
        log(f"{len(left)} run(s) not finished; resume points in {opts.keep or opts.work}. Run "
            "the same command again " + ("(here or on a clone with them) " if opts.keep else "")
            + "to continue.")
        return MORE_TO_DO
    log("every run of the plan finished")
    return 0


# --------------------------------------------------------------------------- status
def device_kind(device):
    """cpu, cuda, ...: --device without its index. Pace is kept per kind: a run continued on a
    GPU must not make the CPU's estimate (or the other way round)."""
    return str(device).split(":")[0]


def pace_kind(key):
    """The device kind of a pace.json entry ("cuda_4_threads"); entries written before pace
    was kept per kind ("1_threads") were all measured on the CPU."""
    return "cpu" if key[:1].isdigit() else key.split("_")[0]


def pace_entry(entry):
    """((seconds, epochs) in total, [[seconds, epochs] per kept piece]) of a pace.json entry,
    or None when it is not what record_pace writes (a resume point is a handed file: a
    damaged one measures nothing and is started again)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("pieces", []), list):
        return None
    pairs = [p for p in entry.get("pieces", []) if isinstance(p, list) and len(p) == 2]
    pieces = [[number(s), whole(e)] for s, e in pairs]
    total = (number(entry.get("seconds")), whole(entry.get("epochs")))
    values = [v for piece in pieces for v in piece] + list(total)
    if len(pairs) != len(entry.get("pieces", [])) or any(v is None or v < 0 for v in values):
        return None  # a value that is not a finite, non-negative number: measures nothing
    return total, pieces


def recent(entry):
    """(seconds, epochs) of a pace.json entry's newest pieces covering RECENT_EPOCHS epochs
    (all of them when fewer): the machine's load now is what the next hours will see, not
    that of a piece days ago beside other work. The totals' part older than the kept pieces
    (and entries written before pieces were kept) counts as one oldest piece."""
    parsed = pace_entry(entry)
    if parsed is None:
        return 0.0, 0
    (total_s, total_e), pieces = parsed
    older = (total_s - sum(s for s, _ in pieces), total_e - sum(e for _, e in pieces))
    seconds, epochs = 0.0, 0
    for s, e in reversed([older] + pieces):
        if e > 0:
            seconds, epochs = seconds + s, epochs + e
        if epochs >= RECENT_EPOCHS:
            break
    return seconds, epochs


def seconds_per_epoch(life, run):
    """Measured seconds per epoch on this device kind (--device) of this run's recent pieces;
    for a run at its grid's choice, else of another seed at that choice, else of the chosen
    grid run (before the choice, the grid's slowest); else of the latest run in plan order of
    its variant (else of its method) with a pace: the plan trains in its order, so that is the
    one trained last, on the machine of now."""
    kind = device_kind(life.opts.device)

    def pace(r):
        for where in life.places:
            data = read_pace(os.path.join(getattr(life, where)(r), PACE),
                             getattr(life.opts, where))
            mine = [recent(v) for k, v in data.items() if pace_kind(k) == kind]
            secs, eps = sum(s for s, _ in mine), sum(e for _, e in mine)
            if eps > 0:
                return secs / eps
        return None
    own = pace(run)
    if own is not None:
        return own, "measured"
    grid = [name for _, name in (run.get("choose") or {}).get("grid", ())]
    if grid:  # a run at its grid's choice trains as another seed at it, else as the chosen
        # grid run did (JTT's upsampled epoch is 1 + lambda_up times the error set); before the
        # choice, as its slowest. The seed first: the grid's runs often trained beside the tests
        for other in reversed(life.plan):
            if other is not run and (other.get("choose") or {}).get("path") == \
                    run["choose"]["path"] and (other_pace := pace(other)) is not None:
                return other_pace, f"as {other['name']}"
        made = selection_of(life, grid, run["choose"]["path"]) or {}
        paces = {n: pace(life.by_name[n]) for n in grid}
        chosen = made.get("chosen_run")
        if paces.get(chosen) is not None:
            return paces[chosen], f"as {chosen}"
        known = [(p, n) for n, p in paces.items() if p is not None]
        if known:
            slowest, name = max(known)
            return slowest, f"as the slowest of its grid, {name}"
    # another run of its variant, else of its method (Gray trains as the baseline does), on
    # its dataset (LNL's Colored MNIST trains a CNN: its epoch is not an LfF MLP's)
    method = lambda r: "baseline" if r["variant"] == "gray" else r["variant"]
    data = lambda r: r.get("expect", {}).get("dataset_name")
    for alike in (lambda r: r["variant"] == run["variant"] and data(r) == data(run),
                  lambda r: method(r) == method(run) and data(r) == data(run)):
        for other in reversed(life.plan):
            other_pace = pace(other) if alike(other) and other is not run else None
            if other_pace is not None:
                return other_pace, f"as {other['name']}"
    return None, ""


def fmt_hours(seconds):
    return "?" if seconds is None else f"{seconds / 3600:.1f} h"


def status(life):
    """One line per run: state, epochs done / planned, s/epoch, estimated time left."""
    rows = [("run", "state", "epochs", "s/epoch", "time left")]
    for run in life.plan:
        state = life.state(run)
        where = next((w for w in life.places if os.path.lexists(getattr(life, w)(run))),
                     "work")
        if state == "not started" and life.view(run, "ledger").damaged:
            state = "damaged record in the ledger: move it aside to train the run again"
        if state == "not started" and life.saved(run):
            state = "saved (restored by run)"
        waiting = life.waiting_for(run) if state == "not started" else []
        if waiting:
            state = f"waits for its grid ({len(waiting)} of {len(run['waits_for'])} runs left)"
        elif state == "not started" and run["after"] and not life.ready(run):
            state = (f"waits for {run['after']}" if life.state(life.by_name[run["after"]])
                     != "finished" else f"cannot start: {run['after']}'s checkpoint is not kept")
        done, total = life.done(run, where), planned_epochs(run)
        spe, how = seconds_per_epoch(life, run)
        left = None if spe is None else (total - done) * spe
        rows.append((run["name"], state, f"{done}/{total}",
                     "?" if spe is None else f"{spe:.{1 if spe < 10 else 0}f} ({how})",
                     "0" if state == "finished" else fmt_hours(left)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


# --------------------------------------------------------------------------- command line
def duration(text):
    """Seconds from '90', '45m', '2h' or '1h30m'."""
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*",
                     text)
    if not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 5400, 90m, 2h, "
                                         "1h30m)")
    h, mi, s = (float(g or 0) for g in m.groups())
    seconds = h * 3600 + mi * 60 + s
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"the budget must be positive; got {text!r}")
    return seconds

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                parents=[plan_parser(add_help=False)])
    p.add_argument("command", choices=("run", "status", "save", "table"),
                   help="table: the plan's README table from --ledger and --keep")
    p.add_argument("--budget", type=duration, default=duration("1h"),
                   help="run: wall-clock time to train before saving and stopping")
    p.add_argument("--lanes", type=positive, default=2,
                   help="main.py processes at once, each with its share of the cores")
    p.add_argument("--per_process", type=positive, default=1,
                   help="runs one process trains together (the sweep engine; on a GPU each on "
                        "its own CUDA stream): gpu_lease.py measures which layout is fastest")
    p.add_argument("--cores", type=int, default=0, help="cores to share (0: all)")
    p.add_argument("--low_priority", action="store_true",
                   help="nice 19 and autogroup nice 19: yields the CPU to other work")
    p.add_argument("--keep", default=None,
                   help="carry unfinished runs' resume points in this folder (commit or sync "
                        "it: keep.py); auto: results/in_progress/, its lff/ and compare/ "
                        "subfolders for those plans; default: none, runs resume from --work")
    p.add_argument("--mnist_from", default=None,
                   help="import MNIST's idx files from this folder when data_root lacks them")
    p.add_argument("--full", action="store_true",
                   help="table --plan compare: add the test oracle and the criterion's value")
    p.add_argument("--readme", default=None,
                   help="table: write it into this file's table block instead of printing it")
    p.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.keep:
        import keep
        opts.keep = keep.resolve(opts, p.error, ROOT, PLAN_FOLDERS)
    return check_plan_options(opts, p)


def ensure_mnist(opts):
    """MNIST in --data_root (fetch_data.py mnist --if_missing: imported --mnist_from, else
    downloaded)."""
    cmd = [sys.executable, os.path.join(ROOT, "fetch_data.py"), "mnist", "--if_missing",
           "--data_root_base", opts.data_root] + (["--from", opts.mnist_from]
                                                   if opts.mnist_from else [])
    if subprocess.call(cmd) != 0:
        raise SystemExit("MNIST is needed first: see the line above")


def main(argv=None):
    """The command asked for; a damaged or unsafe file met on the way is one line (exit 1),
    never a traceback."""
    opts = parse_args(argv)
    try:
        return command(opts, lifecycle(plan_of(opts), opts, whole_plan_of(opts)))
    except UserError as err:  # safe_files: DamagedFile, UnsafePath, DiskFull
        raise SystemExit(f"error: {err}")


def command(opts, life):
    if opts.command == "table" and opts.full and opts.plan != "compare":
        raise SystemExit("--full is the comparison's table: pass --plan compare")
    if opts.command == "table" and opts.readme:
        write_table(life, opts.readme)
        return 0
    if opts.command in ("status", "table"):
        try:
            if opts.command == "status":
                status(life)
            else:
                print(full_compare_table(life) if opts.full else table_of(life)[0])
            sys.stdout.flush()
        except BrokenPipeError:  # `status | head`: the reader has what it wanted
            sys.stdout = open(os.devnull, "w")
        return 0
    if opts.command == "save":
        if not opts.keep:
            raise SystemExit("save copies resume points into --keep: pass --keep DIR (or "
                             "--keep auto: results/in_progress/...)")
        life.settle()
        log(f"resume points saved in {opts.keep}")
        return 0
    life.held = hold_folders(opts)  # until the process ends: before anything else is done
    LOG.update(path=os.path.join(opts.work, "long_runs.log"), root=opts.work)
    log(f"plan {getattr(opts, 'plan', 'headline')}: {len(life.plan)} runs, budget "
        f"{fmt_hours(opts.budget)}; its lines are also in {LOG['path']}")
    if any(life.state(run) != "finished" or needs_probe(life, run) for run in life.plan):
        ensure_mnist(opts)  # a plan with nothing left to do needs no data (a fresh offline clone)
    return run_plan(life, opts)


if __name__ == "__main__":
    sys.exit(main())
