"""Command line of learning-not-to-learn: builds f, g, h and the loaders, hands them to the Solver.

    python main.py --method baseline --experiment_name cmnist_base --lr 0.01
    python main.py --method lnl --init_checkpoint outputs/cmnist_base/checkpoints/last.pth ...
    python main.py --mode test --experiment_name cmnist_lnl
"""
import argparse
import os
import shutil
import sys

import numpy as np
import torch
import yaml
from torch import nn

from data_handler import (BALANCED_ENV_DATASETS, BIAS_SPLITS, DATASETS,
                          IMAGE_FILE_DATASETS, build_datasets, default_workers, make_loader)
from methods import METHODS
from network import NETWORKS, build_network
from solver import Solver, checkpoint_dir, experiment_dir
from utils import (RunStopped, UserError, atomic_json_dump, dist_rank, dist_world,
                   init_distributed, resolve_device, set_deterministic, set_seed)


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
    d.add_argument("--max_train_samples", type=int, default=0,
                   help="use the first N (0 = all; a seeded random N of image files)")
    d.add_argument("--max_test_samples", type=int, default=0,
                   help="use the first N of each evaluation set (0 = all; as above)")
    d.add_argument("--num_workers", type=int, default=-1,
                   help="DataLoader worker processes; -1 = none for in-memory datasets, "
                        "min(8, CPUs) for image files (decoding off the main process)")
    d.add_argument("--grayscale", action="store_true",
                   help="train and test on grayscale images (the 'Gray' oracle)")
    d.add_argument("--env_from_bias", action="store_true",
                   help="ColoredMNIST: b = the image's colour index, so environment methods "
                        "(irm, andmask, genmask) group each batch by colour")
    d.add_argument("--random_labels_fraction", type=float, default=0.0,
                   help="CIFAR10RandomLabels: fraction of training labels randomized")
    d.add_argument("--bias_split", default=None,
                   help="DogsCats: TB1 (dark cats + bright dogs, the default) or TB2; IMDBFace: "
                        "EB1 (women 0-29 + men 40+, the default) or EB2 (women 40+ + men 0-29)")
    d.add_argument("--imdb_task", choices=("gender", "age"), default="gender",
                   help="IMDBFace: predict gender (bias: age class) or the age class "
                        "(bias: gender)")
    d.add_argument("--holdout_fraction", type=float, default=0.1,
                   help="DogsCats: share of each training cell held out for the unbiased "
                        "'mixed' evaluation set")
    d.add_argument("--dogs_cats_lists", default=None,
                   help="DogsCats: folder with list_bright.txt and list_dark.txt (default: "
                        "<data_root_base>/dogs_vs_cats/lists)")
    d.add_argument("--image_size", type=int, default=224, help="real-image benchmarks: side")
    d.add_argument("--skip_bad_images", action="store_true",
                   help="decode every image first; skip (and log) unreadable ones instead of "
                        "stopping")
    d.add_argument("--n_envs", type=int, default=16, help="SpiralSignatures: training envs")
    d.add_argument("--examples_per_env", type=int, default=1024, help="SpiralSignatures")
    d.add_argument("--spiral_dims", type=int, default=16,
                   help="SpiralSignatures: dimensions of the per-env signature")
    d.add_argument("--spiral_revolutions", type=int, default=3, help="SpiralSignatures")
    d.add_argument("--spiral_test_examples", type=int, default=2000, help="SpiralSignatures")

    n = p.add_argument_group("networks")
    n.add_argument("--f_network_name", default="cmnist_f", help=f"one of {', '.join(NETWORKS)}")
    n.add_argument("--g_network_name", default="cmnist_g")
    n.add_argument("--h_network_name", default="cmnist_h")
    n.add_argument("--num_main_classes", type=int, default=10)
    n.add_argument("--num_bias_classes", type=int, default=8,
                   help="bins per colour channel of h's target")
    n.add_argument("--hidden_dim", type=int, default=390,
                   help="width of the MLP networks (irm_mlp_*, spiral_mlp_*)")
    n.add_argument("--resnet_split", type=int, choices=(1, 2, 3, 4), default=3,
                   help="resnet18_*: the last ResNet-18 stage in f (g runs the rest)")
    n.add_argument("--pretrained", action="store_true",
                   help="resnet18_*: start from torchvision's ImageNet weights")

    t = p.add_argument_group("training (reference recipe)")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--batch_size", type=int, default=128,
                   help="0 = full batch; per environment on SpiralSignatures")
    t.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    t.add_argument("--lr", type=float, default=0.001,
                   help="0.01 for the baseline stage, 0.001 for the LNL stage")
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight_decay", type=float, default=5e-4)
    t.add_argument("--lr_decay_period", type=int, default=40, help="epochs between lr decays")
    t.add_argument("--lr_decay_rate", type=float, default=0.1)
    t.add_argument("--lambda_entropy", type=float, default=0.01,
                   help="weight of h's negative entropy in f, g's loss")
    t.add_argument("--mu_grl", type=float, default=0.1, help="gradient reversal scale")
    t.add_argument("--blindeye_alpha", type=float, default=1.0,
                   help="BlindEye: weight of the confusion loss in f, g's loss")
    t.add_argument("--irm_penalty_weight", type=float, default=91257.18613115903,
                   help="IRM: penalty weight after annealing (0 = the ERM run)")
    t.add_argument("--irm_anneal_iters", type=int, default=190,
                   help="IRM: steps with penalty weight 1 before --irm_penalty_weight")
    t.add_argument("--irm_l2", type=float, default=0.00110794568,
                   help="IRM: weight of sum ||w||^2 in the loss")
    t.add_argument("--andmask_variant", choices=("and", "geom"), default="and",
                   help="AND-mask: arithmetic mean ('and') or geometric mean ('geom')")
    t.add_argument("--andmask_tau", type=float, default=1.0,
                   help="AND-mask: sign-agreement threshold in [0, 1] (0 = plain averaging)")
    t.add_argument("--andmask_rescale", type=int, choices=(0, 1), default=0,
                   help="AND-mask: divide by the fraction of entries kept")
    t.add_argument("--genmask_steps", type=int, default=10,
                   help="GEN-mask: projected-ascent steps for the environment weights")
    t.add_argument("--genmask_lr", type=float, default=0.1, help="GEN-mask: ascent step size")
    t.add_argument("--seed", type=int, default=0, help="training seed (init, shuffle)")
    t.add_argument("--device", default="auto",
                   help="auto, cpu or cuda[:N] (under torchrun: each process its local GPU)")
    t.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels only: bit-identical runs for the same seed")
    t.add_argument("--fast", choices=("auto", "off"), default="auto",
                   help="auto: in-memory datasets live on the device and are batched there, "
                        "and on CUDA a graph-safe method's training step (baseline, lnl, "
                        "blindeye; SGD; one process) is recorded once as a CUDA graph and "
                        "replayed; off: DataLoader batches and eager steps (the plain path)")
    t.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: bfloat16 autocast for training and evaluation, and "
                        "channels_last weights (a GPU speed option; fp32 is the reference)")
    t.add_argument("--skip_nonfinite", action="store_true",
                   help="skip (and count) steps with a non-finite loss instead of stopping")
    t.add_argument("--sync_bn", action="store_true",
                   help="torchrun on GPUs: synchronise BatchNorm statistics across processes")

    o = p.add_argument_group("outputs and checkpoints")
    o.add_argument("--experiment_name", default=None,
                   help="folder under --output_dir (default: "
                        "<method>_<var<color_var> or dataset>_seed<seed>)")
    o.add_argument("--output_dir", default="./outputs")
    o.add_argument("--save_every", type=int, default=10, help="keep a checkpoint every N epochs")
    o.add_argument("--checkpoint_every", type=int, default=1,
                   help="refresh checkpoints/last.pth every N epochs (resume point)")
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
    for name in ("epochs", "save_every", "eval_every", "lr_decay_period", "checkpoint_every"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive; got {getattr(args, name)}")
    if args.batch_size < 0:
        parser.error(f"--batch_size must be positive (or 0 = full batch); got {args.batch_size}")
    if not 0.0 <= args.random_labels_fraction <= 1.0:
        parser.error(f"--random_labels_fraction must lie in [0, 1]; got "
                     f"{args.random_labels_fraction}")
    if not 0.0 <= args.holdout_fraction < 1.0:
        parser.error(f"--holdout_fraction must lie in [0, 1); got {args.holdout_fraction}")
    if args.image_size < 32:
        parser.error(f"--image_size must be at least 32; got {args.image_size}")
    if not 0.0 <= args.andmask_tau <= 1.0:
        parser.error(f"--andmask_tau must lie in [0, 1]; got {args.andmask_tau}")
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
    if METHODS[args.method].needs_bias_head and args.h_network_name == "none":
        parser.error(f"--method {args.method} trains a bias head: pass a real "
                     "--h_network_name (e.g. cmnist_h), not 'none'")
    splits = BIAS_SPLITS.get(args.dataset_name)
    if splits:
        args.bias_split = args.bias_split or splits[0]
        if args.bias_split not in splits:
            parser.error(f"--bias_split {args.bias_split} does not apply to {args.dataset_name}; "
                         f"use one of {', '.join(splits)}")
    elif args.bias_split:
        parser.error(f"--bias_split applies to {', '.join(BIAS_SPLITS)} only")
    if args.experiment_name is None:
        bias = {"ColoredMNIST": f"var{args.color_var:.3f}",
                "DogsCats": f"DogsCats_{args.bias_split}",
                "IMDBFace": f"IMDBFace_{args.bias_split}_{args.imdb_task}"
                }.get(args.dataset_name, args.dataset_name)
        args.experiment_name = f"{args.method}_{bias}_seed{args.seed}"


def parse_args(argv=None):
    parser = build_parser()
    apply_config(parser, argv)
    args = parser.parse_args(argv)
    validate(parser, args)
    return parser, args


def check_classes(args, train_set):
    """g's output must cover the dataset's labels (one logit = a binary task)."""
    top = int(train_set.labels.max()) if len(train_set) else 0
    if args.num_main_classes > 1 and top >= args.num_main_classes:
        raise UserError(f"{args.dataset_name} has labels up to {top} but --num_main_classes is "
                        f"{args.num_main_classes}; pass --num_main_classes {top + 1} (the "
                        "configs/ presets set it).")


def build_nets(args, input_shape):
    kw = {"num_main_classes": args.num_main_classes, "num_bias_classes": args.num_bias_classes,
          "in_features": int(np.prod(input_shape)), "in_channels": input_shape[0],
          "hidden_dim": args.hidden_dim, "resnet_split": args.resnet_split,
          "pretrained": args.pretrained}
    return nn.ModuleDict({role: build_network(getattr(args, f"{role}_network_name"), **kw)
                          for role in ("f", "g", "h")})


def check_experiment(parser, args):
    """Before anything is written: never overwrite a run silently, and the output folder must
    be writable."""
    out, ckpts = experiment_dir(args), checkpoint_dir(args)
    if (args.mode == "train" and os.path.isdir(ckpts) and os.listdir(ckpts)
            and not (args.resume or args.overwrite)):
        parser.error(f"experiment '{args.experiment_name}' already has checkpoints in {ckpts}; "
                     "pass --resume to continue it, --overwrite to start again, or another "
                     "--experiment_name")
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"cannot write under {existing} (for {out}); pick a writable --output_dir")


def write_experiment(args, device):
    """--overwrite clears the old run; args.json (or test_args.json) goes next to the results,
    with device_used beside the requested --device (which may say 'auto')."""
    out = experiment_dir(args)
    training = args.mode == "train"
    os.makedirs(out, exist_ok=True)
    if training and args.overwrite:
        for sub in ("checkpoints", "logs"):
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
        for name in ("metrics.jsonl", "results.json"):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    atomic_json_dump({**vars(args), "device_used": str(device)},
                     os.path.join(out, "args.json" if training else "test_args.json"))


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


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        local_rank = init_distributed(args.device)
        world, rank = dist_world(), dist_rank()
        check_distributed(parser, args, world)
        device = resolve_device(args.device, local_rank)
        if args.deterministic:
            set_deterministic()
        set_seed(args.seed)
        check_experiment(parser, args)
        if args.num_workers < 0:
            args.num_workers = default_workers(args.dataset_name)
        sets = build_datasets(args)
        check_classes(args, sets["train"])
        nets = build_nets(args, sets["train"].input_shape)
        if args.sync_bn:
            nets = nn.SyncBatchNorm.convert_sync_batchnorm(nets)
        if rank == 0:
            write_experiment(args, device)
        train_loader = make_loader(sets.pop("train"), args.batch_size, True, args.seed,
                                   args.num_workers, device,
                                   balanced_envs=args.dataset_name in BALANCED_ENV_DATASETS,
                                   rank=rank, world=world,
                                   drop_last=args.dataset_name in IMAGE_FILE_DATASETS,
                                   resident=args.fast == "auto")
        eval_batch = 256 if args.dataset_name in IMAGE_FILE_DATASETS else 1000
        eval_loaders = {name: make_loader(ds, eval_batch, False, args.seed, args.num_workers,
                                          device, resident=args.fast == "auto")
                        for name, ds in sets.items()}
        solver = Solver(args, nets, train_loader, eval_loaders.pop("test"), device,
                        extra_loaders=eval_loaders)
        return solver.train() if args.mode == "train" else solver.test()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except RunStopped as stop:
        print(stop, file=sys.stderr)
        sys.exit(stop.code)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
