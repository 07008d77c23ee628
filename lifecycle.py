"""A run's lifecycle in one place: where it starts (fresh, from a stage-1 checkpoint, resumed,
or tested), its folder, and the hand-over to the Solver, which then only trains and evaluates.

    start = resolve_start(parser, args)   # every check; the checkpoint read once
    solver = Solver(start.args, nets, ...)  # main.py builds data, networks, loaders: no write
    train(solver, start) or test(solver, start)  # the run folder opened (the first write:
    #                                       args.json, run.log), the checkpoint's state handed
    #                                       to the Solver, then its loop or its evaluation

The configuration is resolved here once: `start.args` is a new namespace (the parsed flags plus
what the start decides: whether to resume, the recipe a resumed run keeps, the data a test
evaluates on, the prediction file), never the parsed one changed in place, and args.json
records exactly it. A checkpoint is read once per run (tests count the reads).
"""
import argparse
import os
from dataclasses import dataclass
from typing import Optional

import torch

import hparams
import metrics
import run_folder
import probe as bias_probe
from checkpoints import (adopt_resumed_args, check_compatible, check_init_optimizer,
                         check_init_unchanged, file_digest, init_source, newest_readable,
                         read_checkpoint)
from dataset_specs import DATASETS
from run_folder import RunFolder, checkpoint_dir, experiment_dir
from solver import run_to_end, stop_signals
from utils import ArgError, UserError, log


@dataclass
class Start:
    """What a run starts from, decided before anything is written."""
    args: argparse.Namespace       # the resolved configuration (args.json records it)
    kind: str                      # "fresh", "init" (stage 2), "resume", "test" or "probe"
    path: Optional[str] = None     # the checkpoint it starts from
    ckpt: Optional[dict] = None    # that checkpoint, read once
    init: Optional[dict] = None    # the stage-1 checkpoint a stage-2 run started from


def with_values(args, **changes):
    """A copy of args with changes: resolution never edits the namespace it was given."""
    return argparse.Namespace(**{**vars(args), **changes})


def warn(message):
    log(message, err=True)


def resolve_start(parser, args, hold=True):
    """Check the run folder (taking its lock when hold) and read the checkpoint the run starts
    from, before anything is written: the newest readable one of a resumed run, its
    --init_checkpoint, or test mode's. A checkpoint of other networks, data or another run is
    refused in one line. Returns the Start, with the resolved arguments."""
    resume = run_folder.check_experiment(args, parser.error, hold=hold)
    if args.mode == "test":
        return test_start(parser, args)
    if args.mode == "probe":
        return probe_start(parser, args)
    args = with_values(args, resume=resume)
    if resume:
        return resume_start(parser, args)
    if args.init_checkpoint:
        return init_start(parser, args)
    return Start(args, "fresh")


def trained_run(parser, args):
    """A finished run's checkpoint (--mode test and probe), read once, and the arguments with
    the data it was trained on: (path, checkpoint, args)."""
    path = run_folder.checkpoint_to_test(args)
    ckpt = read_checkpoint(path)
    recorded = ckpt.get("args", {})
    args = with_values(args, **recorded_data(parser, args, recorded, path))
    check_compatible(recorded, args, path, parser.roles)
    return path, ckpt, args


def test_start(parser, args):
    path, ckpt, args = trained_run(parser, args)
    args = with_values(args, test_output_npy=run_folder.prediction_target(args, path,
                                                                          parser.error))
    return Start(args, "test", path, ckpt)


def probe_start(parser, args):
    """--mode probe: the run's checkpoint (as test mode's), its data, and the probe recipe
    (probe.PROBE_EPOCHS, PROBE_LR) unless --epochs or --lr is given."""
    path, ckpt, args = trained_run(parser, args)
    target = bias_probe.probe_path(experiment_dir(args))
    if os.path.lexists(target) and not bias_probe.is_probe_record(target):
        parser.error(f"{target} exists and is not a probe record written by this tool; move "
                     "it aside")
    recipe = {k: v for k, v in (("epochs", bias_probe.PROBE_EPOCHS),
                                ("lr", bias_probe.PROBE_LR))
              if getattr(args, k) == parser.get_default(k)}
    return Start(with_values(args, **recipe), "probe", path, ckpt)


def recorded_data(parser, args, recorded, path):
    """Test mode evaluates on the data the run was trained for: each data flag left at its
    default takes the checkpoint's recorded value (say --color_var, --grayscale); a flag
    given with another value is refused in one line rather than testing on other data.
    Returns the values to take."""
    if recorded.get("dataset_name", args.dataset_name) != args.dataset_name:
        return {}  # check_compatible names the dataset
    fields = [o.name for o in DATASETS[args.dataset_name].options] + ["data_seed", "grayscale"]
    taken = {}
    for key in fields:
        if key not in recorded or getattr(args, key, None) == recorded[key]:
            continue
        if getattr(args, key) != parser.get_default(key):
            parser.error(f"--{key} {getattr(args, key)} contradicts the run's recorded "
                         f"{recorded[key]} ({path}); --mode {args.mode} reads the run's own data: "
                         f"drop --{key}")
        log(f"note: --{key} {recorded[key]}, as the run recorded it")
        taken[key] = recorded[key]
    return taken


def resume_start(parser, args):
    path, ckpt = newest_readable(checkpoint_dir(args), warn)
    if ckpt is None:
        raise UserError(f"no checkpoint in {checkpoint_dir(args)} can be read; start "
                        "again with --overwrite.")
    check_compatible(ckpt.get("args", {}), args, path, parser.roles)
    if ckpt.get("epoch", 0) > args.epochs:  # nothing to train, and args.json would lie
        parser.error(f"--epochs {args.epochs}: the run has already trained "
                     f"{ckpt['epoch']} epochs ({path}); pass --epochs {ckpt['epoch']} or "
                     "more to continue it (or --mode test to evaluate it)")
    args = with_values(args, **adopt_resumed_args(ckpt.get("args", {}), args, path, warn,
                                                        parser.roles))
    init = check_init_unchanged(ckpt.get("init"), warn, args.init_checkpoint)
    return Start(args, "resume", path, ckpt, init)


def init_start(parser, args):
    path = args.init_checkpoint
    if args.overwrite and run_folder.inside(path, experiment_dir(args)):
        parser.error(f"--init_checkpoint {path} lies in the run that --overwrite would "
                     "delete; copy it elsewhere first")
    ckpt = read_checkpoint(path)
    check_compatible(ckpt.get("args", {}), args, path, parser.roles)
    if not args.init_fresh_optimizer:
        check_init_optimizer(ckpt, args, path)
    return Start(args, "init", path, ckpt, init_source(path, ckpt))


def missing_state(solver, start):
    """What the starting checkpoint lacks for this run, in one line, or None: every network
    the run takes from it (a resumed or tested run: all of its own, twins included; stage 2:
    f and g) with the same parameters and shapes; a resumed run's optimizer groups with their
    sizes, and a method state the method can take (Method.check_state)."""
    ckpt, what = start.ckpt, f"checkpoint {start.path}"
    roles = ("f", "g") if start.kind == "init" else tuple(solver.nets.keys())
    saved = ckpt.get("nets") if isinstance(ckpt.get("nets"), dict) else {}
    for role in roles:
        if not isinstance(saved.get(role), dict):
            return (f"{what} holds no network {role!r}, which --method {start.args.method} "
                    f"needs; pass a checkpoint of a {start.args.method} run")
        ours = solver.nets[role].state_dict()
        for key, tensor in ours.items():
            theirs = saved[role].get(key)
            if not torch.is_tensor(theirs) or theirs.shape != tensor.shape:
                shape = tuple(theirs.shape) if torch.is_tensor(theirs) else "nothing"
                return (f"{what}: network {role!r} holds {shape} at {key!r} where this run's "
                        f"has {tuple(tensor.shape)}; pass a checkpoint of the same networks")
    if start.kind != "resume":
        return None
    optimizers = ckpt.get("optimizers") if isinstance(ckpt.get("optimizers"), dict) else {}
    for name, params in solver.method.param_groups().items():
        groups = optimizers.get(name, {}).get("param_groups") if isinstance(
            optimizers.get(name), dict) else None
        if not isinstance(groups, list) or sum(len(g.get("params", ())) for g in groups
                                                if isinstance(g, dict)) != len(params):
            return (f"{what} holds no optimizer state {name!r} for {len(params)} parameter "
                    f"tensors, which --method {start.args.method} trains; it is another "
                    "method's or damaged: start again with --overwrite, or pass its own run")
    problem = solver.method.check_state(ckpt.get("method") or {})
    return f"{what}: {problem}" if problem else None


def begin(solver, start):
    """The run's first write (by the main process): its folder, args.json (or test_args.json)
    and run.log; the Solver then writes through that RunFolder, and takes the starting
    checkpoint's state (restore). A checkpoint that lacks what the run takes from it is
    refused first, with nothing written."""
    problem = missing_state(solver, start) if start.ckpt is not None else None
    if problem:
        raise ArgError(problem)
    runtime = solver.runtime
    if runtime.is_main:
        run_folder.open_run(start.args, runtime.device)
    solver.run = RunFolder(start.args, runtime.is_main, solver.extra_loaders)
    restore(solver, start)
    selection = getattr(start.args, "hparam_selection", None)
    if selection:  # in run.log too: where this run's hyperparameters came from
        data_flags = [o.name for o in DATASETS[start.args.dataset_name].options]
        log(hparams.applied_text(selection, start.args, data_flags))


def restore(solver, start):
    """The starting checkpoint's state into a new Solver: everything of a resumed run (weights,
    optimizers, schedule, RNG, the position inside its epoch); f, g and (unless
    --init_fresh_optimizer) their optimizer state for stage 2, as the LNL authors' trainer
    starts it (docs/references.md); the weights for a test."""
    args, ckpt = start.args, start.ckpt
    solver.init_source = start.init
    if start.kind == "resume":
        solver.load_state(ckpt)
        where = (f", {solver.step_in_epoch} steps into the next" if solver.step_in_epoch
                 else "")
        log(f"resumed from {start.path} (epoch {solver.epoch} of {args.epochs} done{where})")
    elif start.kind == "init":
        solver.load_weights(ckpt["nets"], ("f", "g"))
        if args.init_fresh_optimizer:
            log(f"initialised f, g from {start.path} (fresh optimizer)")
            return
        lr = solver.take_optimizer_state("main", ckpt["optimizers"]["main"])
        log(f"initialised f, g and their optimizer state from {start.path} "
            f"(lr {lr:.3g} for the first epoch)")
    elif start.kind == "test":  # every network the method may predict with (DFA: f_b too)
        solver.load_weights(ckpt["nets"])


def training_steps(solver, start):
    """The run's training as a generator that yields after every step (sweep.py advances
    several in turn) and returns the final test accuracy. A run that already finished reports
    its record and rewrites nothing."""
    begin(solver, start)
    finished = solver.run.finished_record(solver.epoch)
    if finished is not None:
        log(f"final {metrics.FINAL}={finished[metrics.FINAL]:.4f} ({start.args.experiment_name}, "
            f"epoch {solver.epoch}, finished earlier) -> {solver.run.path}")
        return finished[metrics.FINAL]
    last = solver.run.open_logs(solver.epoch, start.kind == "resume")  # drops redone epochs
    return (yield from solver.training(last))


def train(solver, start):
    """Train to --epochs; SIGINT/SIGTERM finish the current step, save a checkpoint and raise
    RunStopped."""
    with stop_signals(solver.on_signal):
        return run_to_end(training_steps(solver, start))


def probe(start, runtime, nets, train_loader, test_loader, extra_loaders=None):
    """--mode probe (probe.py): the run's f, frozen, under a fresh bias head; probe.json."""
    args = start.args
    if runtime.is_main:
        run_folder.open_run(args, runtime.device)
    nets["f"].load_state_dict(start.ckpt["nets"]["f"])
    checkpoint = {"path": os.path.abspath(start.path), "epoch": start.ckpt.get("epoch"),
                  "sha256": file_digest(start.path)}
    return bias_probe.run_probe(args, nets["f"], nets["h"], train_loader, test_loader,
                           runtime.device, checkpoint, experiment_dir(args))[metrics.PROBE]


def test(solver, start):
    """Evaluate the starting checkpoint on the test set (Solver.test writes the predictions)."""
    begin(solver, start)
    return solver.test(start.path, start.ckpt.get("epoch"))
