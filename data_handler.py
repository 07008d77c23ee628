"""Biased datasets and their loaders. Every batch is (x, y, b): input, label, bias target.

Colored MNIST follows Learning Not to Learn (Kim et al., CVPR 2019, §4.1): each digit class
has a mean colour, training strokes are painted with a colour drawn from
N(mean[label], sigma^2 I), the test set draws the mean colour independently of the label,
and the background stays black.
"""
import gzip
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils import UserError, atomic_np_save

# Mean stroke colour per digit (RGB, 0..255). The authors never published their palette; the
# colours observed in their released files (PAPERS.md §1) sit within jitter of these entries
# of a well-known list of 20 distinct colours (red, blue, lime, teal, orange, purple, maroon
# for digits 0-5 and 9). Digits 6-8 are unknown: cyan, navy and white were picked from the
# same list as the trio that keeps the ten colours most separable.
PALETTE = np.array([
    (230, 25, 75),    # 0 red
    (0, 130, 200),    # 1 blue
    (210, 245, 60),   # 2 lime
    (0, 128, 128),    # 3 teal
    (245, 130, 48),   # 4 orange
    (145, 30, 180),   # 5 purple
    (70, 240, 240),   # 6 cyan
    (0, 0, 128),      # 7 navy
    (255, 255, 255),  # 8 white
    (128, 0, 0),      # 9 maroon
], dtype=np.float64) / 255.0
PALETTE_VERSION = "p1"  # bump when PALETTE or the painting rule changes: invalidates caches

# Input normalisation of the LNL reference (CIFAR statistics).
CMNIST_MEAN = (0.4914, 0.4822, 0.4465)
CMNIST_STD = (0.2023, 0.1994, 0.2010)
IGNORE_INDEX = 255
NUM_COLOR_BINS = 8

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

DATASETS = ("ColoredMNIST",)


# --------------------------------------------------------------------------- MNIST files
def read_idx(path):
    """Read an idx file (gzip or raw) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not a uint8 idx file; re-fetch it with "
                        "`python fetch_data.py mnist`.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated ({body.size} of {int(np.prod(shape))} values); "
                        "re-fetch it with `python fetch_data.py mnist`.")
    return body.reshape(shape)


def find_idx(folder, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def mnist_raw_dir(data_root_base):
    return os.path.join(data_root_base, "MNIST", "raw")


def load_mnist(data_root_base):
    """The four MNIST arrays from <data_root_base>/MNIST/raw (as torchvision lays them out)."""
    folder = mnist_raw_dir(data_root_base)
    out = {}
    for key, stem in MNIST_FILES.items():
        path = find_idx(folder, stem)
        if path is None:
            raise UserError(
                f"MNIST not found: {os.path.join(folder, stem)}[.gz] is missing. Fetch it with "
                f"`python fetch_data.py mnist --data_root_base {data_root_base}` (download) or "
                f"`python fetch_data.py mnist --from DIR --data_root_base {data_root_base}` "
                "(copy the four idx files from DIR).")
        out[key] = read_idx(path)
    return out


# --------------------------------------------------------------------------- Colored MNIST
def paint(gray, colours):
    """Paint grayscale digits (N,28,28 uint8) with one RGB colour each (N,3 in [0,1]).
    Stroke intensity scales the colour, so the background stays exactly black."""
    rgb = gray[..., None].astype(np.float32) * colours[:, None, None, :].astype(np.float32)
    return np.rint(rgb).clip(0, 255).astype(np.uint8)


def jittered_colours(mean_index, color_var, rng):
    """Colours drawn from N(PALETTE[mean_index], color_var * I), clipped to [0,1]."""
    noise = rng.normal(0.0, np.sqrt(color_var), size=(len(mean_index), 3))
    return np.clip(PALETTE[mean_index] + noise, 0.0, 1.0)


def build_colored_mnist(mnist, color_var, data_seed):
    """Biased train split (colour tied to the digit), unbiased test split (colour drawn
    uniformly at random). Same arrays for the same (color_var, data_seed)."""
    rng = np.random.default_rng(data_seed)
    train_label = mnist["train_labels"].astype(np.int64)
    test_label = mnist["test_labels"].astype(np.int64)
    test_color = rng.integers(0, len(PALETTE), size=len(test_label))
    return {
        "train_image": paint(mnist["train_images"], jittered_colours(train_label, color_var, rng)),
        "train_label": train_label,
        "train_color_index": train_label.copy(),
        "test_image": paint(mnist["test_images"], jittered_colours(test_color, color_var, rng)),
        "test_label": test_label,
        "test_color_index": test_color.astype(np.int64),
    }


def cmnist_cache_path(data_root_base, color_var, data_seed):
    return os.path.join(data_root_base, "colored_mnist",
                        f"cmnist_{PALETTE_VERSION}_var{color_var:.3f}_seed{data_seed}.npz")


def load_or_build_cmnist(data_root_base, color_var, data_seed):
    """Our Colored MNIST, built once per (color_var, data_seed) and cached as .npz."""
    path = cmnist_cache_path(data_root_base, color_var, data_seed)
    if os.path.exists(path):
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):
            os.remove(path)  # a damaged cache is rebuilt, never trusted
    data = build_colored_mnist(load_mnist(data_root_base), color_var, data_seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **data)
    os.replace(tmp, path)
    return data


def official_cmnist_path(data_root_base, color_var):
    return os.path.join(data_root_base, f"mnist_10color_jitter_var_{color_var:.3f}.npy")


def stroke_colour(images):
    """Per image, the colour at its brightest pixel (N,H,W,3 uint8 -> N,3 in [0,1]).
    With multiplicative painting the brightest stroke pixel carries the drawn colour."""
    flat = images.reshape(len(images), -1, 3).astype(np.float32)
    idx = flat.sum(-1).argmax(1)
    return flat[np.arange(len(images)), idx] / 255.0


def nearest_colour_index(colours, means):
    return ((colours[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)


def load_official_cmnist(data_root_base, color_var):
    """The authors' released file: a pickled dict with train_image/train_label/test_image/
    test_label (PAPERS.md §1). Their palette is unknown, so the test image's colour index is
    estimated as the nearest per-class mean stroke colour of the training set."""
    path = official_cmnist_path(data_root_base, color_var)
    if not os.path.exists(path):
        raise UserError(
            f"official Colored-MNIST file {path} is missing. Fetch it with "
            f"`python fetch_data.py cmnist_official --data_root_base {data_root_base}`, or "
            f"place mnist_10color_jitter_var_{color_var:.3f}.npy there by hand.")
    try:
        raw = np.load(path, encoding="latin1", allow_pickle=True).item()
    except Exception as exc:  # pickle errors come in many types
        raise UserError(f"{path} could not be read as the authors' dict .npy ({exc}); "
                        "download it again with `python fetch_data.py cmnist_official`.")
    missing = [k for k in ("train_image", "train_label", "test_image", "test_label")
               if k not in raw]
    if missing:
        raise UserError(f"{path} lacks keys {missing}; it is not an official Colored-MNIST file.")
    data = {k: np.asarray(raw[k]) for k in ("train_image", "train_label", "test_image",
                                             "test_label")}
    data["train_label"] = data["train_label"].astype(np.int64).reshape(-1)
    data["test_label"] = data["test_label"].astype(np.int64).reshape(-1)
    colours = stroke_colour(data["train_image"])
    means = np.stack([colours[data["train_label"] == k].mean(0) for k in range(10)])
    data["train_color_index"] = data["train_label"].copy()
    data["test_color_index"] = nearest_colour_index(stroke_colour(data["test_image"]), means)
    return data


def color_bin_target(images):
    """Per-pixel colour-bin target of the LNL reference: the image resized to 14x14 with
    nearest neighbour (PIL's convention picks the centre pixel, index 2i+1), each channel
    value // 32 -> bin 0..7, and channel value 0 (background) -> IGNORE_INDEX.
    (N,28,28,3) uint8 -> (N,3,14,14) uint8."""
    small = images[:, 1::2, 1::2, :].transpose(0, 3, 1, 2)
    target = small // 32
    target[small == 0] = IGNORE_INDEX
    return np.ascontiguousarray(target)


# --------------------------------------------------------------------------- datasets
class BiasedTensorDataset(Dataset):
    """In-memory uint8 images with labels, bias targets and the bias attribute per image.
    Batches are built with one tensor op (__getitems__), with no per-sample Python work."""

    def __init__(self, images, labels, bias_targets, bias_index, mean, std, grayscale=False):
        self.images = torch.from_numpy(np.ascontiguousarray(images))  # N,H,W,C uint8
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.bias_targets = torch.from_numpy(np.asarray(bias_targets))
        self.bias_index = np.asarray(bias_index, dtype=np.int64)
        self.grayscale = grayscale
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self):
        return len(self.labels)

    def _inputs(self, idx):
        x = self.images[idx].permute(0, 3, 1, 2).float().div_(255.0)
        if self.grayscale:
            x = x.mean(1, keepdim=True).expand_as(x)
        return (x - self.mean) / self.std

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._inputs(idx), self.labels[idx], self.bias_targets[idx].long()

    def __getitem__(self, i):
        x, y, b = self.__getitems__([i])
        return x[0], y[0], b[0]


def _batch_passthrough(batch):
    """collate_fn for datasets that already return whole batches from __getitems__."""
    return batch


class EpochShuffleSampler(Sampler):
    """A shuffle that depends only on (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, n, seed):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self):
        return self.n


def _first(n, *arrays):
    return [a[:n] if n else a for a in arrays]


def colored_mnist_datasets(args):
    """Train (biased) and test (unbiased) BiasedTensorDatasets for --dataset_name ColoredMNIST."""
    if not 0.0 < args.color_var < 1.0:
        raise UserError(f"--color_var must lie in (0, 1); got {args.color_var}.")
    if args.cmnist_source == "official":
        data = load_official_cmnist(args.data_root_base, args.color_var)
    else:
        data = load_or_build_cmnist(args.data_root_base, args.color_var, args.data_seed)
    splits = []
    for split, limit in (("train", args.max_train_samples), ("test", args.max_test_samples)):
        images, labels, colour = _first(limit, data[f"{split}_image"], data[f"{split}_label"],
                                        data[f"{split}_color_index"])
        splits.append(BiasedTensorDataset(images, labels, color_bin_target(images), colour,
                                          CMNIST_MEAN, CMNIST_STD,
                                          grayscale=getattr(args, "grayscale", False)))
    return splits


def build_datasets(args):
    if args.dataset_name == "ColoredMNIST":
        return colored_mnist_datasets(args)
    raise UserError(f"unknown dataset '{args.dataset_name}'; known: {', '.join(DATASETS)}.")


def make_loader(dataset, batch_size, train, seed, num_workers, device):
    """DataLoader over whole-batch datasets; training order from EpochShuffleSampler."""
    sampler = EpochShuffleSampler(len(dataset), seed) if train else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=num_workers, collate_fn=_batch_passthrough,
                      pin_memory=device.type == "cuda", drop_last=False,
                      persistent_workers=num_workers > 0)


def save_official_format(data, path):
    """Write a dict in the authors' .npy format (used by tests and for exporting our data)."""
    atomic_np_save(data, path)
