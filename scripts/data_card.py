"""A data card for our Colored MNISTs: per sigma^2 (LNL's) or per share of conflicting images
(LfF's), the palette and a grid of training and test samples per digit (PNG), with how often
an image's colour is its own digit's (the agreement figures docs/references.md §1a quotes),
into outputs/data_card/.

    python scripts/data_card.py                          # every sigma^2 of the LNL paper
    python scripts/data_card.py --sigmas 0.020 --out docs/img
    python scripts/data_card.py --benchmark lff          # LfF's four shares

The data are built (or read from the cache) exactly as a training run builds them
(colored_mnist.load_or_build_cmnist, lff_cmnist.load_or_build_lff, the same flags and
defaults); card.json holds the figures.
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import colored_mnist as cm  # noqa: E402
import lff_cmnist  # noqa: E402
from errors import UserError  # noqa: E402
from options import sigma2  # noqa: E402
from safe_files import write_json, write_with  # noqa: E402

PAPER_SIGMAS = ("0.020", "0.025", "0.030", "0.035", "0.040", "0.045", "0.050")


def agreement(data, split, palette):
    """The share of a split's images whose stroke colour is nearest their own digit's mean
    colour (chance 0.1 on the unbiased test set)."""
    nearest = cm.nearest_colour_index(cm.stroke_colour(data[f"{split}_image"]), palette)
    return float((nearest == data[f"{split}_label"]).mean())


def samples(data, split, per_digit, seed=0):
    """per_digit images of each digit (rows: digits 0-9), seeded."""
    rng = np.random.default_rng(seed)
    labels = data[f"{split}_label"]
    rows = [data[f"{split}_image"][rng.choice(np.flatnonzero(labels == d), per_digit,
                                              replace=False)] for d in range(10)]
    return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)


def draw(path, title, palette, palette_words, data, figures, per_digit):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(11, 6.6))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 9], hspace=0.25, wspace=0.08)
    swatch = fig.add_subplot(grid[0, :])
    swatch.imshow(palette[None], aspect="auto")
    swatch.set_xticks(range(10), [str(d) for d in range(10)])
    swatch.set_yticks([])
    swatch.set_title(palette_words, fontsize=9)
    for col, split in enumerate(("train", "test")):
        ax = fig.add_subplot(grid[1, col])
        ax.imshow(samples(data, split, per_digit))
        ax.set_yticks([14 + 28 * d for d in range(10)], [str(d) for d in range(10)])
        ax.set_xticks([])
        ax.set_title(f"{split}: its digit's colour on {figures[split]:.1%} of "
                     f"{len(data[f'{split}_label']):,} images", fontsize=9)
    fig.suptitle(title, fontsize=10)
    write_with(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"),
               os.path.dirname(os.path.abspath(path)))
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--benchmark", choices=("lnl", "lff"), default="lnl",
                   help="lnl: LNL's Colored MNIST per --sigmas; lff: LfF's per --ratios")
    p.add_argument("--sigmas", nargs="+", type=sigma2, default=list(PAPER_SIGMAS))
    p.add_argument("--ratios", nargs="+", type=float, choices=lff_cmnist.CONFLICT_RATIOS,
                   default=list(lff_cmnist.CONFLICT_RATIOS),
                   help="lff: shares of conflicting training images")
    p.add_argument("--severity", type=int, choices=sorted(lff_cmnist.SEVERITY_STD), default=4,
                   help="lff: the colour noise's severity")
    p.add_argument("--palette", choices=sorted(cm.PALETTES), default="authors")
    p.add_argument("--paint", choices=cm.PAINT_RULES, default="mask")
    p.add_argument("--data_seed", type=int, default=0)
    p.add_argument("--data_root", default=os.path.join(ROOT, "data"))
    p.add_argument("--out", default=os.path.join(ROOT, "outputs", "data_card"))
    p.add_argument("--per_digit", type=int, default=12, help="samples per digit and split")
    opts = p.parse_args(argv)
    if not 1 <= opts.per_digit <= 50:
        p.error(f"--per_digit must lie in [1, 50]; got {opts.per_digit}")
    if os.path.lexists(opts.out) and not os.path.isdir(opts.out):
        p.error(f"--out {opts.out} is a file, not a folder; pass a folder")
    try:
        (make_lff_card if opts.benchmark == "lff" else make_card)(opts)
    except UserError as err:  # a damaged cache, a link where a file goes: one line
        p.error(str(err))
    return 0


def make_card(opts):
    """The card: per sigma^2 a PNG and its agreement figures; card.json with all of them
    (each written through the file layer, inside --out)."""
    palette = cm.PALETTES[opts.palette]
    card = {"palette": opts.palette, "paint": opts.paint, "data_seed": opts.data_seed,
            "agreement": {}}
    for sigma in opts.sigmas:
        data = cm.load_or_build_cmnist(opts.data_root, float(sigma), opts.data_seed, opts.out,
                                       opts.palette, opts.paint)
        figures = {split: agreement(data, split, palette) for split in ("train", "test")}
        card["agreement"][sigma] = figures
        path = os.path.join(opts.out, f"card_var{sigma}.png")
        draw(path, f"Colored MNIST, σ² = {sigma}: training biased (each digit near its colour), "
             "test unbiased (random colours)", palette,
             f"palette '{opts.palette}' (digit d's mean colour), painted by {opts.paint}", data,
             figures, opts.per_digit)
        print(f"σ² {sigma}: nearest-colour agreement train {figures['train']:.1%}, test "
              f"{figures['test']:.1%} -> {path}")
    write_json(os.path.join(opts.out, "card.json"), card, opts.out, indent=1)


def make_lff_card(opts):
    """LfF's Colored MNIST: per share of conflicting images a PNG and the share of images
    wearing their own digit's colour (by construction: 1 - ratio in training, 0.1 at test);
    lff_card.json with all of them."""
    card = {"benchmark": "LfF's Colored MNIST", "severity": opts.severity,
            "data_seed": opts.data_seed, "own_colour": {}}
    for ratio in opts.ratios:
        data = lff_cmnist.load_or_build_lff(opts.data_root, ratio, opts.severity,
                                            opts.data_seed, opts.out)
        figures = {split: float((data[f"{split}_color_index"] == data[f"{split}_label"]).mean())
                   for split in ("train", "test")}
        card["own_colour"][f"{ratio:g}"] = figures
        path = os.path.join(opts.out, f"lff_card_ratio{ratio:g}.png")
        draw(path, f"LfF's Colored MNIST, {ratio:.1%} conflicting: training biased (each digit "
             "its colour but for that share), test unbiased (every colour alike)",
             lff_cmnist.LFF_PALETTE, f"LfF's palette (digit d's mean colour), by intensity, "
             f"severity {opts.severity}", data, figures, opts.per_digit)
        print(f"{ratio:.1%} conflicting: own colour train {figures['train']:.1%}, test "
              f"{figures['test']:.1%} -> {path}")
    write_json(os.path.join(opts.out, "lff_card.json"), card, opts.out, indent=1)


if __name__ == "__main__":
    sys.exit(main())
