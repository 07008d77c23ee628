"""Convert a checkpoint of releases before 2026-11 into the current format, which loads with
torch.load(weights_only=True) (tensors and plain values only).

    python scripts/convert_checkpoint.py outputs/RUN/checkpoints/last.pth

The old format kept numpy's random state as a numpy array. It is read here with
weights_only=True and only the few numpy classes that state needs allowed
(checkpoints.old_format_globals): no other class can be built and no code in the file runs.
A file that holds anything else (made elsewhere, or damaged) is refused in one line; a full
unpickle, which runs whatever code a file carries, happens only with --trust-full-unpickle,
for a file you made yourself or trust who did. The original is kept beside the new file as
<name>.pre2026-11 (never overwritten); the new file is checked to load with weights_only=True
and to hold the same tensors before it takes the original's name.
"""
import argparse
import io
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checkpoints import load_old_format, what_it_holds  # noqa: E402
from errors import UserError  # noqa: E402
from safe_files import save_torch  # noqa: E402

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


TRUST_FLAG = "--trust-full-unpickle"


def read_old(path, trust):
    """The old checkpoint at path: read safely (load_old_format), else with a full unpickle
    when trusted, else UserError with one line saying what the file is and what the flag
    would mean."""
    kind = what_it_holds(path)
    if kind == "old format":
        return load_old_format(path)
    if kind == "corrupt":  # no unpickle can read it: the flag would not help
        raise UserError(f"{path} is not a PyTorch checkpoint (a text file, a truncated or "
                        "corrupt one): nothing can convert it and nothing in it ran; use "
                        "another copy of the checkpoint")
    if not trust:
        raise UserError(
            f"{path} holds Python objects that this tool's old checkpoints never held: it was "
            "not converted and nothing in it ran. Converting it would need a full unpickle, "
            "which runs any code the file carries with your rights; only if you made this "
            f"file yourself or trust who did, pass {TRUST_FLAG}.")
    print(f"{path}: full unpickle ({TRUST_FLAG}): any code the file carries runs now")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a foreign pickle fails in many ways: one line, not a trace
        raise UserError(f"{path} could not be unpickled either ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120] if str(exc) else 'no detail'}); "
                        "nothing was converted") from None


def convert_file(path, trust):
    """Convert one file in place (the original kept as <name>.pre2026-11); one line per file."""
    backup = path + SUFFIX
    if os.path.islink(path) or not os.path.isfile(path):
        raise UserError(f"{path} is not a plain file; pass a checkpoint (.pth)")
    if os.path.lexists(backup):
        raise UserError(f"{backup} exists already (converted before?); move it aside first")
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        print(f"{path}: already in the current format; left as it is")
        return
    except Exception:  # old format, foreign or corrupt: read_old tells which
        pass
    ckpt = read_old(path, trust)
    if not isinstance(ckpt, dict) or "nets" not in ckpt:
        raise UserError(f"{path} is not a checkpoint of this tool (no 'nets' entry); nothing "
                         "was converted")
    new = convert(ckpt)
    buffer = io.BytesIO()
    torch.save(new, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=True)  # proves the new file is safe to load
    for net, state in ckpt["nets"].items():
        assert all(torch.equal(state[k], again["nets"][net][k]) for k in state), net
    os.link(path, backup)  # the original stays, under the backup name
    save_torch(new, path)
    print(f"{path}: converted (original kept as {backup})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", help="checkpoint files (.pth) to convert in place")
    p.add_argument(TRUST_FLAG, dest="trust", action="store_true",
                   help="read a file that is not this tool's old format with a full unpickle, "
                        "which runs any code it carries: only for files you trust")
    opts = p.parse_args(argv)
    for path in opts.paths:
        try:
            convert_file(path, opts.trust)
        except UserError as err:  # one line, exit 2; the file and its neighbours unchanged
            p.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
