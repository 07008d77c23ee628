"""Colored-MNIST table from finished runs (outputs/cmnist_var<s>_seed<k>_<method>/results.json):
results.csv (one row per run), results.md (mean ± std per method and sigma^2, the paper's rows
beside ours) and accuracy_vs_var.png (ours solid, the paper's dashed).

    python scripts/cmnist_table.py [--output_dir outputs] [--table_dir outputs/cmnist_table]
"""
import argparse
import csv
import glob
import json
import os
import re

import numpy as np

from summarize import PAPER

METHOD_LABELS = {"baseline": "Baseline", "blindeye": "BlindEye", "gray": "Gray", "lnl": "LNL"}
RUN = re.compile(r"cmnist_var([0-9.]+)_seed(\d+)_(\w+)$")


def collect(output_dir):
    """[{sigma2, seed, method, test_acc, epochs}] for every finished Colored-MNIST run."""
    rows = []
    for folder in sorted(glob.glob(os.path.join(output_dir, "cmnist_var*_seed*_*"))):
        m = RUN.search(os.path.basename(folder))
        path = os.path.join(folder, "results.json")
        if m and m.group(3) in METHOD_LABELS and os.path.exists(path):
            with open(path) as fh:
                r = json.load(fh)
            rows.append({"sigma2": m.group(1), "seed": int(m.group(2)), "method": m.group(3),
                         "test_acc": r["test_acc"], "epochs": r["epochs"]})
    return rows


def aggregate(rows):
    """{method: {sigma2: (mean, std, n)}}"""
    out = {}
    for r in rows:
        out.setdefault(r["method"], {}).setdefault(r["sigma2"], []).append(r["test_acc"])
    return {m: {s: (float(np.mean(v)), float(np.std(v)), len(v)) for s, v in d.items()}
            for m, d in out.items()}


def markdown(agg, sigmas, epochs):
    lines = ["| method | " + " | ".join(f"σ²={s}" for s in sigmas) + " |",
             "|" + "---|" * (len(sigmas) + 1)]
    for key, label in METHOD_LABELS.items():
        if key in agg:
            cells = [f"{agg[key][s][0]:.4f} ± {agg[key][s][1]:.4f} (n={agg[key][s][2]})"
                     if s in agg[key] else "—" for s in sigmas]
            lines.append(f"| {label} (ours) | " + " | ".join(cells) + " |")
        paper = PAPER["cmnist"][label]
        lines.append(f"| {label} (paper) | "
                     + " | ".join(f"{paper[s]:.4f}" if s in paper else "—" for s in sigmas) + " |")
    return ("Test accuracy, final epoch, mean ± std over seeds. Epochs per stage: "
            f"{', '.join(map(str, epochs))}.\n\n" + "\n".join(lines) + "\n")


def plot(agg, sigmas, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [float(s) for s in sigmas]
    for i, (key, label) in enumerate(METHOD_LABELS.items()):
        colour = f"C{i}"
        paper = PAPER["cmnist"][label]
        ax.plot(xs, [paper.get(s, np.nan) for s in sigmas], "--", color=colour, alpha=0.6,
                label=f"{label} (paper)")
        if key in agg:
            mean = [agg[key].get(s, (np.nan,))[0] for s in sigmas]
            std = [agg[key].get(s, (0, 0))[1] for s in sigmas]
            ax.errorbar(xs, mean, yerr=std, marker="o", color=colour, label=f"{label} (ours)")
    ax.set(xlabel="σ² of the colour jitter (larger = weaker bias)", ylabel="test accuracy",
           title="Colored MNIST", ylim=(0, 1))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="./outputs")
    p.add_argument("--table_dir", default=None, help="default: <output_dir>/cmnist_table")
    args = p.parse_args(argv)
    dest = args.table_dir or os.path.join(args.output_dir, "cmnist_table")
    rows = collect(args.output_dir)
    if not rows:
        raise SystemExit(f"no finished Colored-MNIST runs under {args.output_dir}; run "
                         "scripts/run_cmnist_table.sh first")
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, "results.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    agg = aggregate(rows)
    sigmas = sorted({r["sigma2"] for r in rows})
    text = markdown(agg, sigmas, sorted({r["epochs"] for r in rows}))
    with open(os.path.join(dest, "results.md"), "w") as fh:
        fh.write(text)
    plot(agg, sigmas, os.path.join(dest, "accuracy_vs_var.png"))
    print(text)
    print(f"written to {dest}/results.csv, results.md, accuracy_vs_var.png")


if __name__ == "__main__":
    main()
