"""Summarise finished runs: mean ± std over seeds of their final-epoch results.json.

    python scripts/summarize.py --benchmark irm_cmnist \
        --row ERM='outputs/irm_cmnist/erm_r*' --row IRM='outputs/irm_cmnist/irm_r*'

prints a markdown table (one row per method, the paper's numbers beside ours) and, with
--final LABEL, a last line 'LABEL test_acc=<mean>'.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

# Published numbers (docs/references.md). IRM: mean over 10 restarts; AND-mask synthetic:
# qualitative.
PAPER = {
    "irm_cmnist": {"ERM": {"train_acc": 0.874, "test_acc": 0.171},
                   "IRM": {"train_acc": 0.708, "test_acc": 0.669},
                   "Gray": {"train_acc": 0.735, "test_acc": 0.730}},
    "cmnist": {  # test accuracy per sigma^2 (the authors' table for the paper's Fig. 4)
        "Baseline": dict(zip(("0.020", "0.025", "0.030", "0.035", "0.040", "0.045", "0.050"),
                             (0.4055, 0.4813, 0.5996, 0.6626, 0.7333, 0.7973, 0.8450))),
        "BlindEye": dict(zip(("0.020", "0.025", "0.030", "0.035", "0.040", "0.045", "0.050"),
                             (0.6741, 0.7123, 0.7883, 0.8203, 0.8638, 0.8927, 0.9159))),
        "Gray": dict(zip(("0.020", "0.025", "0.030", "0.035", "0.040", "0.045", "0.050"),
                         (0.8374, 0.8751, 0.8996, 0.9166, 0.9325, 0.9472, 0.9596))),
        "LNL": dict(zip(("0.020", "0.025", "0.030", "0.035", "0.040", "0.045", "0.050"),
                        (0.8185, 0.8854, 0.9137, 0.9306, 0.9406, 0.9555, 0.9618))),
    },
}


def collect(pattern):
    """results.json of every finished experiment folder matching pattern."""
    found = []
    for folder in sorted(glob.glob(pattern)):
        path = os.path.join(folder, "results.json")
        if os.path.exists(path):
            with open(path) as fh:
                found.append(json.load(fh))
    return found


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values))


def fmt(mean, std):
    return "—" if mean is None else f"{mean:.3f} ± {std:.3f}"


def summary_rows(rows, metrics):
    """[(label, n, {metric: (mean, std)})] for rows = [(label, glob)]."""
    out = []
    for label, pattern in rows:
        results = collect(pattern)
        out.append((label, len(results),
                    {m: mean_std([r.get(m) for r in results]) for m in metrics}))
    return out


def markdown(summary, metrics, paper=None):
    paper = paper or {}
    head = "| method | runs | " + " | ".join(metrics) + " | paper " + " / ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 3)]
    for label, n, stats in summary:
        ref = paper.get(label, {})
        ref_txt = " / ".join(f"{ref[m]:.3f}" if m in ref else "—" for m in metrics)
        lines.append(f"| {label} | {n} | " + " | ".join(fmt(*stats[m]) for m in metrics)
                     + f" | {ref_txt} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--row", action="append", required=True,
                   help="LABEL=GLOB of experiment dirs (split at the last =)")
    p.add_argument("--metrics", nargs="+", default=["train_acc", "test_acc"])
    p.add_argument("--benchmark", default=None, help=f"paper numbers: {', '.join(PAPER)}")
    p.add_argument("--final", default=None, help="print 'LABEL test_acc=<mean>' last")
    args = p.parse_args(argv)
    rows = [tuple(r.rsplit("=", 1)) for r in args.row]  # labels may hold "=", paths rarely do
    summary = summary_rows(rows, args.metrics)
    print(markdown(summary, args.metrics, PAPER.get(args.benchmark)))
    if args.final:
        stats = dict((label, s) for label, _, s in summary)
        if args.final not in stats or stats[args.final]["test_acc"][0] is None:
            sys.exit(f"no finished '{args.final}' runs to report")
        print(f"{args.final} test_acc={stats[args.final]['test_acc'][0]:.4f}")


if __name__ == "__main__":
    main()
