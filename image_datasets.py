"""Real-image benchmarks read from files on disk (Learning Not to Learn, Kim et al., CVPR 2019,
§4.2-4.3): Dogs and Cats with a colour bias (TB1/TB2) and IMDB-Face with an age/gender bias
(EB1/EB2). Images are decoded and augmented in DataLoader workers; every batch is (x, y, b)
with an image-level bias label b.

Malformed inputs stop with the file (and line) to fix: a list naming a missing image, a CSV
with a missing column or a non-numeric age, an unreadable image. --skip_bad_images checks
every image up front instead, and skips (and logs) the unreadable ones.
"""
import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from data_handler import Batch
from utils import BadInput, UserError, progress

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CAT, DOG = 0, 1
DARK, BRIGHT = 0, 1
FEMALE, MALE = 0, 1  # IMDB-WIKI's gender code
# Age classes of the IMDB-Face age task (docs/references.md §1): 12 bins.
AGE_EDGES = (0, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 120)
# the extra evaluation sets' names (their metrics: metrics.accuracy(name); dataset_specs reports)
MIXED, OPPOSITE = "mixed", "opposite"  # Dogs and Cats' unbiased set; IMDB-Face's other split
# The authors' Dogs-and-Cats lists: 8,385 bright and 8,400 dark images of Kaggle's 25,000.
AUTHORS_BRIGHT, AUTHORS_DARK, KAGGLE_TRAIN = 8385, 8400, 25000


def dogs_cats_dir(data_root_base):
    return os.path.join(data_root_base, "dogs_vs_cats")


def imdb_dir(data_root_base):
    return os.path.join(data_root_base, "imdb_face")


# --------------------------------------------------------------------------- images
def load_rgb(path, draft=None):
    """Decode an image file to RGB; draft=(w, h) lets JPEG decoding downscale on the fly."""
    from PIL import Image
    with Image.open(path) as im:
        if draft:
            im.draft("RGB", draft)
        return im.convert("RGB")


def image_transform(image_size, train):
    """Standard ImageNet-style augmentation for training, resize + centre crop for evaluation,
    ImageNet normalisation. No colour jitter: colour is the bias under study."""
    from torchvision import transforms as T
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train:
        return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), *norm])
    return T.Compose([T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size), *norm])


class ImageFileDataset(Dataset):
    """Image files with a label y and an image-level bias label b. `sources` says where each
    image was listed ("file:line"), for error messages."""

    def __init__(self, paths, labels, bias, sources, transform, image_size):
        self.paths, self.sources = list(paths), list(sources)
        self.labels = torch.as_tensor(np.asarray(labels, np.int64))
        self.bias_targets = torch.as_tensor(np.asarray(bias, np.int64))
        self.bias_index = np.asarray(bias, np.int64)
        self.transform, self.image_size = transform, image_size
        self.b = "bias"  # the field its b travels as (dataset_specs.build_datasets)

    def __len__(self):
        return len(self.paths)

    def subset(self, idx, train=True):
        """The files at idx; train=False gives them the evaluation transform (a validation
        set held out of the training files is evaluated, not augmented)."""
        idx = list(np.asarray(idx))
        transform = self.transform if train else image_transform(self.image_size, False)
        return ImageFileDataset([self.paths[i] for i in idx], self.labels[idx],
                                self.bias_index[idx], [self.sources[i] for i in idx],
                                transform, self.image_size)

    def digest(self):
        """sha256 of the file list (relative to its common folder, so the same files under
        another data root agree) with each file's label and bias label."""
        root = os.path.commonpath(self.paths) if self.paths else ""
        h = hashlib.sha256()
        for path, y, b in zip(self.paths, self.labels.tolist(), self.bias_index.tolist()):
            h.update(f"{os.path.relpath(path, root)}\t{y}\t{b}\n".encode())
        return h.hexdigest()

    @property
    def input_shape(self):
        return (3, self.image_size, self.image_size)

    def _image(self, i):
        try:
            return self.transform(load_rgb(self.paths[i]))
        except OSError as exc:
            raise BadInput(f"cannot read image {self.paths[i]} (listed at {self.sources[i]}): "
                            f"{exc}. Replace or delete the file, or pass --skip_bad_images to "
                            "skip unreadable images.") from None

    def __getitems__(self, indices):
        """The Batch of the images at indices (decoded and transformed here, in a worker)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = torch.stack([self._image(i) for i in idx.tolist()])
        return Batch({"x": x, "y": self.labels[idx], self.b: self.bias_targets[idx],
                      "bias_label": self.bias_targets[idx], "index": idx})

    def __getitem__(self, i):
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def readable(path):
    """None if the image decodes completely, else the reason it does not."""
    try:
        load_rgb(path).load()
        return None
    except OSError as exc:
        return str(exc)


def map_images(fn, paths, workers, desc):
    """fn over image files on `workers` threads (PIL decodes outside the GIL), with progress."""
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        return list(progress(pool.map(fn, paths), total=len(paths), desc=desc))


def drop_unreadable(rows, workers):
    """--skip_bad_images: decode every image once; log each unreadable one and the count."""
    reasons = map_images(readable, [r["path"] for r in rows], workers, "check images")
    bad = [(r, why) for r, why in zip(rows, reasons) if why]
    for r, why in bad:
        print(f"skipping unreadable image {r['path']} (listed at {r['source']}): {why}")
    if bad:
        print(f"skipped {len(bad)} of {len(rows)} images (--skip_bad_images)")
    return [r for r, why in zip(rows, reasons) if not why]


def check_exists(rows, what):
    missing = [r for r in rows if not os.path.isfile(r["path"])]
    if missing:
        first = missing[0]
        raise UserError(f"{first['source']}: image {first['path']} does not exist "
                        f"({len(missing)} of {len(rows)} {what} images missing). Fetch the "
                        "images (see `python fetch_data.py --help`) or fix the list.")


def make_dataset(rows, label_key, bias_key, args, train):
    return ImageFileDataset([r["path"] for r in rows], [r[label_key] for r in rows],
                            [r[bias_key] for r in rows], [r["source"] for r in rows],
                            image_transform(args.image_size, train), args.image_size)


def pick(rows, mask):
    return [r for r, keep in zip(rows, mask) if keep]


def balanced_cells(rows, cell_of, rng):
    """An equal number of rows (the smallest cell's size) from every cell."""
    cells = {}
    for r in rows:
        cells.setdefault(cell_of(r), []).append(r)
    m = min(len(c) for c in cells.values()) if cells else 0
    out = []
    for key in sorted(cells):
        group = cells[key]
        out += [group[i] for i in sorted(rng.permutation(len(group))[:m])]
    return out


# --------------------------------------------------------------------------- Dogs and Cats
def read_name_list(path):
    """Lines of a bright/dark list -> [(line number, file name)], blank lines skipped."""
    if not os.path.isfile(path):
        raise UserError(f"list file {path} is missing. Run `python fetch_data.py dogs_cats` "
                        "(or with --lists_from DIR, or --make_lists to derive lists from the "
                        "images).")
    with open(path) as fh:
        return [(k, line.strip()) for k, line in enumerate(fh, 1) if line.strip()]


def animal_of(name, where):
    kind = os.path.basename(name).split(".")[0].lower()
    if kind not in ("cat", "dog"):
        raise UserError(f"{where}: '{name}' is not a Kaggle Dogs-vs-Cats file name "
                        "(cat.N.jpg or dog.N.jpg); fix the list.")
    return CAT if kind == "cat" else DOG


def dogs_cats_rows(images_dir, lists_dir):
    """One row per listed image: path, y (0 cat, 1 dog), b (0 dark, 1 bright), source."""
    rows, seen = [], {}
    for bias, fname in ((BRIGHT, "list_bright.txt"), (DARK, "list_dark.txt")):
        list_path = os.path.join(lists_dir, fname)
        for line, name in read_name_list(list_path):
            where = f"{list_path}:{line}"
            if name in seen:
                raise UserError(f"{where}: {name} is also listed at {seen[name]}; an image is "
                                "either bright or dark. Fix one of the lists.")
            seen[name] = where
            rows.append({"path": os.path.join(images_dir, name), "y": animal_of(name, where),
                         "b": bias, "source": where})
    return rows


def in_bias_pattern(y, b, split):
    """TB1 = dark cats + bright dogs; TB2 = bright cats + dark dogs (the paper's §4.2)."""
    tb1 = (y == CAT) == (b == DARK)
    return tb1 if split == "TB1" else ~tb1


def dogs_cats_datasets(args):
    """Train on --bias_split (TB1/TB2) minus a held-out --holdout_fraction of it. Evaluate on
    'test' = every listed image outside the training pattern (the paper's protocol: train TB1,
    test on TB2's composition) and 'mixed' = an unbiased set, the same number of images from
    each (animal, colour) cell, in-pattern cells taken from the held-out part only."""
    split = args.bias_split  # TB1 or TB2, checked by arguments.validate (dataset_specs.py)
    root = dogs_cats_dir(args.data_root_base)
    rows = dogs_cats_rows(os.path.join(root, "images"), args.dogs_cats_lists
                          or os.path.join(root, "lists"))
    rows = _usable(rows, args, "listed")
    y, b = np.array([r["y"] for r in rows]), np.array([r["b"] for r in rows])
    inside = in_bias_pattern(y, b, split)
    rng = np.random.default_rng(args.data_seed)
    held = np.zeros(len(rows), bool)
    for cell in ((CAT, DARK), (CAT, BRIGHT), (DOG, DARK), (DOG, BRIGHT)):
        idx = np.flatnonzero(inside & (y == cell[0]) & (b == cell[1]))
        held[rng.permutation(idx)[:int(round(args.holdout_fraction * len(idx)))]] = True
    sets = {"train": pick(rows, inside & ~held), "test": pick(rows, ~inside)}
    if held.any():  # --holdout_fraction 0: no unbiased set
        sets[MIXED] = balanced_cells(pick(rows, held | ~inside), lambda r: (r["y"], r["b"]),
                                       rng)
    return _limit({name: make_dataset(part, "y", "b", args, name == "train")
                   for name, part in sets.items()}, args)


def brightness(path, size=64):
    """Mean luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B, in 0..255) of the image, read at
    about size x size: the statistic --make_lists ranks images by."""
    from PIL import Image
    im = load_rgb(path, draft=(size, size)).resize((size, size), Image.BILINEAR)
    rgb = np.asarray(im, np.float64)
    return float((rgb @ np.array([0.299, 0.587, 0.114])).mean())


def split_by_brightness(values):
    """Indices of the darkest and brightest images, in the proportions of the authors' lists
    (8,400 dark and 8,385 bright of 25,000: the exact sizes on Kaggle's training set); the
    middle third stays unlisted, as in theirs."""
    order = np.argsort(np.asarray(values), kind="stable")
    n = len(order)
    n_dark = int(round(n * AUTHORS_DARK / KAGGLE_TRAIN))
    n_bright = int(round(n * AUTHORS_BRIGHT / KAGGLE_TRAIN))
    return np.sort(order[:n_dark]), np.sort(order[n - n_bright:])


# --------------------------------------------------------------------------- IMDB-Face
MANIFEST_COLUMNS = ("path", "gender", "age")


def age_bin(age):
    """Age in years -> one of the 12 classes of AGE_EDGES."""
    return int(np.clip(np.searchsorted(AGE_EDGES, age, side="right") - 1, 0, len(AGE_EDGES) - 2))


def read_manifest(path, images_dir):
    """A CSV with columns path, gender (0 female, 1 male), age (years) -> rows; a relative
    path is under images_dir. Errors name the file and line."""
    if not os.path.isfile(path):
        raise UserError(f"manifest {path} is missing. Run `python fetch_data.py imdb_face` "
                        "or write one (CSV columns: path,gender,age).")
    rows = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}:1: missing column(s) {', '.join(missing)}; the header must "
                            f"name {','.join(MANIFEST_COLUMNS)}.")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            try:
                age = float(row["age"])
            except (TypeError, ValueError):
                age = float("nan")
            if not np.isfinite(age) or age < 0:
                raise UserError(f"{where}: age {row['age']!r} is not a number of years; fix "
                                "or remove the line.")
            if row["gender"] not in ("0", "1"):
                raise UserError(f"{where}: gender {row['gender']!r} must be 0 (female) or 1 "
                                "(male); fix or remove the line.")
            rows.append({"path": os.path.join(images_dir, row["path"]), "source": where,
                         "gender": int(row["gender"]), "age": age, "age_bin": age_bin(age)})
    return rows


def in_age_gender_pattern(gender, age, split):
    """EB1 = women aged 0-29 + men aged 40+; EB2 = women 40+ + men 0-29
    (docs/references.md §1)."""
    young, old = age < 30, age >= 40
    first, second = (FEMALE, MALE) if split == "EB1" else (MALE, FEMALE)
    return ((gender == first) & young) | ((gender == second) & old)


IMDB_TASKS = {"gender": ("gender", "age_bin"), "age": ("age_bin", "gender")}  # (y, b)


def imdb_face_datasets(args):
    """--imdb_task gender (b = age class) or age (y = age class, b = gender), trained on the
    --bias_split (EB1/EB2) part of manifests/train.csv. Evaluated on 'test' = an unbiased set
    from manifests/test.csv (in every age class, as many women as men) and 'opposite' = the
    test images in the other split's pattern."""
    split = args.bias_split  # EB1 or EB2, checked by arguments.validate (dataset_specs.py)
    root = imdb_dir(args.data_root_base)
    manifests, images = os.path.join(root, "manifests"), os.path.join(root, "images")
    train_rows = read_manifest(os.path.join(manifests, "train.csv"), images)
    test_rows = read_manifest(os.path.join(manifests, "test.csv"), images)
    train_rows = _usable(pick(train_rows, _imdb_pattern(train_rows, split)), args, "training")
    test_rows = _usable(test_rows, args, "test")
    rng = np.random.default_rng(args.data_seed)
    other = "EB2" if split == "EB1" else "EB1"
    y_key, b_key = IMDB_TASKS[args.imdb_task]
    sets = {"train": train_rows,
            "test": balanced_cells(test_rows, lambda r: (r["age_bin"], r["gender"]), rng),
            OPPOSITE: pick(test_rows, _imdb_pattern(test_rows, other))}
    return _limit({name: make_dataset(rows, y_key, b_key, args, name == "train")
                   for name, rows in sets.items()}, args)


def _imdb_pattern(rows, split):
    return in_age_gender_pattern(np.array([r["gender"] for r in rows], np.int64),
                                 np.array([r["age"] for r in rows]), split)


# --------------------------------------------------------------------------- shared
def _usable(rows, args, what):
    """Missing files stop the run; unreadable ones too, unless --skip_bad_images."""
    check_exists(rows, what)
    return drop_unreadable(rows, args.num_workers) if args.skip_bad_images else rows


def _limit(sets, args):
    """--max_train_samples / --max_test_samples: a seeded subset of each set (smoke runs)."""
    rng = np.random.default_rng(args.data_seed)
    for name, ds in sets.items():
        limit = args.max_train_samples if name == "train" else args.max_test_samples
        if limit and limit < len(ds):
            keep = np.sort(rng.permutation(len(ds))[:limit])
            sets[name] = ImageFileDataset([ds.paths[i] for i in keep], ds.labels[keep],
                                          ds.bias_index[keep], [ds.sources[i] for i in keep],
                                          ds.transform, ds.image_size)
    for name, ds in sets.items():
        if len(ds) == 0:
            raise UserError(f"the {name} set of {args.dataset_name} ({args.bias_split}) is "
                            "empty; check the lists/manifests and the images they name.")
    return sets
