"""main.py's command line, resolved once: the parser (general flags, each with its role, and one
argument group per method and per dataset built from their declarations), YAML configs, the
values left to a dataset's spec or a selection file, and every validation (one line, exit 2)
before anything is written. main.py imports parse_runs and parse_args from here.
"""
import argparse
import math
import os
import sys

import yaml

import dataset_specs
import hparams
import methods
import run_folder
import sweep
from dataset_specs import DATASETS, missing_fields
from lifecycle import with_values
from methods import METHODS
from network import NETWORKS
from options import (ARCHITECTURE, DEFINES, DRIVES, RECIPE, FromDataset, add_groups,
                     check_ranges, is_unset)
from runtime import DEVICE_PATTERN
from safe_files import read_json
from utils import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (not the 40-line usage), printed by one
    process under torchrun, and exit code 2."""

    def error(self, message):
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def build_parser():
    p = OneLineParser(prog="main.py", description="Train and test networks on biased data "
                                "(Learning Not to Learn, Kim et al., CVPR 2019).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.roles = {}  # flag -> its role for a run (options.ROLES), declared with the flag
    p.given = set()  # the flags on the command line (parse_runs): given by hand

    def add(group, role, *names, **kwargs):
        action = group.add_argument(*names, **kwargs)
        p.roles[action.dest] = role
    add(p, DRIVES, "--config", default=None,
        help="YAML file whose keys (flag names) become defaults; flags win")
    add(p, DRIVES, "--runs_from", default=None,
        help="a JSON file listing runs, each a list of main.py arguments, trained together in "
        "this process as a sweep's runs are (each exactly as alone): what the long-run driver's "
        "--per_process writes. No other flag goes with it")
    add(p, DRIVES, "--mode", choices=("train", "test", "probe"), default="train",
        help="probe: train a fresh bias head on the run's frozen f (the bias left in f)")
    add(p, DEFINES, "--method", choices=sorted(METHODS), default="lnl",
        help="training method (registry in methods.py)")
    add(p, DRIVES, "--hparams_from", default=None,
        help="a selection file (hparams.py: the method's grid compared on validation, written "
        "when the compare plan is launched: scripts/plan_runs.py): its chosen hyperparameters "
        "are this run's, and its record holds the criterion, the grid and the choice")

    d = p.add_argument_group("data")
    add(d, ARCHITECTURE, "--dataset_name", default="ColoredMNIST",
        help=f"one of {', '.join(DATASETS)}")
    add(d, DRIVES, "--data_root_base", default="./data")
    add(d, DEFINES, "--data_seed", type=int, default=0,
        help="seed of the dataset construction (same data for every --seed)")
    add(d, DEFINES, "--max_train_samples", type=int, default=0,
        help="use the first N (0 = all; a seeded random N of image files)")
    add(d, DEFINES, "--val_fraction", type=float, default=0.0,
        help="hold out this seeded fraction of the training set (biased as it is), evaluated "
        "every epoch: the record then names the epoch validation accuracy selects and its "
        "test accuracy (test_acc_selected) beside the final epoch's and the oracle's")
    add(d, DEFINES, "--max_test_samples", type=int, default=0,
        help="use the first N of each evaluation set (0 = all; as above)")
    add(d, DRIVES, "--num_workers", type=int, default=-1,
        help="DataLoader worker processes; -1 = none for in-memory datasets, "
        "min(8, CPUs) for image files (decoding off the main process)")
    add(d, DEFINES, "--grayscale", action="store_true",
        help="train and test on grayscale images (the 'Gray' oracle)")

    n = p.add_argument_group("networks")
    add(n, ARCHITECTURE, "--f_network_name", default="cmnist_f",
        help=f"one of {', '.join(NETWORKS)}")
    add(n, ARCHITECTURE, "--g_network_name", default="cmnist_g")
    add(n, ARCHITECTURE, "--h_network_name", default="cmnist_h")
    add(n, ARCHITECTURE, "--num_main_classes", type=int, default=FromDataset("ColoredMNIST: 10"),
        help="g's outputs (1 = one logit, a binary task)")
    add(n, ARCHITECTURE, "--num_bias_classes", type=int, default=FromDataset("ColoredMNIST: 8"),
        help="h's classes per head (bins per colour channel on ColoredMNIST)")
    add(n, ARCHITECTURE, "--hidden_dim", type=int, default=390,
        help="width of the MLP networks (irm_mlp_*, spiral_mlp_*)")
    add(n, ARCHITECTURE, "--resnet_split", type=int, choices=(1, 2, 3, 4), default=3,
        help="resnet18_*: the last ResNet-18 stage in f (g runs the rest)")
    add(n, DEFINES, "--pretrained", action="store_true",
        help="resnet18_*: start from torchvision's ImageNet weights")

    t = p.add_argument_group("training (reference recipe)")
    add(t, DRIVES, "--epochs", type=int, default=100)
    add(t, DEFINES, "--batch_size", type=int, default=128,
        help="0 = full batch; per environment on " + ", ".join(
        name for name, spec in DATASETS.items() if spec.balanced_envs))
    add(t, DEFINES, "--optimizer", choices=("sgd", "adam"), default="sgd")
    add(t, RECIPE, "--lr", type=float, default=0.001,
        help="0.01 for the baseline stage, 0.001 for the LNL stage")
    add(t, RECIPE, "--momentum", type=float, default=0.9)
    add(t, RECIPE, "--weight_decay", type=float, default=5e-4)
    add(t, RECIPE, "--lr_decay_period", type=int, default=40, help="epochs between lr decays")
    add(t, RECIPE, "--lr_decay_rate", type=float, default=0.1)
    add(t, DEFINES, "--seed", type=int, default=0, help="training seed (init, shuffle)")
    add(t, DRIVES, "--device", default="auto",
        help="auto, cpu or cuda[:N] (under torchrun: each process its local GPU)")
    add(t, DRIVES, "--deterministic", action="store_true",
        help="deterministic kernels only: bit-identical runs for the same seed")
    add(t, DRIVES, "--fast", choices=("auto", "off"), default="auto",
        help="auto: in-memory datasets live on the device and are batched there, "
        "and on CUDA a graph-safe method's training step ("
        + ", ".join(n for n, c in METHODS.items() if c.graph_safe) + "; SGD; one process) "
        "is recorded once as a CUDA graph (checked against an eager step) and "
        "replayed; off: DataLoader batches and eager steps (the plain path)")
    add(t, DRIVES, "--precision", choices=("fp32", "bf16"), default="fp32",
        help="bf16: bfloat16 autocast for training and evaluation, and "
        "channels_last weights (a GPU speed option; fp32 is the reference)")
    add(t, DRIVES, "--tf32", choices=("off", "on"), default="off",
        help="on: float32 convolutions and matmuls on a GPU's TF32 tensor cores "
        "(10-bit mantissa); off: full float32, as the reference computed")
    add(t, DRIVES, "--skip_nonfinite", action="store_true",
        help="skip (and count) steps with a non-finite loss instead of stopping")
    add(t, DRIVES, "--sync_bn", action="store_true",
        help="torchrun on GPUs: synchronise BatchNorm statistics across processes")

    o = p.add_argument_group("outputs and checkpoints")
    add(o, DRIVES, "--experiment_name", default=None,
        help="folder under --output_dir (default: "
        "<method>_<var<color_var> or dataset>_seed<seed>). A sweep's runs are "
        "<name>/<flag>=<value>,... over the flags given several values "
        "(<name> defaults to 'sweep'), or this name with {flag} filled in "
        "when it holds such fields, e.g. 'cmnist_var{color_var}_seed{seed}'")
    add(o, DRIVES, "--output_dir", default="./outputs")
    add(o, DRIVES, "--save_every", type=int, default=10, help="keep a checkpoint every N epochs")
    add(o, DRIVES, "--checkpoint_every", type=int, default=1,
        help="refresh checkpoints/last.pth every N epochs (resume point)")
    add(o, DRIVES, "--eval_every", type=int, default=1, help="test accuracy every N epochs")
    add(o, DEFINES, "--init_checkpoint", default=None,
        help="start f, g from this checkpoint (stage 2 from the baseline; in a "
        "sweep {flag} fields are filled per run, as in --experiment_name): their "
        "weights and, as in the LNL authors' trainer, their optimizer state "
        "(momentum; the saved lr for the first epoch, then the schedule)")
    add(o, DRIVES, "--init_fresh_optimizer", action="store_true",
        help="with --init_checkpoint: take the weights only and start f, g's "
        "optimizer fresh at --lr")
    add(o, DRIVES, "--resume", action="store_true",
        help="continue this experiment from its newest checkpoint (an error if it "
        "has none)")
    add(o, DRIVES, "--resume_if_any", action="store_true",
        help="continue from the newest checkpoint if there is one, else start the "
        "run (what the run scripts use, so a re-run picks up where it stopped)")
    add(o, DRIVES, "--overwrite", action="store_true",
        help="start an existing experiment again: delete the files its earlier "
        "run wrote (checkpoints, logs, metrics, results), nothing else")
    add(o, DRIVES, "--load_checkpoint_path", default=None,
        help="test mode: checkpoint to evaluate (default: the experiment's last.pth)")
    add(o, DRIVES, "--test_output_npy", default=None,
        help="test mode: where to write predictions, a .npy path inside "
        "--output_dir; a bare name lands in outputs/<experiment>/ (default: "
        "outputs/<experiment>/test_predictions.npy)")

    # the flags each method and dataset declares next to its own code
    add_groups(p, "--method", {name: cls.options for name, cls in sorted(METHODS.items())},
               RECIPE)
    add_groups(p, "--dataset_name", {name: spec.options for name, spec in DATASETS.items()},
               DEFINES)
    sweep.make_sweepable(p)
    return p


def config_value(parser, action, key, value, path):
    """A config value through the flag's own type and choices, as if typed on the command
    line (YAML would otherwise let a list, a null or an unknown choice through)."""
    where = f"--config {path}: {key}"
    if value is None or isinstance(value, (list, dict)):
        parser.error(f"{where} must be a single value, not {short(value)}")
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            parser.error(f"{where} is a switch: write true or false, not {short(value)}")
        return value
    if isinstance(value, bool):
        parser.error(f"{where} takes a value, not {short(value)}")
    try:
        value = action.type(str(value)) if action.type else str(value)
    except (TypeError, ValueError):
        parser.error(f"{where}: {short(value)} is not a valid {action.type.__name__}")
    if action.choices is not None and value not in action.choices:
        parser.error(f"{where}: {short(value)} is not one of {', '.join(map(str, action.choices))}")
    return value


CONFIG_MAX_BYTES = 64 * 1024  # a config is a short list of flags; anything larger is refused


def short(value, limit=80):
    """A value as an error message may quote it: one line, at most limit characters."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def read_config(parser, path):
    """A --config file's mapping, read as the small, plain document it should be: at most
    CONFIG_MAX_BYTES of UTF-8, no YAML aliases (a few bytes of them expand to gigabytes)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(CONFIG_MAX_BYTES + 1)
    except OSError as exc:
        parser.error(f"--config {path}: {exc.strerror or exc}")
    if len(raw) > CONFIG_MAX_BYTES:
        parser.error(f"--config {path} is over {CONFIG_MAX_BYTES // 1024} KiB; a config holds "
                     "a few flag values (see configs/)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        parser.error(f"--config {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8")
    try:
        events = list(yaml.parse(text, Loader=yaml.SafeLoader))
        if any(isinstance(e, yaml.AliasEvent) for e in events):
            parser.error(f"--config {path} uses YAML aliases (*name); write each value out")
        top = yaml.compose(text, Loader=yaml.SafeLoader)
        if isinstance(top, yaml.MappingNode):  # safe_load keeps a repeated key's last value
            keys = [k.value for k, _ in top.value if isinstance(k, yaml.ScalarNode)]
            twice = sorted({short(k, 40) for k in keys if keys.count(k) > 1})
            if twice:
                parser.error(f"--config {path} sets {', '.join(twice[:5])} more than once; "
                             "keep one value for each key")
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        parser.error(f"--config {path}: {str(exc).splitlines()[0][:200]}")
    return {} if cfg is None else cfg


def apply_config(parser, argv):
    """Values from --config FILE.yaml become defaults, so command-line flags still win."""
    pre, _ = parser.parse_known_args(argv)
    if not pre.config:
        return
    cfg = read_config(parser, pre.config)
    if not isinstance(cfg, dict):
        parser.error(f"--config {pre.config}: expected a mapping of flag names to values")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    unknown = sorted(short(k, 40) for k in cfg if k not in actions)
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        parser.error(f"--config {pre.config}: unknown keys {', '.join(unknown[:5])}{more}; keys "
                     "are flag names without dashes (see --help)")
    parser.set_defaults(**{k: config_value(parser, actions[k], k, v, pre.config)
                           for k, v in cfg.items()})


# Ranges of the general flags; methods and datasets declare their own (options.Option).
POSITIVE = ("epochs", "save_every", "eval_every", "lr_decay_period", "checkpoint_every",
            "num_main_classes", "num_bias_classes", "hidden_dim", "lr", "lr_decay_rate")
SEED_MAX = 2 ** 32 - 1  # numpy's seeds are 32-bit
NON_NEGATIVE = ("seed", "data_seed", "max_train_samples", "max_test_samples", "momentum",
                "weight_decay", "val_fraction")
TRAIN_ONLY = ("init_checkpoint", "resume", "resume_if_any", "overwrite")
TEST_ONLY = ("load_checkpoint_path", "test_output_npy")


def validate_numbers(parser, args):
    """Every number finite and in its range (a NaN passes `<= 0` checks, so test it first):
    the general flags here, each method's and dataset's flags by their declarations."""
    for key, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            parser.error(f"--{key} must be a finite number; got {value}")
    for name in POSITIVE:
        if hasattr(args, name) and getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive; got {getattr(args, name)}")
    for name in NON_NEGATIVE:
        if hasattr(args, name) and getattr(args, name) < 0:
            parser.error(f"--{name} must not be negative; got {getattr(args, name)}")
    for name in ("seed", "data_seed"):
        if getattr(args, name) > SEED_MAX:
            parser.error(f"--{name} must be at most {SEED_MAX} (a 32-bit seed); got "
                         f"{getattr(args, name)}")
    if args.val_fraction >= 1:
        parser.error(f"--val_fraction must lie in [0, 1); got {args.val_fraction}")
    if args.momentum >= 1:
        parser.error(f"--momentum must lie in [0, 1); got {args.momentum}")
    check_ranges(parser, args, methods.all_options() + dataset_specs.all_options())
    if args.num_workers < -1:
        parser.error(f"--num_workers must be -1 (auto) or at least 0; got {args.num_workers}")


def validate_run(parser, args):
    """Flags that only make sense together, a run name that stays inside --output_dir, and a
    method that can use what the dataset's b holds."""
    wrong = {"train": TEST_ONLY, "test": TRAIN_ONLY,
             "probe": TRAIN_ONLY + ("test_output_npy",)}[args.mode]
    misplaced = [f"--{k}" for k in wrong if getattr(args, k)]
    if misplaced:
        train_only = any(k.lstrip("-") in TRAIN_ONLY for k in misplaced)
        hint = (" (to start training from a checkpoint use --init_checkpoint)"
                if "--load_checkpoint_path" in misplaced else "")
        also = " (or probe)" if misplaced == ["--load_checkpoint_path"] else ""
        parser.error(f"{', '.join(misplaced)} applies to --mode "
                     f"{'train' if train_only else 'test'} only{also}{hint}")
    if args.mode == "probe" and DATASETS[args.dataset_name].b_kind(args) != "bias":
        parser.error(f"--mode probe trains a bias head on the run's bias target, and "
                     f"{args.dataset_name}'s b here is an environment index: there is no bias "
                     "target to probe")
    if args.mode == "probe" and args.h_network_name == "none":
        parser.error("--mode probe trains a fresh head of the run's h architecture: pass "
                     "--h_network_name (e.g. cmnist_h)")
    if args.resume and args.overwrite:
        parser.error("--resume continues a run and --overwrite starts it again: pass one")
    if not DEVICE_PATTERN.match(args.device):
        parser.error(f"--device {args.device} is not a device; use auto, cpu, cuda or cuda:N")
    problem = run_folder.check_experiment_name(args.experiment_name)
    if problem:
        parser.error(f"--experiment_name {args.experiment_name!r} {problem}; give a name (or "
                     "a/b path) that stays inside --output_dir")
    mismatch = missing_fields(DATASETS[args.dataset_name], METHODS[args.method], args)
    if mismatch:
        parser.error(mismatch)
    problem = METHODS[args.method].check_args(args)
    if problem:
        parser.error(problem)


def resolve(parser, args):
    """The values left to the dataset's spec and to the run's name, resolved once into a new
    namespace: the class counts, --bias_split, --experiment_name, --num_workers -1 (auto).
    What a checkpoint decides (resuming, testing) is resolved in lifecycle.resolve_start."""
    if args.dataset_name not in DATASETS:
        parser.error(f"unknown --dataset_name '{args.dataset_name}'; known: {', '.join(DATASETS)}")
    spec = DATASETS[args.dataset_name]
    args = with_values(args, **{key: dataset_specs.resolve(value, args) for key, value in (
        ("num_main_classes", spec.classes), ("num_bias_classes", spec.bias_classes))
        if is_unset(getattr(args, key))})
    if spec.bias_splits and not args.bias_split:
        args = with_values(args, bias_split=spec.bias_splits[0])
    if args.experiment_name is None:
        args = with_values(args, experiment_name=f"{args.method}_{spec.default_run_name(args)}"
                                                 f"_seed{args.seed}")
    if args.num_workers == -1:
        args = with_values(args, num_workers=spec.default_workers())
    if args.hparams_from:
        args = with_selection(parser, args)
    return args


def with_selection(parser, args):
    """The hyperparameters --hparams_from chose, as this run's values (a flag given with
    another value is refused), and the selection kept for the record."""
    path = args.hparams_from
    try:
        selection = read_json(path)
        choice = hparams.read_selection(selection, args.method, path)
    except OSError as exc:
        parser.error(f"--hparams_from {path}: {exc.strerror}")
    except UserError as err:
        parser.error(str(err))
    for flag, value in choice.items():
        given = getattr(args, flag)
        if (given != parser.get_default(flag) or flag in parser.given) \
                and given != value:  # the default passed by hand counts as given
            parser.error(f"--{flag} {given} disagrees with --hparams_from {path}, which chose "
                         f"{value}; pass one of them")
    return with_values(args, **choice, hparam_selection=selection)


def validate(parser, args):
    """Bad values stop here with one line from argparse (exit 2), before anything is written.
    What depends on the dataset (class counts, --bias_split, the run name) comes from its
    spec (dataset_specs.py), resolved before (resolve)."""
    spec = DATASETS[args.dataset_name]
    validate_numbers(parser, args)
    if args.batch_size < 0:
        parser.error(f"--batch_size must be positive (or 0 = full batch); got {args.batch_size}")
    for role in ("f", "g", "h"):
        name = getattr(args, f"{role}_network_name")
        if name not in NETWORKS:
            parser.error(f"unknown --{role}_network_name '{name}'; known: "
                         f"{', '.join(sorted(NETWORKS))}")
    if METHODS[args.method].needs_bias_head and args.h_network_name == "none":
        parser.error(f"--method {args.method} trains a bias head: pass a real "
                     "--h_network_name (e.g. cmnist_h), not 'none'")
    if spec.bias_splits:
        if args.bias_split not in spec.bias_splits:
            parser.error(f"--bias_split {args.bias_split} does not apply to {args.dataset_name}; "
                         f"use one of {', '.join(spec.bias_splits)}")
    elif args.bias_split:
        parser.error("--bias_split applies to "
                     f"{', '.join(n for n, s in DATASETS.items() if s.bias_splits)} only")
    validate_run(parser, args)


RUNS_FROM_MAX = 256  # runs one process may train together


def listed_runs(parser, argv):
    """--runs_from FILE: the argument lists it holds (a handed file, read through the file
    layer: bounded, typed), or None without the flag."""
    pre, rest = parser.parse_known_args(argv)
    if not pre.runs_from:
        return None
    if rest or len([a for a in (argv if argv is not None else sys.argv[1:])
                    if a.startswith("--")]) > 1:
        parser.error("--runs_from takes no other flags: give each run's flags in the file")
    try:
        listed = read_json(pre.runs_from, kind=list)
    except (OSError, UserError) as exc:
        parser.error(f"--runs_from {pre.runs_from}: {getattr(exc, 'strerror', None) or exc}")
    if not 0 < len(listed) <= RUNS_FROM_MAX or not all(
            isinstance(entry, list) and all(isinstance(a, str) for a in entry)
            for entry in listed):
        parser.error(f"--runs_from {pre.runs_from} must list 1 to {RUNS_FROM_MAX} runs, each a "
                     "list of main.py's arguments as strings")
    if any("--runs_from" in entry for entry in listed):
        parser.error(f"--runs_from {pre.runs_from}: a listed run cannot list runs itself")
    return listed


def parse_runs(argv=None):
    """The parser and one namespace per run: the cross product of the sweepable flags'
    values (one run when each has one value), or the runs --runs_from lists, each validated
    before anything is written."""
    parser = build_parser()
    listed = listed_runs(parser, argv)
    if listed is not None:
        runs = [args for entry in listed for args in parse_runs(entry)[1]]
        sweep.check_runs(parser, runs)
        return parser, runs
    apply_config(parser, argv)
    parser.given = {a[2:].split("=")[0] for a in (sys.argv[1:] if argv is None else argv)
                    if a.startswith("--")}
    runs = [resolve(parser, args) for args in sweep.expand(parser, parser.parse_args(argv))]
    for args in runs:
        validate(parser, args)
    check_unused_flags(parser, runs)
    sweep.check_runs(parser, runs)
    return parser, runs


def check_unused_flags(parser, runs):
    """A method's or a dataset's own flag given on the command line for runs none of which
    uses it is refused: it would be ignored without a word (--jtt_up with the baseline,
    --lff_conflict_ratio on LNL's Colored MNIST). A --config preset may hold the flags of
    several methods (configs/spiral.yaml serves AND-mask and GEN-mask)."""
    owners = [(name, cls.options_read(), lambda a, n=name: a.method == n, "--method")
              for name, cls in METHODS.items()]
    owners += [(name, spec.options, lambda a, n=name: a.dataset_name == n, "--dataset_name")
               for name, spec in DATASETS.items()]
    used, holders = set(), {}
    for name, options, runs_it, flag in owners:
        for option in options:
            holders.setdefault(option.name, []).append(f"{flag} {name}")
            if any(runs_it(a) for a in runs):
                used.add(option.name)
    for option in methods.all_options() + dataset_specs.all_options():
        if option.name not in used and (option.name in parser.given or any(
                getattr(a, option.name) != parser.get_default(option.name) for a in runs)):
            parser.error(f"--{option.name} applies to {' or '.join(holders[option.name])} only "
                         f"and this run uses --method {runs[0].method} on "
                         f"{runs[0].dataset_name}: drop it (or pass the method or dataset it "
                         "belongs to)")


def parse_args(argv=None):
    """One run's parser and arguments (several values for a flag: a one-line error)."""
    parser, runs = parse_runs(argv)
    if len(runs) > 1:
        parser.error(f"{len(runs)} runs asked for (a sweep); this entry point takes one")
    return parser, runs[0]


def check_distributed(parser, args, world):
    """What torchrun can run: methods whose steps are plain backward passes."""
    if world == 1:
        if args.sync_bn:
            parser.error("--sync_bn only applies under torchrun with several processes")
        return
    if not METHODS[args.method].supports_ddp:
        parser.error(f"--method {args.method} combines per-environment gradients or penalties "
                     "that a data-parallel shard cannot compute; run it in one process "
                     "(python main.py ...)")
    if args.batch_size % world:
        parser.error(f"--batch_size {args.batch_size} (the global batch) must divide evenly "
                     f"over {world} processes")
    if args.sync_bn and args.device == "cpu":
        parser.error("--sync_bn needs GPUs (SyncBatchNorm has no CPU kernel); drop it on CPU")
