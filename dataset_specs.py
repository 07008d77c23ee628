"""One spec per dataset (--dataset_name): how it is built, its classes, what its b is, how it is
loaded, its default run name and its own flags. main.py reads these facts from here and
nowhere else; adding a dataset is a builder function and one DatasetSpec entry below (see
docs/architecture.md, "Adding a dataset").

A batch's fields are named (data_handler.FIELDS). Every dataset's batches carry x, y and
index; its b, the per-example target the methods learn from, is one of two kinds (B_KINDS),
carried as the field of that name:
  "bias"         h's target: colour bins per pixel on Colored MNIST (LNL, Kim et al. 2019,
                 §4.1), an image-level attribute on Dogs and Cats and IMDB-Face (§4.2-4.3);
  "env"          one environment index per example (IRM, Arjovsky et al. 2019; AND-mask,
                 Parascandolo et al. 2021; docs/references.md §2-3);
and a dataset with a bias attribute (bias_attribute) carries it as bias_label. Each method
declares the fields it reads (Method.reads); missing_fields names what a method would read
that the dataset lacks, before anything runs.
"""
import os
from dataclasses import dataclass, field
from typing import Callable

import metrics
from andmask_datasets import MISLABELED, cifar_random_labels_datasets, spiral_datasets
from data_handler import FIELDS
from colored_mnist import PALETTES, colored_mnist_datasets, irm_cmnist_datasets
from image_datasets import (AGE_EDGES, IMDB_TASKS, MIXED, OPPOSITE, dogs_cats_datasets,
                            imdb_face_datasets)
from lff_cmnist import LFF_PALETTE, SEVERITY_STD, lff_cmnist_datasets
from options import DRIVES, Option, share
from utils import UserError

B_KINDS = ("bias", "env")


def resolve(value, args):
    """A spec field: a constant, or a function of the parsed arguments."""
    return value(args) if callable(value) else value


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    build: Callable           # args -> {"train": ..., "test": ..., other evaluation sets}
    b: object                 # "bias" or "env" (or args -> one of them): its b's field
    classes: object           # --num_main_classes unless given: g's outputs (1 = one logit)
    bias_classes: object = 8  # --num_bias_classes unless given: h's classes per head
    options: tuple = ()       # its own flags (options.Option), shown as its --help group
    b_flags: dict = field(default_factory=dict)  # field -> the flag that makes b that field
    bias_splits: tuple = ()   # values of --bias_split; the first is the default
    run_name: Callable = None  # args -> the middle of the default --experiment_name
    balanced_envs: bool = False  # training batches hold --batch_size of every environment
    file_backed: bool = False  # decoded from image files per batch (else resident in memory):
    #                            worker processes, a dropped last partial batch, eval batch 256
    bias_attribute: bool = True  # its bias_index names a bias attribute (a colour, an age
    #                              class), whose agreement with the label splits the test set
    #                              into aligned and conflicting examples; False: an environment
    title: str = None         # its name in tables (scripts/results.py); None: its name
    report: tuple = (metrics.FINAL,)  # the metrics its table shows, in order
    pivot: str = None         # the flag its table spreads into columns (sigma^2, the split)
    describe: Callable = None  # args -> a few words for figure titles ("σ²=0.020")
    bias_colours: Callable = None  # args -> RGB per bias class (confusion-matrix rows)
    variants: tuple = ()      # (key, label, test(config)): a setting of its flags the papers
    #                           name as a method of its own (the grayscale oracle)
    names: dict = field(default_factory=dict)  # method -> its name on this benchmark's
    #                           papers, where that is not the method's label (records.labels)

    @property
    def eval_batch(self):
        return 256 if self.file_backed else 1000

    def b_kind(self, args):
        kind = resolve(self.b, args)
        assert kind in B_KINDS, f"{self.name}: b must be one of {B_KINDS}, not {kind!r}"
        return kind

    def default_workers(self):
        """--num_workers -1: in-memory datasets need no workers; image files get up to 8."""
        return min(8, os.cpu_count() or 1) if self.file_backed else 0

    def default_run_name(self, args):
        return self.run_name(args) if self.run_name else self.name

    def words(self, args):
        """What figure titles say about the data (e.g. Colored MNIST's sigma^2), or ''."""
        return self.describe(args) if self.describe else ""


DATASETS = {}


def register_dataset(spec):
    DATASETS[spec.name] = spec
    return spec


def build_datasets(args):
    """{"train": ..., "test": ..., and any extra named evaluation sets} for --dataset_name,
    their batches' b carried under the field the spec declares (bias or env)."""
    if args.dataset_name not in DATASETS:
        raise UserError(f"unknown dataset '{args.dataset_name}'; known: {', '.join(DATASETS)}.")
    spec = DATASETS[args.dataset_name]
    sets = spec.build(args)
    for ds in sets.values():
        ds.b = spec.b_kind(args)
    return sets


def batch_fields(spec, args):
    """The fields the dataset's batches carry under these arguments (data_handler.FIELDS)."""
    return ("x", "y", spec.b_kind(args)) + (("bias_label",) if spec.bias_attribute else ()) + (
        "index",)


def missing_fields(spec, method, args):
    """One line when the method reads a field the dataset's batches lack, else None."""
    fields = batch_fields(spec, args)
    missing = [f for f in method.reads if f not in fields]
    if not missing:
        return None
    hint = next((f" (on {spec.name} pass {spec.b_flags[f]}, or use a preset: configs/)"
                 for f in missing if f in spec.b_flags),
                "; see configs/ for each benchmark's preset")
    what = "; ".join(f"'{f}' ({FIELDS[f]})" for f in missing)
    return (f"--method {args.method} reads the batch field {what}, which {spec.name}'s batches "
            f"do not carry (they carry {', '.join(fields)}){hint}")


def all_options():
    """Every registered dataset's declared flags, each once."""
    return list(dict.fromkeys(o for spec in DATASETS.values() for o in spec.options))


# --------------------------------------------------------------------------- the datasets
register_dataset(DatasetSpec(
    "ColoredMNIST", colored_mnist_datasets,
    b=lambda args: "env" if args.env_from_bias else "bias",
    b_flags={"env": "--env_from_bias"},
    classes=10, bias_classes=8,  # digits; 8 bins per colour channel of h's per-pixel target
    run_name=lambda args: f"var{args.color_var:.3f}",
    title="Colored MNIST (test accuracy)", pivot="color_var",
    describe=lambda args: f"σ²={args.color_var:.3f}",
    bias_colours=lambda args: PALETTES[getattr(args, "cmnist_palette", "authors")],
    variants=(("gray", "Gray", lambda c: c.get("grayscale")),),
    options=(
        Option("cmnist_source", "ours", "build Colored MNIST here, or read the authors' "
               "released .npy", choices=("ours", "official")),
        Option("color_var", 0.020, "sigma^2 of the colour jitter; smaller = stronger bias",
               range="(0, 1)"),
        Option("cmnist_paint", "mask", "ours: the colour flat on the stroke (MNIST value > 127), "
               "or scaled by stroke intensity (releases before 2026-11)",
               choices=("mask", "intensity")),
        Option("cmnist_palette", "authors", "ours: the authors' observed colours (6-8 chosen "
               "by rule), or p1 (releases before 2026-11)", choices=("authors", "p1")),
        Option("env_from_bias", switch=True, help="ColoredMNIST: b = the image's colour index, "
               "so environment methods (irm, andmask, genmask) group each batch by colour"))))

register_dataset(DatasetSpec(
    "LfFColoredMNIST", lff_cmnist_datasets, b="bias",  # b: the image-level colour (h's target)
    classes=10, bias_classes=10,
    run_name=lambda args: f"LfF{args.lff_conflict_ratio:g}",
    title="LfF's Colored MNIST (test accuracy)", pivot="lff_conflict_ratio",
    report=(metrics.FINAL, metrics.conflicting(), metrics.worst_group()),
    # LNL and BlindEye as their authors order them: stage 2 from a vanilla run's checkpoint
    variants=tuple((f"{m}_stage2", f"{name}, stage 2 from vanilla", lambda c, m=m: (
        c.get("dataset_name") == "LfFColoredMNIST" and c.get("method") == m
        and bool(c.get("init_checkpoint")))) for m, name in (("lnl", "LNL"),
                                                              ("blindeye", "BlindEye"))),
    names={"baseline": "Vanilla"},  # the LfF paper's name for the plain model
    describe=lambda args: f"{args.lff_conflict_ratio:.1%} conflicting",
    bias_colours=lambda args: LFF_PALETTE,
    options=(
        Option("lff_conflict_ratio", 0.01, "LfFColoredMNIST: share of training images whose "
               "colour is another digit's (the paper's 0.005, 0.01, 0.02, 0.05)",
               range="[0, 0.9]", type=share),
        Option("lff_severity", 4, "LfFColoredMNIST: colour noise std 0.05, 0.02, 0.01, 0.005, "
               "0.002 for severity 1..5 (the authors' runs: 4)", choices=tuple(SEVERITY_STD)),
        Option("lff_input_scale", "authors", "LfFColoredMNIST: authors: x / 255 / 255 (their "
               "MLP divides the [0, 1] input by 255 again); unit: x / 255",
               choices=("authors", "unit")))))

register_dataset(DatasetSpec(
    "IRMColoredMNIST", irm_cmnist_datasets, b="env",
    title="IRM Colored MNIST", report=(metrics.TRAIN, metrics.FINAL),
    classes=1))  # label = digit < 5: one logit

SPIRAL_OPTIONS = (
    Option("n_envs", 16, "SpiralSignatures: training envs", range="> 0"),
    Option("examples_per_env", 1024, "SpiralSignatures", range="> 0"),
    Option("spiral_dims", 16, "SpiralSignatures: dimensions of the per-env signature",
           range="> 0"),
    Option("spiral_revolutions", 3, "SpiralSignatures", range="> 0"),
    Option("spiral_test_examples", 2000, "SpiralSignatures", range="> 0"))
register_dataset(DatasetSpec(
    "SpiralSignatures", spiral_datasets, b="env", classes=1,  # the arm: one logit
    balanced_envs=True, options=SPIRAL_OPTIONS, bias_attribute=False,
    title="AND-mask synthetic memorisation (spiral + signatures)",
    report=(metrics.TRAIN, metrics.FINAL)))

register_dataset(DatasetSpec(
    "CIFAR10RandomLabels", cifar_random_labels_datasets, b="env",  # each example its own
    classes=10, title="CIFAR-10 with random labels", bias_attribute=False,
    report=(metrics.TRAIN, metrics.accuracy(MISLABELED), metrics.FINAL),
    options=(Option("random_labels_fraction", 0.0, "CIFAR10RandomLabels: fraction of training "
                    "labels randomized", range="[0, 1]"),)))

# Shared by the two real-image benchmarks (one --help group, "DogsCats, IMDBFace").
IMAGE_FILE_OPTIONS = (
    Option("bias_split", None, "DogsCats: TB1 (dark cats + bright dogs, the default) or TB2; "
           "IMDBFace: EB1 (women 0-29 + men 40+, the default) or EB2 (women 40+ + men 0-29)"),
    Option("image_size", 224, "real-image benchmarks: side", range=">= 32"),
    Option("skip_bad_images", switch=True, help="decode every image first; skip (and log) "
           "unreadable ones instead of stopping", role=DRIVES))
register_dataset(DatasetSpec(
    "DogsCats", dogs_cats_datasets, b="bias",
    classes=2, bias_classes=2,  # cat, dog; dark, bright
    bias_splits=("TB1", "TB2"), file_backed=True,
    run_name=lambda args: f"DogsCats_{args.bias_split}",
    title="Dogs and Cats", report=(metrics.FINAL, metrics.accuracy(MIXED)), pivot="bias_split",
    options=IMAGE_FILE_OPTIONS + (
        Option("holdout_fraction", 0.1, "DogsCats: share of each training cell held out for the "
               "unbiased 'mixed' evaluation set", range="[0, 1)"),
        Option("dogs_cats_lists", None, "DogsCats: folder with list_bright.txt and "
               "list_dark.txt (default: <data_root_base>/dogs_vs_cats/lists)", role=DRIVES))))

IMDB_CLASSES = {"gender": 2, "age_bin": len(AGE_EDGES) - 1}  # per column of the manifests
register_dataset(DatasetSpec(
    "IMDBFace", imdb_face_datasets, b="bias",
    classes=lambda args: IMDB_CLASSES[IMDB_TASKS[args.imdb_task][0]],
    bias_classes=lambda args: IMDB_CLASSES[IMDB_TASKS[args.imdb_task][1]],
    bias_splits=("EB1", "EB2"), file_backed=True,
    run_name=lambda args: f"IMDBFace_{args.bias_split}_{args.imdb_task}",
    title="IMDB-Face", report=(metrics.FINAL, metrics.accuracy(OPPOSITE)), pivot="bias_split",
    options=IMAGE_FILE_OPTIONS + (
        Option("imdb_task", "gender", "IMDBFace: predict gender (bias: age class) or the age "
               "class (bias: gender)", choices=("gender", "age")),)))
