"""The ledger: the committed records of finished runs (results/<plan>/<run>/), and the one way a
record enters it, for every program that adds one (plan_runs.Lifecycle when a long run finishes,
scripts/results.py ledger, the GPU lease's collect).

A record is a run's small files (LEDGER_FILES), never weights. It is copied from plain files
only (a link's target never travels into a commit) and never overwrites what the ledger holds,
but for a log the run has since extended. The checkout's own path becomes CHECKOUT, so a
record says where under the checkout a run wrote, not on which machine.
"""
import csv
import os
import re

from errors import UserError
from safe_files import (ARGS, METRICS, PACE, PROBE, RESULTS, RUN_LOG, read_bytes,
                        write_bytes)

# a finished run's small record (probe.json once `main.py --mode probe` ran on it, pace.json
# where the long-run driver trained it; run.log, every piece's lines: where and with what code
# each ran); never weights
LEDGER_FILES = (RESULTS, METRICS, ARGS, PROBE, PACE, RUN_LOG)
APPENDED = ("run.log",)  # a record's file that grows after the run ends (its probe's lines)
ROOT = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = "<checkout>"
PAPER_CSV = os.path.join(ROOT, "results", "paper_numbers.csv")  # published numbers, beside us


def portable(data, root=ROOT):
    """data (bytes) with the checkout's absolute path written as CHECKOUT (a path that merely
    starts with the same letters, /work/main2, is left alone)."""
    return re.sub(re.escape(root.encode()) + rb'(?=[/"\s]|$)', CHECKOUT.encode(), data)


def add_record(src, dest, src_root, dest_root):
    """Copy the record in folder src into the ledger folder dest: (added, same, differ), the
    names written, found identical, and kept because the ledger's copy differs. A file the
    record lacks is skipped; a damaged or linked one stops the copy (SystemExit, one line)."""
    added, same, differ = [], [], []
    for name in LEDGER_FILES:
        try:
            ours = portable(read_bytes(os.path.join(src, name), src_root))
        except FileNotFoundError:
            continue
        except UserError as err:
            raise SystemExit(f"{err} (refused: nothing more was copied into {dest})")
        target = os.path.join(dest, name)
        if os.path.lexists(target):
            try:
                theirs = read_bytes(target, dest_root)
            except (FileNotFoundError, UserError):
                theirs = None
            if theirs == ours:
                same.append(name)
                continue
            if not (name in APPENDED and theirs is not None and ours.startswith(theirs)):
                differ.append(name)  # the same log, longer, is replaced: nothing is lost
                continue
        write_bytes(target, ours, dest_root)
        added.append(name)
    return added, same, differ


def paper_numbers(path=PAPER_CSV):
    """The published numbers the tables set beside ours: rows of dataset, variant, color_var
    (text, as the papers print it; '' where none), metric, value (a float) and source."""
    with open(path, newline="") as fh:
        return [{**row, "color_var": row["color_var"] or "", "value": float(row["value"])}
                for row in csv.DictReader(fh)]


def mean_std(mean, std, n=None, digits=3):
    """A table cell as every table here writes it: '0.850 ± 0.071 (n = 2)' (the sample std
    over seeds; none for one run, or when std is None or NaN), '—' for no value."""
    if mean is None or mean != mean:
        return "—"
    text = f"{mean:.{digits}f}" + ("" if std is None or std != std or n == 1
                                   else f" ± {std:.{digits}f}")
    return text + (f" (n = {n})" if n is not None else "")
