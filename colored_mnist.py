"""Colored MNIST, as Learning Not to Learn builds it (Kim et al., CVPR 2019, §4.1): each digit
class has a mean colour, training strokes are painted with a colour drawn from
N(mean[label], sigma^2 I), the test set draws the mean colour independently of the label, and
the background stays black. Also IRM's Colored MNIST (Arjovsky et al. 2019), and the MNIST
files both are built from.
"""
import gzip
import os
import stat
import zipfile
import zlib

import numpy as np

from data_handler import (IGNORE_INDEX, ColorImageDataset, ArrayDataset, array_digest,
                          first_n)
from safe_files import save_npz
from utils import UserError, log

# Mean stroke colour per digit (RGB, 0..255), --cmnist_palette. The authors never published
# their palette (docs/references.md §1a says how these were chosen):
# - "authors" (default): digits 0-5 and 9 take the colours reported for the authors' released
#   files (approximate means read off jittered samples of those files, as they reached the
#   project; never re-measured here); digits 6-8, not reported, take cyan, pink and green,
#   the trio of a standard list of distinct colours farthest from the seven reported ones and
#   from each other once achromatic colours (a white or gray digit is a grayscale digit) and colours
#   with a zero channel (a zero channel is background to h's target) are left out;
# - "p1": the palette of releases before this one (digits 6-8 cyan, navy, white), kept so
#   earlier rows can be reproduced.
PALETTES = {
    "authors": np.array([
        (220, 27, 72),    # 0 crimson (reported)
        (30, 118, 160),   # 1 blue (reported)
        (199, 245, 52),   # 2 lime (reported)
        (49, 150, 175),   # 3 cerulean (reported)
        (230, 120, 45),   # 4 orange (reported)
        (167, 38, 210),   # 5 purple (reported)
        (70, 240, 240),   # 6 cyan
        (250, 190, 212),  # 7 pink
        (60, 180, 75),    # 8 green
        (79, 30, 54),     # 9 maroon (reported)
    ], dtype=np.float64) / 255.0,
    "p1": np.array([
        (230, 25, 75), (0, 130, 200), (210, 245, 60), (0, 128, 128), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (0, 0, 128), (255, 255, 255), (128, 0, 0),
    ], dtype=np.float64) / 255.0,
}
PALETTE = PALETTES["authors"]
# How a colour meets the stroke, --cmnist_paint (docs/references.md §1a):
# - "mask" (default): the image's colour flat on every stroke pixel (MNIST value > STROKE_MIN),
#   the rest black, so each stroke pixel's colour bins (h's target) are the colour alone;
# - "intensity": the colour scaled by the stroke's intensity (releases before this one).
PAINT_RULES = ("mask", "intensity")
STROKE_MIN = 127
CACHE_VERSION = "c3"  # bump when a palette or a painting rule changes: invalidates caches
#                      (c3: the same data as c2, the file now carries its arrays' sha256)

# Input normalisation of the LNL reference (CIFAR statistics).
CMNIST_MEAN = (0.4914, 0.4822, 0.4465)
CMNIST_STD = (0.2023, 0.1994, 0.2010)

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# --------------------------------------------------------------------------- MNIST files
def read_bytes(path):
    """A file's bytes, gunzipped when it ends in .gz; a damaged gzip is a UserError."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            return fh.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(f"{path} is damaged ({exc or 'truncated'}): not a complete gzip file; "
                        "fetch a fresh copy (`python fetch_data.py mnist`).")


def read_idx(path):
    """Read an idx file (gzip or raw) into a numpy array."""
    data = read_bytes(path)
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
def paint(gray, colours, rule="mask"):
    """Paint grayscale digits (N,28,28 uint8) with one RGB colour each (N,3 in [0,1]); the
    background stays exactly black. "mask": the colour flat on pixels above STROKE_MIN (the
    paper's "strokes painted with a colour"); "intensity": the colour times the pixel's value."""
    colours = colours[:, None, None, :].astype(np.float32)
    if rule == "mask":
        rgb = (gray > STROKE_MIN)[..., None] * np.rint(colours * 255.0)
    elif rule == "intensity":
        rgb = np.rint(gray[..., None].astype(np.float32) * colours)
    else:
        raise ValueError(f"unknown painting rule {rule!r}; known: {PAINT_RULES}")
    return rgb.clip(0, 255).astype(np.uint8)


def jittered_colours(mean_index, color_var, rng, palette=PALETTE):
    """Colours drawn from N(palette[mean_index], color_var * I), clipped to [0,1]."""
    noise = rng.normal(0.0, np.sqrt(color_var), size=(len(mean_index), 3))
    return np.clip(palette[mean_index] + noise, 0.0, 1.0)


def build_colored_mnist(mnist, color_var, data_seed, palette="authors", rule="mask"):
    """Biased train split (colour tied to the digit), unbiased test split (colour drawn
    uniformly at random). Same arrays for the same (color_var, data_seed, palette, rule)."""
    rng = np.random.default_rng(data_seed)
    means = PALETTES[palette]
    train_label = mnist["train_labels"].astype(np.int64)
    test_label = mnist["test_labels"].astype(np.int64)
    test_color = rng.integers(0, len(means), size=len(test_label))
    colour = lambda index: jittered_colours(index, color_var, rng, means)
    return {
        "train_image": paint(mnist["train_images"], colour(train_label), rule),
        "train_label": train_label,
        "train_color_index": train_label.copy(),
        "test_image": paint(mnist["test_images"], colour(test_color), rule),
        "test_label": test_label,
        "test_color_index": test_color.astype(np.int64),
    }


def cmnist_cache_path(data_root_base, color_var, data_seed, palette="authors", rule="mask"):
    return os.path.join(data_root_base, "colored_mnist",
                        f"cmnist_{CACHE_VERSION}_{palette}_{rule}_var{color_var:.3f}_"
                        f"seed{data_seed}.npz")


CMNIST_KEYS = ("train_image", "train_label", "train_color_index", "test_image", "test_label",
               "test_color_index")


# A cache holds MNIST's 70,000 images in colour (165 MB unpacked): anything far larger is not
# one, and is refused before it is unpacked (a small file may unpack to gigabytes)
CACHE_MAX_BYTES = 1 << 30


def cache_problem(path):
    """Why the file at path cannot be a cache this tool wrote, from what it is before it is
    read (a plain file, not a link, FIFO or folder; its zip members' unpacked sizes bounded),
    or None."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return "it is not a plain file (a link, a FIFO, a device or a folder)"
    if st.st_size > CACHE_MAX_BYTES:
        return f"it is {st.st_size:,} bytes, more than a cache holds"
    with zipfile.ZipFile(path) as z:
        unpacked = sum(info.file_size for info in z.infolist())
        names = {os.path.splitext(info.filename)[0] for info in z.infolist()}
    if unpacked > CACHE_MAX_BYTES:
        return f"it unpacks to {unpacked:,} bytes, more than a cache holds"
    if not set(CMNIST_KEYS) | {"sha256"} <= names:
        return "it lacks some of the arrays a cache holds"
    return None


def content_problem(data):
    """Why arrays whose digest matches (the digest sits in the same file, so rewriting the file
    rewrites it) still cannot be a coloured MNIST, or None: uint8 images of 28 x 28 x 3, digit
    labels and colour indices in 0..9, one of each per image, a training set of images."""
    for split in ("train", "test"):
        image, label, colour = (data[f"{split}_{k}"] for k in ("image", "label", "color_index"))
        if image.dtype != np.uint8 or image.ndim != 4 or image.shape[1:] != (28, 28, 3):
            return f"its {split} images are {image.dtype} of shape {image.shape[1:]}, not uint8 28x28x3"
        for name, values in (("labels", label), ("colour indices", colour)):
            if values.ndim != 1 or values.dtype.kind not in "iu" or len(values) != len(image):
                return f"its {split} {name} are not one whole number per image"
            if len(values) and (values.min() < 0 or values.max() > 9):
                return f"its {split} {name} leave 0..9"
    if len(data["train_label"]) < 10 or len(data["test_label"]) < 1:
        return f"its training set holds {len(data['train_label'])} images"
    return None


def read_cmnist_cache(path):
    """A cached Colored MNIST, or None when it is missing or damaged (a damaged cache is
    never trusted: it is checked as a file before it is unpacked, every array is read in full,
    they must hash to the sha256 stored when the cache was built and hold what a coloured
    MNIST holds)."""
    if not os.path.lexists(path):
        return None
    try:
        problem = cache_problem(path)
        if problem is None:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in CMNIST_KEYS}
                stored = str(z["sha256"])
            problem = ("its arrays do not match their stored sha256"
                       if array_digest(data) != stored else content_problem(data))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
        problem = "it cannot be read as the cache this tool writes"
    if problem:
        log(f"note: the Colored-MNIST cache {path} is damaged or not one this tool wrote "
            f"({problem}), so it is not used: another copy or a fresh build stands in; move "
            "it aside to keep it")
        return None
    return data


def cmnist_cache_dirs(data_root_base, output_dir):
    """Where the cache may live: the data folder, else (a read-only dataset mount) the output
    folder's .cache, which the runs there share."""
    return [os.path.join(data_root_base, "colored_mnist"),
            os.path.join(output_dir, ".cache", "colored_mnist")]


def writable(folder):
    """Whether folder exists and can be written, or could be created."""
    while not os.path.exists(folder):
        folder = os.path.dirname(os.path.abspath(folder))
    return os.access(folder, os.W_OK | os.X_OK)


def load_or_build_cmnist(data_root_base, color_var, data_seed, output_dir="./outputs",
                         palette="authors", rule="mask"):
    """Our Colored MNIST, built once per (color_var, data_seed, palette, rule) and cached as
    .npz (in memory only when neither cache folder can be written)."""
    name = os.path.basename(cmnist_cache_path(data_root_base, color_var, data_seed, palette,
                                              rule))
    return cached_arrays(
        name, data_root_base, output_dir,
        lambda: build_colored_mnist(load_mnist(data_root_base), color_var, data_seed, palette,
                                    rule),
        f"Colored MNIST (sigma^2 {color_var:.3f}, data seed {data_seed}, palette {palette}, "
        f"painted by {rule})")


_LOADED = {}  # (cache file, its mtime, size, inode) -> its arrays, read once per process


def cached_arrays(name, data_root_base, output_dir, build, what):
    """A coloured MNIST's arrays (CMNIST_KEYS) from the cache file `name` in the first cache
    folder holding an intact copy (read_cmnist_cache: checked by its stored sha256), else
    build() them and cache them in the first writable folder (cmnist_cache_dirs)."""
    folders = cmnist_cache_dirs(data_root_base, output_dir)
    for folder in folders:
        path = os.path.abspath(os.path.join(folder, name))
        try:  # the same file, unchanged since read: several runs of a process share one read
            st = os.stat(path)
            key = (path, st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            continue
        if key in _LOADED:
            return _LOADED[key]
        data = read_cmnist_cache(path)
        if data is not None:
            _LOADED[key] = data
            return data
    target = next((f for f in folders if writable(f)), None)
    log(f"building {what}: 70,000 images, about a minute on a CPU; "
        + (f"cached as {os.path.join(target, name)}" if target else
           "kept in memory (no writable cache folder)"))
    data = build()
    if target:
        # a private temp file + rename: runs started together may all build it, none
        # half-reads it
        save_npz({**data, "sha256": np.array(array_digest(data))},
                 os.path.join(target, name), target)
    return data


def official_cmnist_path(data_root_base, color_var):
    return os.path.join(data_root_base, f"mnist_10color_jitter_var_{color_var:.3f}.npy")


def stroke_colour(images):
    """Per image, the colour at its brightest pixel (N,H,W,3 uint8 -> N,3 in [0,1]).
    Either painting rule leaves the drawn colour on the brightest stroke pixel."""
    flat = images.reshape(len(images), -1, 3).astype(np.float32)
    idx = flat.sum(-1).argmax(1)
    return flat[np.arange(len(images)), idx] / 255.0


def nearest_colour_index(colours, means):
    return ((colours[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)


def load_official_cmnist(data_root_base, color_var):
    """The authors' released file: a pickled dict with train_image/train_label/test_image/
    test_label (docs/references.md §1). Their palette is unknown, so the test image's colour
    index is estimated as the nearest per-class mean stroke colour of the training set."""
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


def colored_mnist_datasets(args):
    """Train (biased) and test (unbiased) datasets for --dataset_name ColoredMNIST (--color_var
    in (0, 1), as its spec declares and arguments.validate checks)."""
    if args.cmnist_source == "official":
        data = load_official_cmnist(args.data_root_base, args.color_var)
    else:
        data = load_or_build_cmnist(args.data_root_base, args.color_var, args.data_seed,
                                    args.output_dir, args.cmnist_palette, args.cmnist_paint)
    sets = {}
    for split, limit in (("train", args.max_train_samples), ("test", args.max_test_samples)):
        images, labels, colour = first_n(limit, data[f"{split}_image"],
                                         data[f"{split}_label"], data[f"{split}_color_index"])
        # b: LNL's per-pixel colour bins, or the colour index as an environment label
        b = colour if args.env_from_bias else color_bin_target(images)
        sets[split] = ColorImageDataset(images, labels, b, colour, CMNIST_MEAN, CMNIST_STD,
                                        grayscale=args.grayscale)
    return sets


# --------------------------------------------------------------------------- IRM Colored MNIST
def irm_environment(images, digits, flip_colour_p, rng):
    """One environment of IRM's Colored MNIST (Arjovsky et al. 2019, §5.2 and their script):
    14x14 digits, y = (digit < 5) flipped with p = 0.25, colour = y flipped with p = e, and
    the channel of the other colour zeroed. Returns x (N,2,14,14) in [0,1], y, colour."""
    small = images[:, ::2, ::2].astype(np.float32) / 255.0
    y = (digits < 5).astype(np.int64) ^ (rng.random(len(digits)) < 0.25)
    colour = y ^ (rng.random(len(digits)) < flip_colour_p)
    x = np.stack([small, small], axis=1)
    x[np.arange(len(x)), 1 - colour] = 0.0
    return x, y.astype(np.int64), colour.astype(np.int64)


IRM_TRAIN_ENVS = (0.2, 0.1)
IRM_TEST_ENV = 0.9


def build_irm_cmnist(mnist, data_seed):
    """Two training environments (e = 0.2, 0.1) from MNIST train images 0..49,999 shuffled and
    split even/odd, and a test environment (e = 0.9) from images 50,000..59,999."""
    rng = np.random.default_rng(data_seed)
    perm = rng.permutation(50000)
    images, digits = mnist["train_images"][:50000][perm], mnist["train_labels"][:50000][perm]
    envs = [irm_environment(images[k::2], digits[k::2], e, rng)
            for k, e in enumerate(IRM_TRAIN_ENVS)]
    test = irm_environment(mnist["train_images"][50000:], mnist["train_labels"][50000:],
                           IRM_TEST_ENV, rng)
    return envs, test


class IRMDataset(ArrayDataset):
    """b is the environment index; bias_index is the colour. --grayscale sums the two colour
    channels into one (IRM's grayscale oracle)."""

    def __init__(self, x, y, env, colour, grayscale=False):
        if grayscale:
            x = x.sum(axis=1, keepdims=True)
        super().__init__(x, y, env, colour)


def irm_cmnist_datasets(args):
    envs, test = build_irm_cmnist(load_mnist(args.data_root_base), args.data_seed)
    if args.max_train_samples:  # keep every environment: the first N / 2 of each
        envs = [first_n(args.max_train_samples // len(envs), *e) for e in envs]
    x = np.concatenate([e[0] for e in envs])
    y = np.concatenate([e[1] for e in envs])
    colour = np.concatenate([e[2] for e in envs])
    env = np.concatenate([np.full(len(e[1]), k) for k, e in enumerate(envs)])
    tx, ty, tcol = first_n(args.max_test_samples, *test)
    return {"train": IRMDataset(x, y, env, colour, args.grayscale),
            "test": IRMDataset(tx, ty, np.full(len(ty), len(envs)), tcol, args.grayscale)}
