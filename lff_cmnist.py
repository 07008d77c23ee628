"""LfF's Colored MNIST (Nam et al., "Learning from Failure", NeurIPS 2020), generated from MNIST
here by the rule of the authors' code (alinlab/LfF: make_dataset.py, data/colored_mnist_protocol.py,
data/resource/colors.th; docs/references.md §5):

- each digit's stroke takes a colour by intensity: clamp(mean[k] + eps, 0, 1) x the MNIST
  pixel, eps ~ N(0, std^2 I) one RGB offset per image, the background black, stored as uint8
  (truncated, as the authors' np.uint8 does);
- std by severity 1..5: 0.05, 0.02, 0.01, 0.005, 0.002 (their runs: severity 4);
- training colours: per class, in MNIST order, a deterministic assignment by cumulative shares:
  colour k takes the next round(n_c x cumsum) examples, where class c's share of its own colour
  is 1 - conflict_ratio and of each other colour conflict_ratio / 9 (so the conflicting
  examples of class c sit in consecutive runs, colours in ascending order around c's block);
- the test set (their "valid" split, unbiased): MNIST's test images by the same rule with an
  own-colour share of 0.1 (every colour equally likely per class).

They hold out no validation set and report accuracies on the test set every epoch; this tool
reports the final epoch, and --val_fraction (the benchmark's preset: 0.1) holds out a seeded
part of the training images, with the training skew, for test-free selection.
"""
import numpy as np

from colored_mnist import cached_arrays, load_mnist
from data_handler import ColorImageDataset, first_n

# alinlab/LfF data/resource/colors.th: mean colour per digit, RGB in [0, 1]
LFF_PALETTE = np.array([
    (0.9837, 0.3125, 0.1686), (0.9905, 0.9156, 0.3515), (0.6730, 0.4611, 0.5798),
    (0.7833, 0.8316, 0.6013), (0.0880, 0.7780, 0.9818), (0.3214, 0.9611, 0.4464),
    (0.0246, 0.2357, 0.7587), (0.5552, 0.1016, 0.7618), (0.2077, 0.3929, 0.0187),
    (0.8337, 0.2024, 0.2669)], dtype=np.float64)
SEVERITY_STD = {1: 0.05, 2: 0.02, 3: 0.01, 4: 0.005, 5: 0.002}
CONFLICT_RATIOS = (0.005, 0.01, 0.02, 0.05)  # the paper's 99.5%, 99%, 98%, 95% aligned
TEST_OWN_SHARE = 0.1  # the unbiased split: each colour equally likely per class
# inputs: x / 255 (ToTensor); the authors' MLP divides by 255 once more (--lff_input_scale)
INPUT_STD = {"authors": (255.0,) * 3, "unit": (1.0,) * 3}


def colour_assignment(labels, own_share, classes=10):
    """The colour index of each example, by the authors' deterministic rule: per class c, in
    dataset order, colour k takes the examples below the rounded milestone
    n_c x cumsum(shares)[k], with shares own_share for k = c and (1 - own_share) / 9 else."""
    labels = np.asarray(labels, np.int64)
    colours = np.empty(len(labels), np.int64)
    for c in range(classes):
        members = np.flatnonzero(labels == c)
        shares = np.full(classes, (1 - own_share) / (classes - 1))
        shares[c] = own_share
        milestones = np.round(len(members) * np.cumsum(shares))
        # example i (0-based within its class) takes the first colour whose milestone exceeds i
        colours[members] = np.searchsorted(milestones, np.arange(len(members)), side="right")
    return colours


def colourize(gray, colour_index, std, rng):
    """(N,28,28) uint8 digits -> (N,28,28,3) uint8: clamp(mean + eps, 0, 1) x pixel, one eps
    per image, truncated to uint8 as the authors' code stores it."""
    eps = rng.standard_normal((len(gray), 3)) * std
    colours = np.clip(LFF_PALETTE[colour_index] + eps, 0.0, 1.0).astype(np.float32)
    return (gray[..., None].astype(np.float32) * colours[:, None, None, :]).astype(np.uint8)


def build_lff_cmnist(mnist, conflict_ratio, severity, data_seed):
    """Train (colour tied to the digit but for conflict_ratio) and unbiased test arrays, in
    colored_mnist's cache layout (CMNIST_KEYS)."""
    rng = np.random.default_rng(data_seed)
    out = {}
    for split, own in (("train", 1.0 - conflict_ratio), ("test", TEST_OWN_SHARE)):
        labels = mnist[f"{split}_labels"].astype(np.int64)
        index = colour_assignment(labels, own)
        out.update({f"{split}_image": colourize(mnist[f"{split}_images"], index,
                                                SEVERITY_STD[severity], rng),
                    f"{split}_label": labels, f"{split}_color_index": index})
    return out


def load_or_build_lff(data_root_base, conflict_ratio, severity, data_seed,
                      output_dir="./outputs"):
    """LfF's Colored MNIST, built once per (ratio, severity, data seed) and cached, its arrays
    checked against their stored sha256 whenever read (colored_mnist.cached_arrays)."""
    name = f"lff_cmnist_v1_ratio{conflict_ratio:g}_sev{severity}_seed{data_seed}.npz"
    return cached_arrays(
        name, data_root_base, output_dir,
        lambda: build_lff_cmnist(load_mnist(data_root_base), conflict_ratio, severity,
                                 data_seed),
        f"LfF's Colored MNIST ({conflict_ratio:.1%} conflicting, severity {severity}, data "
        f"seed {data_seed})")


class LfFImages(ColorImageDataset):
    """ColorImageDataset serving contiguous NCHW batches: the same values in the same order of
    operations (bit-identical), a quarter of the time on a CPU, and no copy when the MLP
    flattens them. (LNL's Colored MNIST keeps the channels-last view its runs began with: a
    convolution given the other layout rounds differently.)"""

    def _inputs(self, idx):
        x = self.inputs[idx].permute(0, 3, 1, 2).contiguous().float().div_(255.0)
        if self.grayscale:
            x = x.mean(1, keepdim=True).expand_as(x).contiguous()
        return x.sub_(self.mean).div_(self.std)


def lff_cmnist_datasets(args):
    """Train (biased) and test (unbiased) sets for --dataset_name LfFColoredMNIST: b is the
    image-level colour (h's target for LNL and BlindEye; GroupDRO's groups with the label)."""
    data = load_or_build_lff(args.data_root_base, args.lff_conflict_ratio, args.lff_severity,
                             args.data_seed, args.output_dir)
    sets = {}
    for split, limit in (("train", args.max_train_samples), ("test", args.max_test_samples)):
        images, labels, colour = first_n(limit, data[f"{split}_image"], data[f"{split}_label"],
                                         data[f"{split}_color_index"])
        sets[split] = LfFImages(images, labels, colour, colour, (0.0,) * 3,
                                INPUT_STD[args.lff_input_scale], grayscale=args.grayscale)
    return sets
