"""Command line of learning-not-to-learn: builds f, g, h and the loaders, hands them to the Solver.

    python main.py --method baseline --experiment_name cmnist_base --lr 0.01
    python main.py --method lnl --init_checkpoint outputs/cmnist_base/checkpoints/last.pth ...
    python main.py --mode test --experiment_name cmnist_lnl
"""
import argparse
import os
import shutil
import sys

import yaml
from torch import nn

from data_handler import DATASETS, build_datasets, make_loader
from methods import METHODS
from network import NETWORKS, build_network
from solver import Solver, checkpoint_dir, experiment_dir
from utils import UserError, atomic_json_dump, resolve_device, set_seed


def build_parser():
    p = argparse.ArgumentParser(description="Train and test networks on biased data "
                                "(Learning Not to Learn, Kim et al., CVPR 2019).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=None,
                   help="YAML file whose keys (flag names) become defaults; flags win")
    p.add_argument("--mode", choices=("train", "test"), default="train")
    p.add_argument("--method", choices=sorted(METHODS), default="lnl",
                   help="training method (registry in methods.py)")

    d = p.add_argument_group("data")
    d.add_argument("--dataset_name", default="ColoredMNIST", help=f"one of {', '.join(DATASETS)}")
    d.add_argument("--data_root_base", default="./data")
    d.add_argument("--cmnist_source", choices=("ours", "official"), default="ours",
                   help="build Colored MNIST here, or read the authors' released .npy")
    d.add_argument("--color_var", type=float, default=0.020,
                   help="sigma^2 of the colour jitter; smaller = stronger bias")
    d.add_argument("--data_seed", type=int, default=0,
                   help="seed of the dataset construction (same data for every --seed)")
    d.add_argument("--max_train_samples", type=int, default=0, help="use the first N (0 = all)")
    d.add_argument("--max_test_samples", type=int, default=0, help="use the first N (0 = all)")
    d.add_argument("--num_workers", type=int, default=0,
                   help="DataLoader worker processes (in-memory datasets need none)")

    n = p.add_argument_group("networks")
    n.add_argument("--f_network_name", default="cmnist_f", help=f"one of {', '.join(NETWORKS)}")
    n.add_argument("--g_network_name", default="cmnist_g")
    n.add_argument("--h_network_name", default="cmnist_h")
    n.add_argument("--num_main_classes", type=int, default=10)
    n.add_argument("--num_bias_classes", type=int, default=8,
                   help="bins per colour channel of h's target")

    t = p.add_argument_group("training (reference recipe)")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--batch_size", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.001,
                   help="0.01 for the baseline stage, 0.001 for the LNL stage")
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight_decay", type=float, default=5e-4)
    t.add_argument("--lr_decay_period", type=int, default=40, help="epochs between lr decays")
    t.add_argument("--lr_decay_rate", type=float, default=0.1)
    t.add_argument("--lambda_entropy", type=float, default=0.01,
                   help="weight of h's negative entropy in f, g's loss")
    t.add_argument("--mu_grl", type=float, default=0.1, help="gradient reversal scale")
    t.add_argument("--seed", type=int, default=0, help="training seed (init, shuffle)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")

    o = p.add_argument_group("outputs and checkpoints")
    o.add_argument("--experiment_name", default=None,
                   help="folder under --output_dir (default: <method>_var<color_var>_seed<seed>)")
    o.add_argument("--output_dir", default="./outputs")
    o.add_argument("--save_every", type=int, default=10, help="keep a checkpoint every N epochs")
    o.add_argument("--eval_every", type=int, default=1, help="test accuracy every N epochs")
    o.add_argument("--init_checkpoint", default=None,
                   help="start f, g from this checkpoint (stage 2 from the baseline)")
    o.add_argument("--resume", action="store_true",
                   help="continue this experiment from its newest checkpoint")
    o.add_argument("--overwrite", action="store_true",
                   help="delete an existing experiment's checkpoints and logs first")
    o.add_argument("--load_checkpoint_path", default=None,
                   help="test mode: checkpoint to evaluate (default: the experiment's last.pth)")
    o.add_argument("--test_output_npy", default=None,
                   help="test mode: where to write predictions (default: "
                        "outputs/<experiment>/test_predictions.npy)")
    return p


def apply_config(parser, argv):
    """Values from --config FILE.yaml become defaults, so command-line flags still win."""
    pre, _ = parser.parse_known_args(argv)
    if not pre.config:
        return
    try:
        with open(pre.config) as fh:
            cfg = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        parser.error(f"--config {pre.config}: {exc}")
    if not isinstance(cfg, dict):
        parser.error(f"--config {pre.config}: expected a mapping of flag names to values")
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(cfg) - known)
    if unknown:
        parser.error(f"--config {pre.config}: unknown keys {unknown}; keys are flag names "
                     "without dashes (see --help)")
    parser.set_defaults(**cfg)


def validate(parser, args):
    """Bad values stop here with one line from argparse (exit 2), before anything is written."""
    for name in ("epochs", "batch_size", "save_every", "eval_every", "lr_decay_period"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive; got {getattr(args, name)}")
    if args.lr <= 0:
        parser.error(f"--lr must be positive; got {args.lr}")
    if not 0.0 < args.color_var < 1.0:
        parser.error(f"--color_var (sigma^2) must lie in (0, 1); got {args.color_var}")
    if args.dataset_name not in DATASETS:
        parser.error(f"unknown --dataset_name '{args.dataset_name}'; known: {', '.join(DATASETS)}")
    for role in ("f", "g", "h"):
        name = getattr(args, f"{role}_network_name")
        if name not in NETWORKS:
            parser.error(f"unknown --{role}_network_name '{name}'; known: "
                         f"{', '.join(sorted(NETWORKS))}")
    if args.experiment_name is None:
        args.experiment_name = f"{args.method}_var{args.color_var:.3f}_seed{args.seed}"


def parse_args(argv=None):
    parser = build_parser()
    apply_config(parser, argv)
    args = parser.parse_args(argv)
    validate(parser, args)
    return parser, args


def build_nets(args):
    kw = {"num_main_classes": args.num_main_classes, "num_bias_classes": args.num_bias_classes}
    return nn.ModuleDict({role: build_network(getattr(args, f"{role}_network_name"), **kw)
                          for role in ("f", "g", "h")})


def prepare_experiment(parser, args):
    """Refuse to overwrite a run silently; write args.json next to the results."""
    out = experiment_dir(args)
    ckpts = checkpoint_dir(args)
    training = args.mode == "train"
    if (training and os.path.isdir(ckpts) and os.listdir(ckpts)
            and not (args.resume or args.overwrite)):
        parser.error(f"experiment '{args.experiment_name}' already has checkpoints in {ckpts}; "
                     "pass --resume to continue it, --overwrite to start again, or another "
                     "--experiment_name")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        parser.error(f"cannot create {out} ({exc.strerror}); pick a writable --output_dir")
    if not os.access(out, os.W_OK):
        parser.error(f"{out} is not writable; pick a writable --output_dir")
    if training and args.overwrite:
        for sub in ("checkpoints", "logs"):
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
        for name in ("metrics.jsonl", "results.json"):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    atomic_json_dump(vars(args), os.path.join(out, "args.json" if training else "test_args.json"))


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        set_seed(args.seed)
        train_set, test_set = build_datasets(args)
        nets = build_nets(args)
        prepare_experiment(parser, args)
        train_loader = make_loader(train_set, args.batch_size, True, args.seed,
                                   args.num_workers, device)
        test_loader = make_loader(test_set, 1000, False, args.seed, args.num_workers, device)
        solver = Solver(args, nets, train_loader, test_loader, device)
        return solver.train() if args.mode == "train" else solver.test()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
