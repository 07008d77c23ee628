"""Sweeps: several runs trained together by one process, each exactly as if it ran alone.

    python main.py --method baseline lnl --seed 0 1 2 --color_var 0.020 0.050 ...

trains the cross product of the values (12 runs here). Every run is a whole Solver of its own
(its seed, data, sigma^2, method, optimizers, schedule and RunFolder); the Sweep advances
their training generators (lifecycle.training_steps) one step each in turn. Around a run's turn its
random state, its log file and (on CUDA) its own stream are swapped in, so a run draws the
same random numbers, writes the same files and ends with the same weights as alone; on a GPU
the runs' steps (recorded CUDA graphs) are queued on separate streams and can overlap.

Methods never know they are in a sweep: nothing here touches the method contract.
"""
import argparse
import contextlib
import itertools
import os
import string

import torch

import metrics
from solver import stop_signals
from utils import RunStopped, UserError, log, rng_state, set_rng_state

# Flags that take several values. What a sweep varies in practice: the paper's figure is
# sigma^2 x method, an honest one adds seeds (and data seeds, for the dataset's own draw), and
# the learning rate is the one hyperparameter every recipe tunes (and the two stages differ
# in); LfF's benchmark varies its share of conflicting images as the paper's table does.
# Flags that change the work's shape (--epochs, --batch_size, networks) stay single: runs of
# one sweep advance step for step.
SWEEPABLE = ("method", "seed", "data_seed", "color_var", "lff_conflict_ratio", "lr")
# Name fields a sweep fills per run (--experiment_name, --init_checkpoint)
TEMPLATED = ("experiment_name", "init_checkpoint")


class _Reader:
    """A flag's type that also keeps the text each value was typed as (0.020 stays 0.020 in
    run names) in texts[(flag, value)]."""

    def __init__(self, kind, dest, texts):
        self.kind, self.dest, self.texts = kind, dest, texts
        self.__name__ = getattr(kind, "__name__", "value")  # argparse's messages name the type

    def __call__(self, text):
        value = self.kind(text) if self.kind else text
        self.texts.setdefault((self.dest, value), str(text))
        return value


def make_sweepable(parser):
    """The SWEEPABLE flags of parser take one or more values."""
    parser.sweep_texts = {}
    for action in parser._actions:
        if action.dest in SWEEPABLE:
            action.nargs = "+"
            action.type = _Reader(action.type, action.dest, parser.sweep_texts)
            action.help += "; several values: a sweep over them (see --experiment_name)"


def _values(value):
    return list(value) if isinstance(value, list) else [value]


def expand(parser, args):
    """One namespace per combination of the sweepable flags' values (in SWEEPABLE's order,
    the last flag varying fastest), named as --help says."""
    axes = [(key, _values(getattr(args, key))) for key in SWEEPABLE if hasattr(args, key)]
    for key, values in axes:
        if len(set(values)) < len(values):
            parser.error(f"--{key} lists a value twice: {' '.join(map(str, values))}")
    varying = [key for key, values in axes if len(values) > 1]
    runs = []
    for combo in itertools.product(*(values for _, values in axes)):
        run = argparse.Namespace(**vars(args))
        for (key, _), value in zip(axes, combo):
            setattr(run, key, value)
        fields = {key: parser.sweep_texts.get((key, value), str(value))
                  for (key, _), value in zip(axes, combo)}
        for key in TEMPLATED:
            setattr(run, key, fill(parser, key, getattr(run, key), fields))
        if varying and "{" not in (args.experiment_name or ""):
            run.experiment_name = (f"{args.experiment_name or 'sweep'}/"
                                   + ",".join(f"{k}={fields[k]}" for k in varying))
        runs.append(run)
    return runs


def fill(parser, flag, text, fields):
    """text with its {flag} fields filled from this run's values (None stays None)."""
    if not text or "{" not in text:
        return text
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        parser.error(f"--{flag} {text!r}: {exc}")
    unknown = sorted(set(names) - set(fields))
    if unknown or "" in names:
        parser.error(f"--{flag} {text!r}: fields must name sweepable flags "
                     f"({', '.join(SWEEPABLE)}), not {{{(unknown or [''])[0]}}}")
    try:
        return text.format(**fields)
    except (ValueError, IndexError, AttributeError) as exc:  # e.g. a format spec: {seed:03d}
        parser.error(f"--{flag} {text!r}: {exc}; fields are plain {{flag}} (values as typed)")


def check_runs(parser, runs):
    """What only a whole sweep can get wrong: two runs in one folder, a sweep in test mode or
    under torchrun."""
    if len(runs) == 1:
        return
    if runs[0].mode == "test":
        parser.error(f"--mode test evaluates one run; give each flag one value (this asks for "
                     f"{len(runs)} runs)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        parser.error("a sweep runs in one process; start it with python main.py, not torchrun")
    seen = {}
    for run in runs:
        folder = os.path.normpath(run.experiment_name)
        if folder in seen:
            parser.error(f"two runs of the sweep would share --experiment_name {folder}; put "
                         "the flags that differ in it as {flag} fields (see --help)")
        seen[folder] = run


class Member:
    """One run of a sweep: its Solver, its training generator, and what is swapped in around
    its turns (random state, log file, CUDA stream)."""

    def __init__(self, args):
        self.args, self.name = args, args.experiment_name
        self.solver = self.steps = self.outcome = self.test_acc = None
        self.rng = None  # its random state between turns
        self.log = (None, [], f"[{self.name}] ", None)
        self.stream = None

    @contextlib.contextmanager
    def turn(self):
        """Inside: this run's random state, log and stream are the process's."""
        if self.rng is not None:
            set_rng_state(self.rng)
        outer = log.swap(self.log)
        stream = torch.cuda.stream(self.stream) if self.stream else contextlib.nullcontext()
        try:
            with stream:
                yield
        finally:
            self.rng, self.log = rng_state(), log.swap(outer)

    def start(self, solver, steps):
        """Its Solver and its training generator (lifecycle.training_steps)."""
        self.solver, self.steps = solver, steps

    def advance(self):
        """One step (or the work between steps); False once the run has ended, however."""
        try:
            with self.turn():
                next(self.steps)
            return True
        except StopIteration as done:
            self.test_acc, self.outcome = done.value, (0, "finished")
        except RunStopped as stop:  # diverged, or a signal: its checkpoint is saved
            self.outcome = (stop.code, str(stop))
        except UserError as err:  # e.g. an unreadable input file: this run alone stops
            self.outcome = (1, f"error: {err}")
        return False


def interleave(members):
    """Advance each member's generator one step in turn until all have ended."""
    live = list(members)
    while live:
        live = [member for member in live if member.advance()]


def train_together(members):
    """Advance every member one step in turn until each has ended; SIGINT/SIGTERM stop every
    run after its current step, with a checkpoint. Prints one line per run and returns the
    exit code: 0 when all finished, 128 + the signal when one stopped them, else 1."""
    def on_signal(signum, frame):
        for member in members:
            member.solver.stop_signal = signum

    with stop_signals(on_signal):
        interleave(members)
    for member in members:
        code, message = member.outcome
        log(f"[{member.name}] {message}"
            + ("" if code else f": {metrics.FINAL}={member.test_acc:.4f}"),
            err=code != 0)
    codes = [member.outcome[0] for member in members if member.outcome[0]]
    failed = [member.name for member in members if member.outcome[0]]
    if failed:
        log(f"{len(failed)} of {len(members)} runs did not finish: {', '.join(failed)}", err=True)
    signals = [code for code in codes if code > 128]
    return signals[0] if signals else (1 if codes else 0)
