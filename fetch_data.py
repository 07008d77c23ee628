"""Fetch the datasets: `python fetch_data.py {mnist,cmnist_official} [--data_root_base DIR]`.

Downloads use the real sources (torchvision for MNIST, gdown for the authors' Google Drive
files); where the network is unreachable each command says what to place by hand, and exits 1.
"""
import argparse
import glob
import gzip
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile

from data_handler import MNIST_FILES, find_idx, mnist_raw_dir, read_idx
from utils import UserError

# md5 of the *decompressed* idx files, so any re-compression of the .gz files still verifies.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
CMNIST_DRIVE_ID = "1NSv4RCSHjcHois3dXjYw_PaLIoVlLgXu"  # PAPERS.md §1, all variances
CMNIST_VARS = ("0.020", "0.025", "0.030", "0.035", "0.040", "0.045", "0.050")


def _read_bytes(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        return fh.read()


def import_mnist(src, data_root_base):
    """Copy the four MNIST idx files (gzip or raw) from src after checking their md5."""
    dest = mnist_raw_dir(data_root_base)
    os.makedirs(dest, exist_ok=True)
    for stem in MNIST_FILES.values():
        path = find_idx(src, stem)
        if path is None:
            raise UserError(f"{os.path.join(src, stem)}[.gz] is missing; --from needs a folder "
                            f"holding all four MNIST idx files ({', '.join(MNIST_FILES.values())}).")
        data = _read_bytes(path)
        digest = hashlib.md5(data).hexdigest()
        if digest != MNIST_MD5[stem]:
            raise UserError(f"{path} has md5 {digest} (decompressed), expected {MNIST_MD5[stem]}: "
                            "the file is corrupt or not MNIST; fetch a fresh copy.")
        tmp = os.path.join(dest, f".{stem}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, os.path.join(dest, stem))
    print(f"MNIST imported from {src} into {dest} (checksums verified)")


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


def _extract_npys(archive, dest):
    """The Drive file may be an archive of the .npy files or one .npy; place .npy files in dest."""
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
        found = glob.glob(os.path.join(tmpdir, "**", "mnist_10color_jitter_var_*.npy"),
                          recursive=True)
        for path in found:
            os.replace(path, os.path.join(dest, os.path.basename(path)))
        return [os.path.basename(p) for p in found]
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def download_cmnist_official(data_root_base):
    """The authors' released Colored-MNIST files from Google Drive, through gdown."""
    names = ", ".join(f"mnist_10color_jitter_var_{v}.npy" for v in CMNIST_VARS)
    hint = (f"download https://drive.google.com/file/d/{CMNIST_DRIVE_ID} by hand and place "
            f"the files ({names}) in {data_root_base}/")
    try:
        import gdown
    except ImportError:
        raise UserError(f"gdown is not installed (pip install gdown); or {hint}")
    os.makedirs(data_root_base, exist_ok=True)
    archive = os.path.join(data_root_base, "cmnist_official.download")
    try:
        got = gdown.download(id=CMNIST_DRIVE_ID, output=archive, quiet=False)
    except Exception as exc:
        got, hint = None, f"{exc}; {hint}"
    if not got or not os.path.exists(archive):
        raise UserError(f"could not download the official Colored MNIST (offline?): {hint}")
    placed = _extract_npys(archive, data_root_base)
    os.remove(archive)
    if not placed:
        raise UserError(f"the download held no mnist_10color_jitter_var_*.npy; {hint}")
    print(f"placed {', '.join(sorted(placed))} in {data_root_base}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("dataset", choices=("mnist", "cmnist_official", "cifar10"))
    p.add_argument("--data_root_base", default="./data")
    p.add_argument("--from", dest="src", default=None,
                   help="mnist: import the idx files from this folder instead of downloading")
    args = p.parse_args(argv)
    try:
        if args.dataset == "mnist":
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


if __name__ == "__main__":
    main()
