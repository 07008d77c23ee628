"""Fetch the datasets: `python fetch_data.py {mnist,cmnist_official,cifar10,dogs_cats,imdb_face}`.

Downloads use the real sources (torchvision for MNIST and CIFAR-10, gdown for the authors'
Google Drive files, the Kaggle API for Dogs vs. Cats, the authors' GitHub repository for the
bright/dark lists); where the network is unreachable each command says what to place by hand,
and exits 1.
"""
import argparse
import glob
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile

import numpy as np
import requests

import image_datasets as imd
import safe_files
from colored_mnist import MNIST_FILES, find_idx, mnist_raw_dir, read_bytes, read_idx
from utils import UserError, progress

# md5 of the *decompressed* idx files, so any re-compression of the .gz files still verifies.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
CMNIST_DRIVE_ID = "1NSv4RCSHjcHois3dXjYw_PaLIoVlLgXu"  # docs/references.md §1: all variances
CMNIST_VARS = ("0.020", "0.025", "0.030", "0.035", "0.040", "0.045", "0.050")


def import_mnist(src, data_root_base):
    """Copy the four MNIST idx files (gzip or raw) from src after checking their md5 (all four
    are checked before anything is written)."""
    dest = mnist_raw_dir(data_root_base)
    files = {}
    for stem in MNIST_FILES.values():
        path = find_idx(src, stem)
        if path is None:
            raise UserError(f"{os.path.join(src, stem)}[.gz] is missing; --from needs a folder "
                            f"holding all four MNIST idx files ({', '.join(MNIST_FILES.values())}).")
        data = read_bytes(path)
        digest = hashlib.md5(data).hexdigest()
        if digest != MNIST_MD5[stem]:
            raise UserError(f"{path} has md5 {digest} (decompressed), expected {MNIST_MD5[stem]}: "
                            "the file is corrupt or not MNIST; fetch a fresh copy.")
        files[stem] = data
    os.makedirs(dest, exist_ok=True)
    for stem, data in files.items():
        # a unique temp name: two runs importing at once (long_runs.py's two plans) both succeed
        safe_files.write_bytes(os.path.join(dest, stem), data, root=dest)
    print(f"MNIST imported from {src} into {dest} (checksums verified)")


def have_mnist(data_root_base):
    """Whether the four MNIST idx files (gzip or raw) are in data_root_base/MNIST/raw."""
    return all(find_idx(mnist_raw_dir(data_root_base), stem) for stem in MNIST_FILES.values())


def download_mnist(data_root_base):
    """torchvision's downloader, which lays files out as <root>/MNIST/raw."""
    from torchvision.datasets import MNIST
    try:
        for train in (True, False):
            MNIST(data_root_base, train=train, download=True)
    except Exception as exc:  # URLError, HTTPError, RuntimeError on md5 failure ...
        raise UserError(f"could not download MNIST ({exc}). If this machine is offline, copy "
                        "the four idx files (train-images-idx3-ubyte.gz, ...) into a folder and "
                        "run `python fetch_data.py mnist --from DIR`.")
    for stem in MNIST_FILES.values():
        read_idx(find_idx(mnist_raw_dir(data_root_base), stem))
    print(f"MNIST downloaded into {mnist_raw_dir(data_root_base)}")


def download_cifar10(data_root_base):
    """torchvision's CIFAR-10 downloader (python batches in <root>/cifar-10-batches-py)."""
    from torchvision.datasets import CIFAR10
    try:
        CIFAR10(data_root_base, train=True, download=True)
    except Exception as exc:
        raise UserError(f"could not download CIFAR-10 ({exc}). If this machine is offline, "
                        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/"
                        f"cifar.html and unpack it in {data_root_base}/.")
    print(f"CIFAR-10 in {os.path.join(data_root_base, 'cifar-10-batches-py')}")


def _extract_npys(archive, dest, pattern="mnist_10color_jitter_var_*.npy"):
    """The Drive file may be an archive of .npy files or one .npy; place those matching
    pattern in dest."""
    tmpdir = tempfile.mkdtemp(dir=dest)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmpdir)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(tmpdir, filter="data")
        else:
            shutil.copy(archive, tmpdir)
        found = glob.glob(os.path.join(tmpdir, "**", pattern), recursive=True)
        for path in found:
            os.replace(path, os.path.join(dest, os.path.basename(path)))
        return [os.path.basename(p) for p in found]
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def gdown_file(file_id, output, what, hint):
    """One Google Drive file through gdown; offline (or no gdown) -> a UserError with hint."""
    try:
        import gdown
    except ImportError:
        raise UserError(f"gdown is not installed (pip install gdown); or {hint}")
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    try:
        got = gdown.download(id=file_id, output=output, quiet=False)
    except Exception as exc:
        got, hint = None, f"{exc}; {hint}"
    if not got or not os.path.exists(output):
        raise UserError(f"could not download {what} (offline?): {hint}")


def download_cmnist_official(data_root_base):
    """The authors' released Colored-MNIST files from Google Drive, through gdown."""
    names = ", ".join(f"mnist_10color_jitter_var_{v}.npy" for v in CMNIST_VARS)
    hint = (f"download https://drive.google.com/file/d/{CMNIST_DRIVE_ID} by hand and place "
            f"the files ({names}) in {data_root_base}/")
    archive = os.path.join(data_root_base, "cmnist_official.download")
    gdown_file(CMNIST_DRIVE_ID, archive, "the official Colored MNIST", hint)
    placed = _extract_npys(archive, data_root_base)
    os.remove(archive)
    if not placed:
        raise UserError(f"the download held no mnist_10color_jitter_var_*.npy; {hint}")
    print(f"placed {', '.join(sorted(placed))} in {data_root_base}")


# --------------------------------------------------------------------------- Dogs and Cats
KAGGLE_COMPETITION = "dogs-vs-cats-redux-kernels-edition"
LISTS_URL = ("https://raw.githubusercontent.com/feidfoe/learning-not-to-learn/master/"
             "dataset/dogs_and_cats/{}")
LIST_FILES = ("list_bright.txt", "list_dark.txt")


def kaggle_api():
    """The Kaggle API, authenticated by its own credential lookup (KAGGLE_API_TOKEN,
    ~/.kaggle/access_token, KAGGLE_USERNAME/KAGGLE_KEY, kaggle.json under KAGGLE_CONFIG_DIR or
    ~/.kaggle, or a cached `kaggle auth login`). Its authenticate() prints its own help and
    exits when it finds nothing: that becomes a UserError with our steps."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:
        raise UserError(f"the Kaggle API is not installed ({exc}). {KAGGLE_HOW}")
    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit:
        raise UserError(f"no Kaggle API token found (~/.kaggle/kaggle.json). {KAGGLE_HOW}") \
            from None
    return api


KAGGLE_HOW = (f"1) `make setup` installs the Kaggle API (requirements.txt); 2) on "
              "https://www.kaggle.com/settings choose 'Create New Token' and save kaggle.json as "
              "~/.kaggle/kaggle.json (chmod 600), or export KAGGLE_API_TOKEN; 3) accept the rules "
              f"at https://www.kaggle.com/c/{KAGGLE_COMPETITION}/rules; then rerun. Or download "
              "train.zip from that page by hand and pass --zip_from PATH.")


def kaggle_download(dest):
    """The competition's files through the Kaggle API -> path of the downloaded zip."""
    api = kaggle_api()
    os.makedirs(dest, exist_ok=True)
    try:
        api.competition_download_files(KAGGLE_COMPETITION, path=dest, quiet=False)
    except Exception as exc:  # the API raises its HTTP client's errors, not one type
        raise UserError(f"the Kaggle download failed ({exc}; offline, or the rules not "
                        f"accepted?). {KAGGLE_HOW}") from None
    zips = glob.glob(os.path.join(dest, f"{KAGGLE_COMPETITION}*.zip"))
    if not zips:
        raise UserError(f"the Kaggle download left no {KAGGLE_COMPETITION}*.zip in {dest}. "
                        f"{KAGGLE_HOW}")
    return zips[0]


def extract_dogs_cats(archive, images_dir):
    """Kaggle's zip (which holds train.zip) or train.zip itself -> images_dir/{cat,dog}.N.jpg."""
    os.makedirs(images_dir, exist_ok=True)
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        inner = [n for n in names if os.path.basename(n) == "train.zip"]
        if inner:
            with z.open(inner[0]) as fh, tempfile.TemporaryDirectory(dir=images_dir) as tmp:
                path = os.path.join(tmp, "train.zip")
                with open(path, "wb") as out:
                    shutil.copyfileobj(fh, out)
                return extract_dogs_cats(path, images_dir)
        jpgs = [n for n in names if n.lower().endswith(".jpg")]
        if not jpgs:
            raise UserError(f"{archive} holds no .jpg images nor a train.zip; pass Kaggle's "
                            f"{KAGGLE_COMPETITION} download or its train.zip.")
        for n in progress(jpgs, desc="extract"):
            with z.open(n) as src, open(os.path.join(images_dir, os.path.basename(n)), "wb") as dst:
                shutil.copyfileobj(src, dst)
    return len(jpgs)


def fetch_lists(lists_dir, lists_from):
    """The authors' bright/dark lists: copied from lists_from, else downloaded from their
    repository."""
    os.makedirs(lists_dir, exist_ok=True)
    for name in LIST_FILES:
        dest = os.path.join(lists_dir, name)
        if lists_from:
            src = os.path.join(lists_from, name)
            if not os.path.isfile(src):
                raise UserError(f"{src} is missing; --lists_from needs a folder holding "
                                f"{' and '.join(LIST_FILES)}.")
            data = safe_files.read_bytes(src, os.path.dirname(os.path.abspath(src)))
        else:
            try:  # requests: a timeout (urlretrieve can hang offline) and HTTP errors raised
                reply = requests.get(LISTS_URL.format(name), timeout=30)
                reply.raise_for_status()
                data = reply.content
            except requests.RequestException as exc:
                raise UserError(f"could not download {LISTS_URL.format(name)} ({exc}). Offline: "
                                "pass --lists_from DIR (a copy of the authors' lists), or "
                                "--make_lists to derive lists from the images.")
        safe_files.write_bytes(dest, data, root=lists_dir)
    print(f"bright/dark lists in {lists_dir}")


def write_list(path, names):
    safe_files.write_text(path, "".join(f"{n}\n" for n in names),
                          root=os.path.dirname(os.path.abspath(path)))


def make_lists(images_dir, out_dir, workers):
    """Bright/dark lists from the images' mean luma (image_datasets.brightness), the darkest
    and brightest in the proportions of the authors' lists -> (bright names, dark names)."""
    names = sorted(n for n in os.listdir(images_dir) if n.lower().endswith((".jpg", ".jpeg",
                                                                               ".png")))
    if not names:
        raise UserError(f"no images in {images_dir}; fetch them first (python fetch_data.py "
                        "dogs_cats).")
    paths = [os.path.join(images_dir, n) for n in names]
    values = imd.map_images(imd.brightness, paths, workers, "brightness")
    dark, bright = imd.split_by_brightness(values)
    os.makedirs(out_dir, exist_ok=True)
    bright_names, dark_names = [names[i] for i in bright], [names[i] for i in dark]
    write_list(os.path.join(out_dir, "list_bright.txt"), bright_names)
    write_list(os.path.join(out_dir, "list_dark.txt"), dark_names)
    values = np.asarray(values)
    print(f"derived lists in {out_dir}: {len(bright_names)} bright (mean luma >= "
          f"{values[bright].min(initial=255):.1f}), {len(dark_names)} dark (<= "
          f"{values[dark].max(initial=0):.1f}) of {len(names)} images, in the authors' "
          "proportions")
    return bright_names, dark_names


def list_agreement(ours, theirs):
    """How far derived lists agree with the authors': per their class, the share we put in the
    same class, in the other one, and leave unlisted."""
    (ob, od), (tb, td) = (set(ours[0]), set(ours[1])), (set(theirs[0]), set(theirs[1]))
    out = {}
    for label, same, other in (("bright", ob, od), ("dark", od, ob)):
        ref = tb if label == "bright" else td
        n = max(len(ref), 1)
        out[label] = {"n": len(ref), "same": len(ref & same) / n, "other": len(ref & other) / n,
                      "unlisted": len(ref - same - other) / n}
    return out


def fetch_dogs_cats(args):
    root = imd.dogs_cats_dir(args.data_root_base)
    images, lists = os.path.join(root, "images"), os.path.join(root, "lists")
    if os.path.isdir(images) and any(n.endswith(".jpg") for n in os.listdir(images)):
        print(f"images already in {images}")
    else:
        archive = args.zip_from or kaggle_download(root)
        print(f"extracted {extract_dogs_cats(archive, images)} images into {images}")
    if args.make_lists:
        derived = os.path.join(root, "lists_derived")
        ours = make_lists(images, derived, args.workers)
        ref = args.lists_from or lists
        if all(os.path.isfile(os.path.join(ref, n)) for n in LIST_FILES):
            theirs = [[name for _, name in imd.read_name_list(os.path.join(ref, n))]
                      for n in LIST_FILES]
            for label, a in list_agreement(ours, theirs).items():
                print(f"agreement with {ref}: of their {a['n']} {label} images we list "
                      f"{a['same']:.1%} as {label}, {a['other']:.1%} as the opposite, "
                      f"{a['unlisted']:.1%} not at all")
        print(f"train on them with --dogs_cats_lists {derived}")
    else:
        fetch_lists(lists, args.lists_from)


# --------------------------------------------------------------------------- IMDB-Face
IMDB_DRIVE_ID = "1ZFZ2tUjq3BBRw3rcXB0LkBvaqKD4_8WK"  # docs/references.md §1
IMDB_CROPS_URL = "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/"


def _load_pickled_dict(path):
    return np.load(path, encoding="latin1", allow_pickle=True).item()


def _text(key):
    return key.decode("utf-8") if isinstance(key, bytes) else str(key)


def write_imdb_manifests(meta_dir, manifests_dir):
    """The authors' imdb_age_gender.npy ({path: {'age', 'gender'}}) and imdb_split.npy
    ({'train_list', 'test_list'}) -> manifests/{train,test}.csv (path, gender, age)."""
    labels = {_text(k): v for k, v in
              _load_pickled_dict(os.path.join(meta_dir, "imdb_age_gender.npy")).items()}
    split = _load_pickled_dict(os.path.join(meta_dir, "imdb_split.npy"))
    os.makedirs(manifests_dir, exist_ok=True)
    for name in ("train", "test"):
        rows, dropped = [], 0
        for path in map(_text, split[f"{name}_list"]):
            info = labels.get(path)
            try:
                age, gender = float(info["age"]), int(info["gender"])
            except (TypeError, KeyError, ValueError):
                dropped += 1
                continue
            if not np.isfinite(age) or gender not in (0, 1):
                dropped += 1
                continue
            rows.append(f"{path},{gender},{age:g}\n")
        out = os.path.join(manifests_dir, f"{name}.csv")
        safe_files.write_text(out, "path,gender,age\n" + "".join(rows), root=manifests_dir)
        print(f"{out}: {len(rows)} images" + (f" ({dropped} without a usable age/gender "
                                              "left out)" if dropped else ""))


def fetch_imdb_face(args):
    root = imd.imdb_dir(args.data_root_base)
    meta = os.path.join(root, "metadata")
    os.makedirs(meta, exist_ok=True)
    needed = ("imdb_age_gender.npy", "imdb_split.npy")
    if args.metadata_from:
        for n in needed:
            shutil.copy(os.path.join(args.metadata_from, n), os.path.join(meta, n))
    elif not all(os.path.isfile(os.path.join(meta, n)) for n in needed):
        hint = (f"download https://drive.google.com/file/d/{IMDB_DRIVE_ID} by hand and pass "
                f"--metadata_from DIR (the folder holding {' and '.join(needed)})")
        archive = os.path.join(meta, "imdb_metadata.download")
        gdown_file(IMDB_DRIVE_ID, archive, "the authors' IMDB-Face metadata", hint)
        placed = _extract_npys(archive, meta, "imdb_*.npy")
        os.remove(archive)
        if not set(needed) <= set(placed):
            raise UserError(f"the download held {placed or 'no .npy files'}; {hint}")
    write_imdb_manifests(meta, os.path.join(root, "manifests"))
    images = os.path.join(root, "images")
    if args.images_from:
        if os.path.islink(images):
            os.remove(images)
        if os.path.exists(images):
            raise UserError(f"{images} already holds images; move it away to link "
                            f"{args.images_from} instead, or drop --images_from.")
        os.symlink(os.path.abspath(args.images_from), images)
        print(f"{images} -> {os.path.abspath(args.images_from)}")
    if not os.path.isdir(images):
        print(f"Now the face crops: download imdb_crop.tar ('faces only') from {IMDB_CROPS_URL}, "
              f"extract it and either move its contents so that {images}/01/... exists, or "
              "rerun with --images_from DIR/imdb_crop.")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("dataset", choices=("mnist", "cmnist_official", "cifar10", "dogs_cats",
                                       "imdb_face"))
    p.add_argument("--data_root_base", default="./data")
    p.add_argument("--from", dest="src", default=None,
                   help="mnist: import the idx files from this folder instead of downloading")
    p.add_argument("--if_missing", action="store_true",
                   help="mnist: do nothing when the four idx files are already there (what "
                        "the run scripts and the long-run driver call before training)")
    p.add_argument("--zip_from", default=None,
                   help="dogs_cats: Kaggle's zip (or its train.zip) downloaded by hand")
    p.add_argument("--lists_from", default=None,
                   help="dogs_cats: folder with the authors' list_bright.txt and list_dark.txt")
    p.add_argument("--make_lists", action="store_true",
                   help="dogs_cats: derive bright/dark lists from the images' mean luma into "
                        "dogs_vs_cats/lists_derived (compared with the authors' when present)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="dogs_cats --make_lists: threads reading images")
    p.add_argument("--metadata_from", default=None,
                   help="imdb_face: folder with imdb_age_gender.npy and imdb_split.npy")
    p.add_argument("--images_from", default=None,
                   help="imdb_face: folder of the IMDB-WIKI face crops (linked as "
                        "imdb_face/images)")
    args = p.parse_args(argv)
    try:
        if args.dataset == "dogs_cats":
            fetch_dogs_cats(args)
        elif args.dataset == "imdb_face":
            fetch_imdb_face(args)
        elif args.dataset == "mnist":
            if args.if_missing and have_mnist(args.data_root_base):
                return
            if args.src:
                import_mnist(args.src, args.data_root_base)
            else:
                download_mnist(args.data_root_base)
        elif args.dataset == "cifar10":
            download_cifar10(args.data_root_base)
        else:
            download_cmnist_official(args.data_root_base)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:  # a read-only or full data folder
        print(f"error: cannot write {exc.filename or args.data_root_base}: {exc.strerror}; pass "
              "a writable --data_root_base", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); files already in place are complete, run the same "
              "command again", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
