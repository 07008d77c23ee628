"""Command line of learning-not-to-learn: builds f, g, h and the loaders, hands them to the Solver.

    python main.py --method baseline --experiment_name cmnist_base --lr 0.01
    python main.py --method lnl --init_checkpoint outputs/cmnist_base/checkpoints/last.pth ...
    python main.py --mode test --experiment_name cmnist_lnl

main(): parse and validate (arguments.py) -> check the run and its start (lifecycle) -> build
the data and the networks -> the Solver trains, tests or probes. Nothing is written before
every check has passed.
"""
import os
import sys

# Full-batch steps (IRM's Colored MNIST: 50,000 x 390 activations) allocate tensors above
# glibc's 32 MiB mmap limit, so every step faults each of their pages in afresh; transparent huge
# pages for PyTorch's CPU allocations of 2 MiB or more cut that (IRM's step on 2 cores: 1.4 ->
# 1.1 s, metrics bit-identical; a Colored-MNIST step: no change). torch reads it once, at its
# first allocation, hence before the import; THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import lifecycle  # noqa: E402
import records  # noqa: E402
import run_folder  # noqa: E402
import sweep  # noqa: E402
# build_parser and parse_args: the command line's public entry points, also as main.*
from arguments import build_parser, check_distributed, parse_args, parse_runs  # noqa: E402,F401
from data_handler import make_loader, split_validation  # noqa: E402
from dataset_specs import DATASETS, build_datasets  # noqa: E402
from methods import METHODS  # noqa: E402
from run_folder import experiment_dir  # noqa: E402
from runtime import Runtime, init_distributed  # noqa: E402
from solver import Solver  # noqa: E402
from utils import (ArgError, DiskFull, RunStopped, UserError, dist_world, log,  # noqa: E402
                   set_deterministic, set_seed)


def check_classes(args, train_set):
    """g's output must cover the dataset's labels (one logit = a binary task)."""
    top = int(train_set.labels.max()) if len(train_set) else 0
    if args.num_main_classes > 1 and top >= args.num_main_classes:
        raise UserError(f"{args.dataset_name} has labels up to {top} but --num_main_classes is "
                        f"{args.num_main_classes}; pass --num_main_classes {top + 1}, or leave "
                        "the flag out: the dataset's spec (dataset_specs.py) sets it.")


def build_nets(args, input_shape):
    """The method's networks (Method.build_networks), sized by the dataset's inputs."""
    kw = {"num_main_classes": args.num_main_classes, "num_bias_classes": args.num_bias_classes,
          "in_features": int(np.prod(input_shape)), "in_channels": input_shape[0],
          "hidden_dim": args.hidden_dim, "resnet_split": args.resnet_split,
          "pretrained": args.pretrained}
    return METHODS[args.method].build_networks(args, kw)


def check_networks(args, nets, dataset):
    """One forward pass on two training examples through the method (Method.check_forward): a
    network that cannot read the dataset's inputs fails here with one line, not in a
    convolution mid-run."""
    x = dataset.__getitems__(list(range(min(2, len(dataset)))))["x"]
    try:
        with torch.no_grad():
            nets.eval()
            METHODS[args.method](nets, args).check_forward(x)
    except RuntimeError as exc:
        raise ArgError(f"the networks (--f_network_name {args.f_network_name}, "
                       f"--g_network_name {args.g_network_name}) cannot read "
                       f"{args.dataset_name}'s inputs of shape {tuple(x.shape[1:])} "
                       f"({str(exc).splitlines()[0]}); use the dataset's preset in configs/.")
    finally:
        nets.train()


def main(argv=None):
    parser, runs = parse_runs(argv)
    args = runs[0]
    try:
        return run(parser, args) if len(runs) == 1 else run_sweep(parser, runs)
    except UserError as err:
        fail(err, args)
    except RunStopped as stop:
        print(stop, file=sys.stderr)
        sys.exit(stop.code)
    except KeyboardInterrupt:
        fail("interrupted (Ctrl-C); every file written so far is complete, nothing was lost. "
             "Run the same command again.", args, code=130)
    except OSError as exc:  # a read-only or vanished folder met while writing
        fail(f"cannot write {exc.filename or 'a file'}: {exc.strerror}; check the folder's "
             "permissions and space, then run the same command again"
             f"{' plus --resume' if args.mode == 'train' else ''}.", args)
    finally:
        log.close()
        for each in runs:
            run_folder.unlock(experiment_dir(each))
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def fail(err, args, code=None):
    """One line on stderr (from one process under torchrun), then exit."""
    message = str(err)
    if isinstance(err, DiskFull):
        resumable = args.mode == "train" and os.path.exists(
            os.path.join(run_folder.checkpoint_dir(args), "last.pth"))
        message += (" Free some space, then continue with the same command plus --resume."
                    if resumable else " Free some space, then run the same command again"
                    + (" (no checkpoint was saved yet)." if args.mode == "train" else "."))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"error: {message}", file=sys.stderr)
    sys.exit(code or (2 if isinstance(err, ArgError) else 1))


def run(parser, args):
    """Check everything that can be checked, then build data, networks and loaders, write the
    run folder and hand over to the Solver."""
    runtime, start = check_run(parser, args)
    sets, nets = build_run(start.args)
    if start.kind == "probe":
        return lifecycle.probe(start, runtime, nets, *make_loaders(start.args, runtime, sets))
    solver = make_solver(start, runtime, sets, nets)
    return (lifecycle.train(solver, start) if start.kind != "test"
            else lifecycle.test(solver, start))


def check_run(parser, args):
    """What can be checked without writing: the processes, the device, the run folder and the
    checkpoint this run starts from. Returns (runtime, lifecycle.Start)."""
    local_rank = init_distributed(args.device)
    check_distributed(parser, args, dist_world())
    runtime = Runtime(args, local_rank)
    if args.deterministic:
        set_deterministic()
    return runtime, lifecycle.resolve_start(parser, args, hold=runtime.is_main)


def build_run(args):
    """The datasets and the networks (seeded by --seed), still without writing anything."""
    set_seed(args.seed)
    sets = build_datasets(args)
    if args.val_fraction:  # held out of training, evaluated each epoch as "val"
        sets["train"], sets["val"] = split_validation(sets["train"], args.val_fraction,
                                                      args.data_seed)
    check_classes(args, sets["train"])
    nets = build_nets(args, sets["train"].input_shape)
    check_networks(args, nets, sets["train"])
    if args.sync_bn:
        nets = nn.SyncBatchNorm.convert_sync_batchnorm(nets)
    return sets, nets


def make_loaders(args, runtime, sets):
    """(training loader, test loader, {name: other evaluation loader}) by the spec's rules."""
    spec = DATASETS[args.dataset_name]
    sets = dict(sets)
    train_loader = make_loader(sets.pop("train"), args.batch_size, True, args.seed,
                               args.num_workers, runtime.device,
                               balanced_envs=spec.balanced_envs, rank=runtime.rank,
                               world=runtime.world,
                               drop_last=spec.file_backed or METHODS[args.method].drop_last)
    eval_loaders = {name: runtime.loader(make_loader(ds, spec.eval_batch, False, args.seed,
                                                     args.num_workers, runtime.device))
                    for name, ds in sets.items()}
    return runtime.loader(train_loader), eval_loaders.pop("test"), eval_loaders


def make_solver(start, runtime, sets, nets):
    """The loaders and the Solver, still without writing anything (lifecycle.train and test
    open the run folder)."""
    train_loader, test_loader, extra = make_loaders(start.args, runtime, sets)
    return Solver(start.args, nets, train_loader, test_loader, runtime, extra_loaders=extra,
                  data_sha256=records.data_digest(sets))


def run_sweep(parser, runs):
    """Several runs trained together (sweep.py): every run checked, then every run's data and
    networks built, and only then any folder written; then one step of each run in turn.
    Exits 0 when every run finished, else with the code sweep.train_together gives."""
    members = [sweep.Member(args) for args in runs]
    checked, built = [], []
    for member in members:
        with member.turn():  # its log lines, kept until its run.log opens
            checked.append(check_run(parser, member.args))
    for member, (_, start) in zip(members, checked):
        with member.turn():  # its seed
            built.append(build_run(start.args))
    for member, (runtime, start), parts in zip(members, checked, built):
        if runtime.device.type == "cuda":
            member.stream = torch.cuda.Stream(runtime.device)
        with member.turn():
            solver = make_solver(start, runtime, *parts)
            member.start(solver, lifecycle.training_steps(solver, start))
    code = sweep.train_together(members)
    if code:
        sys.exit(code)
    return {member.name: member.test_acc for member in members}


if __name__ == "__main__":
    main()
