"""Convert a checkpoint of releases before 2026-11 into the current format, which loads with
torch.load(weights_only=True) (tensors and plain values only).

    python scripts/convert_checkpoint.py outputs/RUN/checkpoints/last.pth

The old format kept numpy's random state as a numpy array, which only a full unpickle reads,
and a full unpickle runs whatever code a file carries. So this script is the one place that
unpickles a checkpoint, and only when you run it: convert only files whose origin you trust.
The original is kept beside the new file as <name>.pre2026-11 (never overwritten); the new
file is checked to load with weights_only=True and to hold the same tensors before it takes
the original's name.
"""
import argparse
import io
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from utils import atomic_torch_save  # noqa: E402

SUFFIX = ".pre2026-11"
# Colored MNIST before 2026-11 was painted by stroke intensity with the p1 palette; its
# checkpoints do not say so, because the flags did not exist yet
LEGACY_DATA = {"cmnist_paint": "intensity", "cmnist_palette": "p1"}


def plain(value):
    """value with numpy arrays and scalars turned into tensors and Python numbers."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.astype(np.int64) if value.dtype == np.uint32 else value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def convert(ckpt):
    """The checkpoint in the current format (numpy's RNG state as a dict of plain values)."""
    out = plain({k: v for k, v in ckpt.items() if k != "rng"})
    rng = dict(ckpt.get("rng", {}))
    if isinstance(rng.get("numpy"), tuple):
        name, keys, pos, has_gauss, cached = rng["numpy"]
        rng["numpy"] = {"name": name, "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                        "pos": int(pos), "has_gauss": int(has_gauss),
                        "cached_gaussian": float(cached)}
    out["rng"] = plain(rng)
    args = out.get("args")
    if isinstance(args, dict) and args.get("dataset_name") == "ColoredMNIST":
        for key, value in LEGACY_DATA.items():  # flags added later: what such a run used
            args.setdefault(key, value)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", help="checkpoint files (.pth) to convert in place")
    opts = p.parse_args(argv)
    for path in opts.paths:
        backup = path + SUFFIX
        if not os.path.isfile(path):
            p.error(f"{path} is not a file")
        if os.path.exists(backup):
            p.error(f"{backup} exists already (converted before?); move it aside first")
        try:
            torch.load(path, map_location="cpu", weights_only=True)
            print(f"{path}: already in the current format; left as it is")
            continue
        except Exception:
            pass
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # the trusted unpickle
        if not isinstance(ckpt, dict) or "nets" not in ckpt:
            p.error(f"{path} is not a checkpoint of this tool (no 'nets' entry)")
        new = convert(ckpt)
        buffer = io.BytesIO()
        torch.save(new, buffer)
        buffer.seek(0)
        again = torch.load(buffer, weights_only=True)  # proves the new file is safe to load
        for net, state in ckpt["nets"].items():
            assert all(torch.equal(state[k], again["nets"][net][k]) for k in state), net
        os.link(path, backup)  # the original stays, under the backup name
        atomic_torch_save(new, path)
        print(f"{path}: converted (original kept as {backup})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
