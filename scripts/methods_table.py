"""Write outputs/methods_table/results.md: every method x benchmark that has finished runs,
mean ± std over seeds (final epoch), the paper's numbers beside ours.

    python scripts/methods_table.py [--output_dir outputs]
"""
import argparse
import glob
import os
import re

from summarize import PAPER, fmt, markdown, summary_rows

CMNIST_METHODS = (("Baseline", "baseline"), ("BlindEye", "blindeye"), ("Gray", "gray"),
                  ("LNL", "lnl"))


def cmnist_section(out):
    """Test accuracy per sigma^2 and method, from outputs/cmnist_var<s>_seed<k>_<method>."""
    sigmas = sorted({m.group(1) for d in glob.glob(os.path.join(out, "cmnist_var*_seed*_*"))
                     if (m := re.search(r"cmnist_var([0-9.]+)_seed", d))})
    if not sigmas:
        return None
    epochs = set()
    lines = ["| method | " + " | ".join(f"σ²={s}" for s in sigmas) + " |",
             "|" + "---|" * (len(sigmas) + 1)]
    for label, key in CMNIST_METHODS:
        cells, paper_cells = [], []
        for s in sigmas:
            (_, n, stats), = summary_rows([(label, os.path.join(
                out, f"cmnist_var{s}_seed*_{key}"))], ["test_acc", "epochs"])
            if stats["epochs"][0] is not None:
                epochs.add(int(stats["epochs"][0]))
            cells.append(f"{fmt(*stats['test_acc'])} (n={n})" if n else "—")
            paper_cells.append(f"{PAPER['cmnist'][label].get(s, float('nan')):.4f}")
        lines.append(f"| {label} (ours) | " + " | ".join(cells) + " |")
        lines.append(f"| {label} (paper) | " + " | ".join(paper_cells) + " |")
    note = f"Epochs per stage in these runs: {', '.join(map(str, sorted(epochs)))}."
    return "\n".join(lines) + "\n\n" + note


def section(title, rows, metrics, benchmark=None):
    summary = summary_rows(rows, metrics)
    if not any(n for _, n, _ in summary):
        return None
    return f"## {title}\n\n" + markdown(summary, metrics, PAPER.get(benchmark))


def build(out):
    parts = ["# Methods x benchmarks\n\nMean ± std over seeds (restarts) of final-epoch "
             "accuracy; the paper's numbers beside ours (docs/references.md)."]
    cm = cmnist_section(out)
    if cm:
        parts.append("## Colored MNIST (test accuracy)\n\n" + cm)
    irm = os.path.join(out, "irm_cmnist")
    parts.append(section("IRM Colored MNIST", [("ERM", f"{irm}/erm_r*"), ("IRM", f"{irm}/irm_r*"),
                                               ("Gray", f"{irm}/gray_r*"),
                                               ("AND-mask", f"{irm}/andmask_r*")],
                         ["train_acc", "test_acc"], "irm_cmnist"))
    syn = os.path.join(out, "andmask_synthetic")
    parts.append(section("AND-mask synthetic memorisation (spiral + signatures)",
                         [("baseline (tau=0)", f"{syn}/baseline_s*"),
                          ("AND-mask (tau=1)", f"{syn}/andmask_s*"),
                          ("geom-mean (tau=1)", f"{syn}/geom_s*"),
                          ("GEN-mask", f"{syn}/genmask_s*")], ["train_acc", "test_acc"]))
    cif = os.path.join(out, "cifar_random_labels")
    parts.append(section("CIFAR-10 with random labels", [
        ("baseline (tau=0)", f"{cif}/baseline_s*"), ("AND-mask", f"{cif}/andmask_s*")],
        ["train_acc", "mislabeled_acc", "test_acc"]))
    return "\n\n".join(p for p in parts if p) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="./outputs")
    args = p.parse_args(argv)
    text = build(args.output_dir)
    dest = os.path.join(args.output_dir, "methods_table", "results.md")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "w") as fh:
        fh.write(text)
    print(text)
    print(f"written to {dest}")


if __name__ == "__main__":
    main()
