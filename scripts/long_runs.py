"""Long runs: a plan of runs trained within a time budget, in pieces that resume bit-exactly.

    python scripts/long_runs.py run --budget 2h --low_priority   # train until the budget
    python scripts/long_runs.py status                           # where every run stands
    python scripts/long_runs.py table --readme README.md         # the README's headline table

A plan is a list of main.py runs, some starting from another's last checkpoint (the
Colored-MNIST recipe's stage 2 starts from its baseline). `run`:
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
runs through git: the short_lived plug-in (short_lived/keep.py) restores each resume point from
DIR before training, saves it there at the stop (`save` does it at once) and removes it once no
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from errors import UserError  # noqa: E402
from launchers import start_main  # noqa: E402
import ledger  # noqa: E402
import metrics  # noqa: E402
from ledger import add_record  # noqa: E402
from options import sigma2  # noqa: E402
from safe_files import (ARGS, METRICS, PACE, PROBE, RESULTS, append_text,  # noqa: E402
                        make_folder, number, read_json, read_run, read_text, whole, write_json,
                        write_text)
MORE_TO_DO = 3
RECENT_EPOCHS = 10  # status's pace: the newest pieces covering this many epochs
KEPT_PIECES = 20  # pieces pace.json lists per device kind (its totals keep every piece)
TABLE_ROWS = ("baseline", "lnl", "blindeye", "gray", "lff", "groupdro", "jtt")
TABLE_MARKS = ("<!-- long_runs.py table -->", "<!-- end of long_runs.py table -->")
from plans import (AFTER_LNL, COMPARE_METHODS, COMPARE_RATIOS, CRITERION,  # noqa: E402
                   HEADLINE_SIGMAS,
                   LFF_METHODS, LFF_RATIOS, SEEDS, VARIANTS, compare_plan, headline_plan,
                   lff_plan)

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
    """The plan's runs between --work (their live folders) and --ledger (finished records).
    With --keep, lifecycle() adds the resume points carried through git (short_lived/keep.py:
    restore, save, drop); here those steps do nothing and a run resumes from its work folder."""

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


def lifecycle(plan, opts, whole=None):
    """The plan's Lifecycle; with --keep, the one that carries resume points through git (the
    short_lived plug-in, imported only then)."""
    if not getattr(opts, "keep", None):
        return Lifecycle(plan, opts, whole)
    from short_lived.keep import KeptRuns
    return type("KeptLifecycle", (KeptRuns, Lifecycle), {})(plan, opts, whole)


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
LOG = {"path": None, "root": None}  # `run` also keeps its lines in <work>/long_runs.log


def log(text):
    line = f"[long_runs {time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    if LOG["path"]:
        try:
            append_text(LOG["path"], f"{time.strftime('%Y-%m-%d')} {line}\n", LOG["root"])
        except (OSError, UserError) as err:  # the log is a copy: training goes on without it
            LOG["path"] = None
            print(f"[long_runs] no longer writing its log file: {err}", flush=True)


class Lane:
    """One main.py process at a time, with its share of the cores, training one run of the plan
    or (--per_process K) up to K together: main.py --runs_from, the sweep engine, which trains
    each run exactly as alone (on a GPU each on its own CUDA stream)."""

    def __init__(self, threads, index=0):
        self.threads, self.index = threads, index
        self.proc, self.runs, self.started, self.at_start = None, [], 0.0, {}
        self.probing = None  # the run whose frozen-f probe this lane's process is


def run_argv(life, run):
    """main.py's arguments for one run of the plan, in the work folder."""
    opts = life.opts
    argv = [*run["flags"], "--experiment_name", run["name"], "--output_dir", opts.work,
            "--data_root_base", opts.data_root, "--device", opts.device, "--resume_if_any"]
    if run["after"]:
        argv += ["--init_checkpoint", os.path.join(life.work(life.by_name[run["after"]]),
                                                   "checkpoints", "last.pth")]
    return argv


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
            and os.path.lexists(os.path.join(work, "checkpoints", "last.pth"))
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
    """Measured seconds per epoch on this device kind (--device) of this run's recent pieces,
    else of the latest run in plan order of its variant (else of its method) with a pace: the
    plan trains in its order, so that is the one trained last, on the machine of now."""
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


# --------------------------------------------------------------------------- the table
def paper_numbers():
    """{(method, sigma^2): published test accuracy} on Colored MNIST (Kim et al., CVPR 2019,
    Fig. 4's table; ledger.paper_numbers)."""
    return {(r["variant"], r["color_var"]): r["value"] for r in ledger.paper_numbers()
            if r["dataset"] == "ColoredMNIST" and r["metric"] == metrics.FINAL}


def final_accuracy(life, run):
    """A finished run's final-epoch test accuracy from the ledger, else None."""
    view = life.view(run, "ledger")
    return view.record[metrics.FINAL] if view.finished(planned_epochs(run)) else None


def spread(values):
    """'mean ± std (n = k)' of the seeds' final accuracies (ledger.mean_std: sample std, ddof
    1); one seed says n = 1 and no spread."""
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
    return ledger.mean_std(mean, std, n)


def cell(life, runs):
    """Ours for one (method, sigma^2), from what is kept (never a live work folder): the mean
    ± std over the seeds whose records are in the ledger, with n; then the epochs of the seeds
    whose resume points hold some; '—' where the plan has no such run."""
    if not runs:
        return "—"
    done = [(r, final_accuracy(life, r)) for r in runs]
    values = [acc for _, acc in done if acc is not None]
    going = [(r, life.done(r, life.kept_in)) for r, acc in done if acc is None]
    lost = [r for r, e in going if not e and lost_start(life, r)]
    going = [(r, e) for r, e in going if e]
    parts = [spread(values)] if values else []
    damaged = [r for r, acc in done if acc is None and life.view(r, "ledger").damaged]
    if damaged:  # named, never dropped silently
        parts.append(", ".join(f"seed {r['seed']}" for r in damaged) + ": damaged record ("
                     + life.view(damaged[0], "ledger").damaged + ")")
    collapsed = [r for r, acc in done if acc is not None and collapsed_at_end(life, r)]
    if collapsed:  # its accuracy is a class's share, not the method's: never shown bare
        parts[0] += (f", {len(collapsed)} of {len(values)} collapsed to one class (epoch "
                     + ", ".join(str(life.view(r, "ledger").record["collapse"]["first_epoch"])
                                 for r in collapsed) + ")")
    if going:
        each = ", ".join(f"{e}" + (f" (seed {r['seed']})" if len(runs) > 1 else "")
                         for r, e in going)
        parts.append(f"{'not finished: ' if not values else ''}{each} of "
                     f"{planned_epochs(going[0][0])} epochs")
    if lost:
        parts.append("seed " + ", ".join(str(r["seed"]) for r in lost) + " cannot start: "
                     "its start run's checkpoint was not kept")
    return "; ".join(parts) or "not started"


def collapsed_at_end(life, run):
    """Whether a finished run's record says it ended collapsed to one class
    (records.collapse; records from before 2026-12-06 did not measure it)."""
    state = life.view(run, "ledger").record.get("collapse")
    return isinstance(state, dict) and state.get("final") is True


def lost_start(life, run):
    """A stage-2 run whose start run is in the ledger without a kept checkpoint (it finished
    before this run was planned): it can never start from what the repository holds."""
    after = life.by_name.get(run["after"]) if run["after"] else None
    return (after is not None and final_accuracy(life, after) is not None
            and not life.has_checkpoint(after, life.kept_in))


def labelled(keys, dataset):
    """(key, its name on the benchmark) for a table's rows (records.labels: the registries)."""
    import records  # here: the other commands need no torch
    names = records.labels(dataset)
    return [(key, names[key]) for key in keys]


def headline_table(life):
    """The README's headline table in Markdown: ours beside the paper's per method and per
    sigma^2 of the plan that has begun (in the order of HEADLINE_SIGMAS), built from the
    ledger and the resume points alone, so that what the README says is what the repository
    holds. A cell pools the seeds: mean ± std with n once two have finished."""
    runs = {}
    for r in life.plan:
        runs.setdefault((r["variant"], r["sigma"]), []).append(r)
    cells = {key: cell(life, group) for key, group in runs.items()}
    sigmas = sorted({r["sigma"] for r in life.plan},
                    key=lambda s: (HEADLINE_SIGMAS + (s,)).index(s))
    begun = [s for s in sigmas
             if any(c != "not started" for (_, sigma), c in cells.items() if sigma == s)]
    paper = paper_numbers()
    lines = ["| σ² | " + " | ".join(begun) + " |", "|---|" + "---|" * len(begun)]
    for method, name in labelled(TABLE_ROWS, "ColoredMNIST"):
        if not any((method, s) in runs for s in begun) or (
                method in AFTER_LNL and all(cells.get((method, s), "—") in ("—", "not started")
                                            for s in begun)):
            continue  # a later method's row once it has begun (the paper has none)
        ours = (cells.get((method, s), "—") for s in begun)
        published = (f"{paper[method, s]:.4f}" if (method, s) in paper else "—" for s in begun)
        lines += [f"| {name} (ours) | " + " | ".join(ours) + " |",
                  f"| {name} (paper) | " + " | ".join(published) + " |"]
    return "\n".join(lines)


LFF_ROWS = ("baseline", "lff", "groupdro", "jtt", "lnl", "blindeye", "lnl_stage2",
            "blindeye_stage2")
LFF_MARKS = ("<!-- long_runs.py table --plan lff -->",
             "<!-- end of long_runs.py table --plan lff -->")


def lff_table(life):
    """The README's table of LfF's benchmark: per method and share of conflicting images, the
    final-epoch test accuracy (mean ± std over the seeds in the ledger, with n), or the epochs
    the resume points hold. No published number beside it: the LfF paper's table was not read
    here (docs/references.md §4a)."""
    return "\n".join(share_table(life, labelled(LFF_ROWS, "LfFColoredMNIST"), cell)[0])


def share_table(life, rows, cell_of):
    """(Markdown lines: a row per method of rows that the plan has, a column per share of
    conflicting images in plan order, each cell cell_of(life, runs); the plan's runs by
    (variant, sigma))."""
    runs = {}
    for r in life.plan:
        runs.setdefault((r["variant"], r["sigma"]), []).append(r)
    ratios = [s for s in dict.fromkeys(r["sigma"] for r in life.plan) if s in LFF_RATIOS]
    lines = ["| conflicting | " + " | ".join(f"{float(r):.1%}" for r in ratios) + " |",
             "|---|" + "---|" * len(ratios)]
    for method, name in rows:
        if any((method, r) in runs for r in ratios):
            lines.append(f"| {name} | " + " | ".join(cell_of(life, runs.get((method, r), []))
                                                      for r in ratios) + " |")
    return lines, runs


COMPARE_ROWS = ("baseline", "lff", "groupdro", "jtt", "lnl", "blindeye", "dfa")
COMPARE_MARKS = ("<!-- long_runs.py table --plan compare -->",
                 "<!-- end of long_runs.py table --plan compare -->")


def selection_of(life, grid, path):
    """The grid's selection: the file the plan wrote when its chosen runs started, else made
    now from the grid's finished records (validation only: hparams.choose), else None while
    the grid is unfinished or a record cannot be read."""
    if path and os.path.lexists(path):
        try:
            return read_json(path, life.opts.ledger)
        except (UserError, OSError):
            return None
    runs = [life.by_name[g] for g in grid]
    if any(life.state(r) != "finished" for r in runs) or not runs:
        return None
    import hparams
    try:
        return hparams.choose(runs[0]["variant"], [(r["point"], life.view(r, "ledger").record,
                                                    r["name"]) for r in runs], CRITERION)
    except UserError:
        return None


def compare_cell(life, runs):
    """Ours for one (method, share) of the comparison: a method without a grid pools its
    seeds; one with a grid shows how far its grid is, then pools the chosen grid run (seed 0)
    with the seeds trained at the choice, and names the choice."""
    pooled, selection = chosen_runs(life, runs)
    if pooled is None:
        grid = [r for r in runs if r.get("point")]
        done = sum(life.state(r) == "finished" for r in grid)
        return f"grid: {done} of {len(grid)} runs finished"
    if selection is None:
        return cell(life, pooled)
    choice = ", ".join(f"{k.split('_', 1)[1]} {v:g}" if isinstance(v, (int, float))
                       else f"{k} {v}" for k, v in selection.get("choice", {}).items())
    noisy = "" if selection.get("separable") else ", too noisy to choose"
    return f"{cell(life, pooled)} [{choice}{noisy}]"


def chosen_runs(life, runs):
    """(the runs a cell pools: the chosen grid run and the seeds at the choice, the
    selection), or (runs, None) for a method without a grid; None for the runs while its grid
    has not chosen."""
    grid = [r for r in runs if r.get("point")]
    if not grid:
        return runs, None
    chosen = [r for r in runs if r.get("choose")]
    selection = selection_of(life, [r["name"] for r in grid],
                             chosen[0]["choose"]["path"] if chosen else None)
    if selection is None:
        return None, None
    seed0 = life.by_name.get(selection.get("chosen_run"))
    return ([seed0] if seed0 else []) + chosen, selection


def full_compare_table(life):
    """The comparison with what the README leaves out: per method and share, the final epoch,
    the test oracle (the best test accuracy over epochs: chosen on the test set, shown only to
    measure the gap) and the criterion's value at the choice with its interval."""
    lines = ["| method | conflicting | final epoch | test oracle | "
             f"{CRITERION} at the choice [95% interval] | choice |", "|---|---|---|---|---|---|"]
    runs = {}
    for r in life.plan:
        if r["sigma"] in LFF_RATIOS:
            runs.setdefault((r["variant"], r["sigma"]), []).append(r)
    names = dict(labelled(COMPARE_ROWS, "LfFColoredMNIST"))
    for (method, ratio), group in runs.items():
        pooled, selection = chosen_runs(life, group)
        if pooled is None:
            continue
        records = [life.view(r, "ledger").record for r in pooled
                   if final_accuracy(life, r) is not None]
        oracle = [x[metrics.ORACLE] for x in records if number(x.get(metrics.ORACLE)) is not None]
        crit, choice = "—", "recipe"
        if selection:
            best = next((g for g in selection["grid"] if g["run"] == selection["chosen_run"]),
                        None)
            if best:
                crit = f"{best['value']:.3f} [{best['ci95'][0]:.3f}, {best['ci95'][1]:.3f}]"
            choice = ", ".join(f"{k} {v:g}" for k, v in selection["choice"].items())
            choice += "" if selection.get("separable") else " (too noisy to choose)"
        lines.append(f"| {names[method]} | {float(ratio):.1%} | "
                     f"{cell(life, pooled)} | {spread(oracle) if oracle else '—'} | {crit} | "
                     f"{choice} |")
    return "\n".join(lines)


def compare_table(life):
    """The README's comparison table: per method and share of conflicting images, the final
    epoch at the hyperparameters chosen on validation (plans.CRITERION), mean ± std over
    seeds with n, the choice in brackets; then the later methods on LNL's Colored MNIST."""
    rows = labelled(COMPARE_ROWS, "LfFColoredMNIST")
    lines, runs = share_table(life, rows, compare_cell)
    other = [(m, runs[m, "0.020"]) for m, _ in rows if (m, "0.020") in runs]
    if other:
        on_lnls = dict(labelled(COMPARE_ROWS, "ColoredMNIST"))
        lines += ["", "| LNL's Colored MNIST, σ² 0.020 | " + " | ".join(
            on_lnls[m] for m, _ in other) + " |", "|---|" + "---|" * len(other),
            "| final epoch | " + " | ".join(cell(life, rs) for _, rs in other) + " |"]
    return "\n".join(lines)


def table_of(life):
    """The plan's README table and its marks."""
    if getattr(life.opts, "plan", "headline") == "lff":
        return lff_table(life), LFF_MARKS
    if getattr(life.opts, "plan", "headline") == "compare":
        return compare_table(life), COMPARE_MARKS
    return headline_table(life), TABLE_MARKS


def write_table(life, path):
    """Replace the table between the plan's marks in path (the README) with its table
    (table_of); a file without both marks is left alone (one line says so)."""
    root = os.path.dirname(os.path.abspath(path))
    try:
        text = read_text(path, root)
    except UserError as err:
        raise SystemExit(f"{err} (nothing was changed)")
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc.strerror}; pass the README's path")
    table, marks = table_of(life)
    start, end = (text.find(mark) for mark in marks)
    if start < 0 or end < start:
        raise SystemExit(f"{path} has no '{marks[0]}' ... '{marks[1]}' block; add "
                         "the two lines where the table goes (nothing was changed)")
    start += len(marks[0])
    new = text[:start] + "\n" + table + "\n" + text[end:]
    if new != text:
        write_text(path, new, root)  # never through a link (safe_files)
    print(f"{path}: the table {'updated' if new != text else 'already matched'}")


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
    """The plan the options describe (every command of this script, and gpu_lease.py)."""
    if getattr(opts, "plan", "headline") == "lff":
        return lff_plan(opts.epochs, opts.ratios, opts.seeds, opts.methods, opts.tiny)
    if getattr(opts, "plan", "headline") == "compare":
        return compare_plan(opts.epochs, opts.ratios, opts.seeds, opts.compare_methods,
                            opts.tiny, opts.ledger)
    return headline_plan(opts.epochs, opts.sigmas, opts.tiny, opts.seeds, opts.variants)


def whole_plan_of(opts):
    """The plan --plan names with nothing narrowed (its --epochs and --tiny kept)."""
    defaults = parse_args(["status", "--plan", opts.plan])
    for key in ("epochs", "tiny", "ledger"):
        setattr(defaults, key, getattr(opts, key))
    return plan_of(defaults)


# each plan's folders: work (under outputs/), keep and ledger (under results/, committed).
# Every resume point lives under results/in_progress/: the LfF plan's in its own subfolder.
PLAN_FOLDERS = {"headline": ("long", "in_progress", "cmnist"),
                "lff": ("long_lff", os.path.join("in_progress", "lff"), "lff_cmnist"),
                "compare": ("long_compare", os.path.join("in_progress", "compare"), "compare")}
# the flags that shape one plan only (--seeds and --epochs shape every plan)
PLAN_FLAGS = {"sigmas": ("headline",), "variants": ("headline",),
              "ratios": ("lff", "compare"), "methods": ("lff",),
              "compare_methods": ("compare",)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("command", choices=("run", "status", "save", "table"),
                   help="table: the plan's README table from --ledger and --keep")
    p.add_argument("--plan", choices=tuple(PLAN_FOLDERS), default="headline",
                   help="headline: the LNL paper's table (Colored MNIST); lff: LfF's Colored "
                        "MNIST at each method's recipe, every method x --ratios x --seeds; "
                        "compare: every method on LfF's benchmark at hyperparameters chosen "
                        "on validation, then the later methods on LNL's (each plan with its "
                        "own --keep and --ledger)")
    p.add_argument("--budget", type=duration, default=duration("1h"),
                   help="run: wall-clock time to train before saving and stopping")
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
    p.add_argument("--lanes", type=positive, default=2,
                   help="main.py processes at once, each with its share of the cores")
    p.add_argument("--per_process", type=positive, default=1,
                   help="runs one process trains together (the sweep engine; on a GPU each on "
                        "its own CUDA stream): gpu_lease.py measures which layout is fastest")
    p.add_argument("--cores", type=int, default=0, help="cores to share (0: all)")
    p.add_argument("--low_priority", action="store_true",
                   help="nice 19 and autogroup nice 19: yields the CPU to other work")
    p.add_argument("--device", default="cpu", help="main.py's --device")
    p.add_argument("--work", default=None,
                   help="the live run folders (default outputs/long, outputs/long_lff with "
                        "--plan lff)")
    p.add_argument("--keep", default=None,
                   help="carry unfinished runs' resume points in this folder (commit or sync "
                        "it: short_lived/keep.py); auto: results/in_progress/, its lff/ and "
                        "compare/ subfolders for those plans; default: none, runs resume from "
                        "--work")
    p.add_argument("--ledger", default=None,
                   help="finished runs' small records (committed; default results/cmnist, "
                        "results/lff_cmnist with --plan lff)")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data"))
    p.add_argument("--mnist_from", default=None,
                   help="import MNIST's idx files from this folder when data_root lacks them")
    p.add_argument("--tiny", action="store_true", help="512 training images: a rehearsal")
    p.add_argument("--full", action="store_true",
                   help="table --plan compare: add the test oracle and the criterion's value")
    p.add_argument("--readme", default=None,
                   help="table: write it into this file's table block instead of printing it")
    p.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
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
    if opts.keep:  # the short-lived machines' plug-in, imported only when asked for
        from short_lived import keep
        opts.keep = keep.resolve(opts, p.error, ROOT, PLAN_FOLDERS)
    opts.work = opts.work or os.path.join(ROOT, "outputs", work)
    opts.ledger = opts.ledger or os.path.join(ROOT, "results", ledger)
    for flag in ("work", "keep", "ledger"):
        folder = getattr(opts, flag)
        if folder and os.path.exists(folder) and not os.path.isdir(folder):
            p.error(f"--{flag} {folder} is a file, not a folder; pass a folder")
    return opts


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
