"""One results tool: read every run record under a folder, filter and group by any
configuration key, write CSV, Markdown and plots, and list a sweep's state.

A run record is a run folder's results.json (final metrics + config + provenance, written by
records.py); older records without a config are completed from the args.json beside them.
Grouping uses the configuration, never folder names. Statistics: mean, sample standard
deviation (ddof=1, the spread an independent seed would show; empty when n = 1) and n.

    python scripts/results.py table outputs --group_by variant --metrics train_acc test_acc
    python scripts/results.py table outputs --where dataset_name=ColoredMNIST \\
        --group_by variant --columns color_var --out outputs/cmnist_table
    python scripts/results.py cmnist results/cmnist --out outputs/cmnist_table
    python scripts/results.py methods outputs            # outputs/methods_table/results.md
    python scripts/results.py curves outputs --group_by variant color_var --out outputs/curves
    python scripts/results.py status outputs --expect color_var=0.020,0.050 seed=0,1,2

'variant' is derived from the configuration: the method, except 'gray' (--grayscale), 'erm'
(--method irm with --irm_penalty_weight 0), 'tau0' (--method andmask with --andmask_tau 0)
and 'andmask_geom' (--andmask_variant geom). The papers' numbers come from
results/paper_numbers.csv (docs/references.md) and sit beside ours where they exist.

pandas does the reading, filtering, grouping and CSV: a group-by over any key with mean, std
and count is one call there, where hand-written dict code had to be repeated per table.
"""
import argparse
import fnmatch
import glob
import itertools
import json
import math
import os
import re
import sys
import time

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DDOF = 1  # sample standard deviation
sys.path.insert(0, ROOT)
from dataset_specs import DATASETS  # noqa: E402  (the registries name methods and datasets)
from methods import METHODS  # noqa: E402
import metrics  # noqa: E402
import records  # noqa: E402
from errors import UserError  # noqa: E402
import ledger  # noqa: E402
from ledger import add_record  # noqa: E402
from safe_files import (ARGS, METRICS, PROBE, RESULTS, held, number, read_jsonl,  # noqa: E402
                        read_run, record_problem, valid_record, whole, write_text, write_with)
from safe_files import read_json as safe_read_json  # noqa: E402

LABELS = records.labels()  # display names in table order, from the registries
# the presets of `methods`: dataset -> (section title, metrics, pivot column)
SECTIONS = {name: (spec.title or name, list(spec.report), spec.pivot)
            for name, spec in DATASETS.items()}


# --------------------------------------------------------------------------- reading records
def variant(config):
    """The method as the papers name it (see the module docstring): a dataset's variant
    (the grayscale oracle), else one of the method's own, else the method."""
    method = config.get("method")
    for spec in DATASETS.values():
        for key, _, test in spec.variants:
            if test(config):
                return key
    for key, _, test in getattr(METHODS.get(method), "variants", ()):
        if test(config):
            return key
    return method


def read_json(path):
    """A JSON object read through the file layer (safe_files: bounded, never through a link),
    or {} with a warning when the file is missing or damaged (a crash, a hand edit): one bad
    record never stops the table of the others."""
    folder = os.path.dirname(os.path.abspath(path))
    try:  # run_folders reached folder through real folders only: the run folder and the
        return safe_read_json(path, os.path.dirname(folder))  # file are what is left to check
    except FileNotFoundError:
        return {}
    except (OSError, UserError) as exc:
        print(f"warning: skipped {path}: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
        return {}


def run_folders(roots):
    """Every folder under roots holding a run's args.json or results.json as a plain file,
    each once, reached through real folders only (a link is never followed: a record found
    through one could be anyone's file)."""
    for root in roots:
        if not os.path.isdir(root):
            raise SystemExit(f"{root} is not a folder; pass the folder that holds the runs "
                             "(e.g. outputs or results/cmnist)")
    found = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):  # followlinks=False
            dirs.sort()
            plain = [n for n in (ARGS, RESULTS) if n in files
                     and not os.path.islink(os.path.join(folder, n))]
            if plain:  # a linked record file beside a plain one is named by read_json
                found.setdefault(os.path.realpath(folder), folder)
            else:  # every record file here is a link: named, never read
                for name in sorted({ARGS, RESULTS} & set(files)):
                    print(f"warning: skipped {os.path.join(folder, name)}: it is a link, not "
                          "the run's own file; put the file itself there to count it",
                          file=sys.stderr)
    return sorted(found.values())


def plain(mapping):
    """A handed record's mapping with every value a scalar a table can group by: a list or an
    object becomes its JSON text (a record is read, never trusted to hold the right types)."""
    if not isinstance(mapping, dict):
        return {}
    return {str(k): v if v is None or isinstance(v, (bool, int, float, str))
            else json.dumps(v, sort_keys=True, default=str) for k, v in mapping.items()}


def config_of(folder, record=None):
    """The run's configuration: the record's own, else args.json's (older records)."""
    if record and isinstance(record.get("config"), dict):
        return plain(record["config"])
    return plain(read_json(os.path.join(folder, ARGS)))


def flat_row(folder, record):
    """One table row: provenance, configuration, then the final metrics (which win: 'epochs'
    is the number completed), the derived variant and the folder."""
    config = config_of(folder, record)
    final = plain({k: v for k, v in record.items() if k not in ("config", "provenance")})
    row = {**plain(record.get("provenance")), **config, **final}
    probe = read_json(os.path.join(folder, PROBE))
    if number(probe.get(metrics.PROBE)) is not None:  # main.py --mode probe
        row[metrics.PROBE], row[metrics.PROBE_CHANCE] = probe[metrics.PROBE], number(
            probe.get("chance"))
    state = record.get("collapse")  # records.collapse; absent before 2026-12-06
    row["collapsed"] = (bool(state.get("final")) if isinstance(state, dict)
                        else False if "collapse" in record else None)
    row["epochs_planned"] = config.get("epochs")
    row["variant"] = variant({**final, **config})
    if "dataset_name" not in row and "dataset" in row:
        row["dataset_name"] = row["dataset"]
    row["folder"] = folder
    return row


def key_text(key, value):
    """sigma^2 as the papers print it (0.020): a key to group by, not a float to round."""
    if key == "color_var" and isinstance(value, float) and not math.isnan(value):
        return f"{value:.3f}"
    return value


def load_records(roots):
    """A DataFrame with one row per finished run (a run folder holding results.json)."""
    records = [(f, read_json(os.path.join(f, RESULTS))) for f in run_folders(roots)]
    for folder, record in records:  # a record with impossible values is named, never dropped
        if record and record_problem(record):  # silently ({}: missing, or warned above)
            print(f"warning: skipped {os.path.join(folder, 'results.json')}: "
                  f"{record_problem(record)}", file=sys.stderr)
    rows = [flat_row(f, record) for f, record in records if valid_record(record)]
    frame = pd.DataFrame(rows)
    if "color_var" in frame:
        frame["color_var"] = frame["color_var"].map(lambda v: key_text("color_var", v))
    return frame


def parse_pairs(items):
    """['k=v', ...] -> {k: v}."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def same_value(cell, text):
    """A record's value against a value typed on the command line (0.02 == '0.020'; a value
    with * or ? is a shell-style pattern: experiment_name='cmnist_var*')."""
    if any(c in text for c in "*?["):
        return fnmatch.fnmatchcase(str(cell), text)
    if isinstance(cell, bool) or str(cell).lower() in ("true", "false"):
        return str(cell).lower() == text.lower()
    try:
        return math.isclose(float(cell), float(text))
    except (TypeError, ValueError):
        return str(cell) == text


def where(frame, conditions):
    """Rows whose every KEY matches its VALUE (comma-separated alternatives)."""
    for key, value in conditions.items():
        if key not in frame:
            raise SystemExit(f"no records have the key '{key}'; known keys: "
                             f"{', '.join(sorted(frame.columns))}")
        options = value.split(",")
        frame = frame[frame[key].map(lambda c: any(same_value(c, o) for o in options))]
    return frame


# --------------------------------------------------------------------------- statistics
def sort_key(column):
    """Variants in LABELS' order, everything else as it sorts."""
    if column.name == "variant":
        order = list(LABELS)
        return column.map(lambda v: (order.index(v) if v in order else len(order), str(v)))
    return column.map(str)


# Student's t at 0.975 for 1..30 degrees of freedom (then the normal's 1.96): the 95% interval
# of a mean over n seeds is mean ± t(n-1) * std / sqrt(n)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_ci95(mean, std, n):
    """(low, high) of the 95% t-interval of a mean over n runs; NaN for n < 2."""
    if n < 2 or std != std:
        return float("nan"), float("nan")
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * std / math.sqrt(n)
    return mean - half, mean + half


def summarise(frame, keys, metrics, ddof=DDOF):
    """Long form: one row per group and metric with mean, std, n and the 95% interval of the
    mean (mean_ci95)."""
    parts = []
    for metric in metrics:
        if metric not in frame:
            continue
        stats = (frame.dropna(subset=[metric]).groupby(keys, dropna=False)[metric]
                 .agg(mean="mean", std=lambda s: s.std(ddof=ddof), n="count").reset_index())
        stats.insert(len(keys), "metric", metric)
        bounds = [mean_ci95(m, sd, int(n)) for m, sd, n in zip(stats["mean"], stats["std"],
                                                                stats["n"])]
        stats["ci95_low"] = [b[0] for b in bounds]
        stats["ci95_high"] = [b[1] for b in bounds]
        parts.append(stats)
    if not parts:
        raise SystemExit(f"none of the metrics {metrics} is in these records")
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(keys, key=sort_key, kind="stable").reset_index(drop=True)


def check_metrics(frame, metrics):
    """Each asked metric held as a number by some record, else one line (a typo or a text
    field would be a silent column of dashes, or nothing)."""
    numeric = [c for c in frame if frame[c].map(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).any()]
    missing = [m for m in metrics if m not in numeric]
    if missing:
        known = ", ".join(c for c in numeric if any(w in c for w in ("acc", "loss", "time_s")))
        raise SystemExit(f"--metrics {' '.join(missing)}: no record holds it as a number; "
                         f"these records hold {short_list(known)}")


def short_list(text, limit=300):
    return text if len(text) <= limit else text[:limit] + ", ..."


def load_paper():
    """The published numbers (ledger.paper_numbers) as a frame."""
    return pd.DataFrame(ledger.paper_numbers())


def paper_value(paper, frame, group, metric):
    """The published number for a group: same dataset and variant, and the same sigma^2
    where the paper's row names one. None when the group spans several or none is published."""
    def unique(key):
        if key in group:
            return group[key]
        values = frame[key].dropna().unique() if key in frame else []
        return values[0] if len(values) == 1 else None
    dataset, var, sigma = unique("dataset_name"), unique("variant"), unique("color_var")
    hits = paper[(paper.dataset == dataset) & (paper.variant == var) & (paper.metric == metric)
                 & ((paper.color_var == "") | (paper.color_var == str(sigma)))]
    return float(hits.value.iloc[0]) if len(hits) == 1 else None


def with_paper(summary, frame, keys, paper):
    """summary plus a 'paper' column."""
    summary = summary.copy()
    summary["paper"] = [
        paper_value(paper, select(frame, dict(zip(keys, row[keys]))), dict(zip(keys, row[keys])),
                    row["metric"]) for _, row in summary.iterrows()]
    return summary


def select(frame, group):
    for key, value in group.items():
        frame = frame[frame[key].astype(str) == str(value)]
    return frame


# --------------------------------------------------------------------------- formatting
def fmt(mean, std, n=None, digits=3):
    """'0.850 ± 0.071 (n = 2)' (ledger.mean_std, as the README's tables); one run has no std."""
    return ledger.mean_std(mean, std, n, digits)


def fmt_paper(value):
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.4g}"


def label(key, value):
    return LABELS.get(value, value) if key == "variant" else value


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def markdown_wide(summary, keys, metrics, paper=True):
    """One row per group: n, mean ± std per metric, then (paper) the paper's number per
    metric."""
    rows = []
    for group, part in summary.groupby(keys, dropna=False, sort=False):
        group = group if isinstance(group, tuple) else (group,)
        by_metric = {r.metric: r for r in part.itertuples()}
        n = max(r.n for r in by_metric.values())
        cells = [fmt(by_metric[m].mean, by_metric[m].std) if m in by_metric else "—"
                 for m in metrics]
        published = [fmt_paper(by_metric[m].paper) if m in by_metric else "—"
                     for m in metrics] if paper else []
        rows.append([label(k, v) for k, v in zip(keys, group)] + [n] + cells + published)
    header = (list(keys) + ["n"] + list(metrics)
              + ([f"paper {m}" for m in metrics] if paper else []))
    return md_table(header, rows)


def markdown_pivot(summary, keys, column, frame, paper):
    """Groups as rows, one configuration key's values as columns; '(ours)' rows with
    mean ± std (n), each followed by a '(paper)' row (every column) where the paper has
    numbers."""
    rest = [k for k in keys if k != column]
    values = sorted(summary[column].dropna().unique(), key=str)
    several = summary.metric.nunique() > 1  # then a row per group and metric, named by both
    rows = []
    for group, part in summary.groupby(rest + (["metric"] if several else []), dropna=False,
                                       sort=False):
        group = group if isinstance(group, tuple) else (group,)
        name = " ".join(str(label(k, v)) for k, v in zip(rest, group))
        if several:
            name, group = f"{name} {group[-1]}", group[:-1]
        cells = {str(r[column]): r for _, r in part.iterrows()}
        rows.append([f"{name} (ours)"] + [fmt(cells[str(v)]["mean"], cells[str(v)]["std"],
                                                int(cells[str(v)]["n"]))
                                            if str(v) in cells else "—" for v in values])
        mine = select(frame, dict(zip(rest, group)))
        metric = part.metric.iloc[0]
        published = [paper_value(paper, mine, {**dict(zip(rest, group)), column: v}, metric)
                     for v in values]
        if any(p is not None for p in published):
            rows.append([f"{name} (paper)"] + [fmt_paper(p) for p in published])
    header = [" ".join(rest) or "runs"] + [f"{'σ²' if column == 'color_var' else column}={v}"
                                          for v in values]
    return md_table(header, rows)


# --------------------------------------------------------------------------- plots
def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_vs_var(summary, paper, path, metric=metrics.FINAL):
    """Colored MNIST: test accuracy against sigma^2, ours (mean ± sample std) solid, the
    paper's dashed in the same colour."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ours = summary[summary.metric == metric]
    variants = sorted(set(ours.variant) | set(paper[paper.dataset == "ColoredMNIST"].variant),
                      key=lambda v: list(LABELS).index(v) if v in LABELS else 99)
    for i, var in enumerate(variants):
        ref = paper[(paper.dataset == "ColoredMNIST") & (paper.variant == var)
                    & (paper.metric == metric)]
        if len(ref):
            ax.plot(ref.color_var.astype(float), ref.value, "--", color=f"C{i}", alpha=0.6,
                    label=f"{LABELS.get(var, var)} (paper)")
        mine = ours[ours.variant == var]
        if len(mine):
            ax.errorbar(mine.color_var.astype(float), mine["mean"], yerr=mine["std"].fillna(0),
                        marker="o", color=f"C{i}", capsize=3,
                        label=f"{LABELS.get(var, var)} (ours, n={int(mine.n.min())}"
                              f"{'' if mine.n.min() == mine.n.max() else f'–{int(mine.n.max())}'})")
    ax.set(xlabel="σ² of the colour jitter (larger = weaker bias)", ylabel=metric,
           title="Colored MNIST: mean ± sample std over seeds", ylim=(0, 1))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def read_metrics(folder):
    """A run's metrics.jsonl as a DataFrame, one row per whole epoch (a torn or damaged line
    is left out; a damaged file is a warning and no rows)."""
    try:
        rows, _ = read_jsonl(os.path.join(folder, METRICS),
                             os.path.dirname(os.path.abspath(folder)))
    except (OSError, UserError) as exc:
        print(f"warning: skipped {folder}/metrics.jsonl: {exc}", file=sys.stderr)
        return pd.DataFrame()
    rows = [r for r in rows if whole(r.get("epoch")) is not None]
    return pd.DataFrame(rows)


def curve_metrics(curves, asked):
    """The asked metrics, or test accuracy, the bias diagnostic and every loss."""
    if asked:
        return [m for m in asked if m in curves]
    return [m for m in metrics.CURVES if m in curves] + sorted(
        c for c in curves if "loss" in c or c == "entropy_term")


def stage_starts(frame):
    """{run folder: the run folder it starts from, or None}: a stage-2 run's --init_checkpoint
    lies in another run's checkpoints/ (Kim et al., CVPR 2019, §4.1: LNL from the baseline's
    weights). Found by folder name among frame's runs (the ledger keeps the names); a name
    two runs share matches neither."""
    names = [os.path.basename(os.path.normpath(f)) for f in frame.folder]
    by_name = {n: f for n, f in zip(names, frame.folder) if names.count(n) == 1}
    starts = {}
    for folder in frame.folder:
        init = config_of(folder).get("init_checkpoint")
        init = init if isinstance(init, str) else ""
        start = by_name.get(os.path.basename(os.path.dirname(os.path.dirname(init))))
        starts[folder] = start if start != folder else None
    return starts


def curve_lines(part, hue, starts):
    """{line label: (the runs' metrics with the epoch they are drawn at, n runs)}: one line per
    value of the hue key (one line without hue). A stage-2 run whose start run is drawn in the
    same figure continues after that run's last epoch, as the recipe trains it."""
    lines, drawn = {}, set(part.folder)
    for value, runs in (part.groupby(hue, dropna=False, sort=True) if hue else [(None, part)]):
        frames = []
        for folder in runs.folder:
            curve = read_metrics(folder)
            if "epoch" not in curve:
                continue
            start = starts.get(folder)
            shift = epochs_done(start) if start in drawn else 0
            frames.append(curve.assign(run=folder, epoch=curve.epoch + shift))
        if frames:
            lines["all runs" if hue is None else label(hue, value)] = (
                pd.concat(frames, ignore_index=True), len(frames))
    return lines


def plot_curves(frame, keys, metrics, out, hue=None):
    """One PNG per group: each metric per epoch, mean ± sample std band over the group's runs;
    with hue, one line per value of that key (e.g. baseline and LNL on one set of axes, LNL
    drawn after the baseline it starts from)."""
    plt = pyplot()
    starts = stage_starts(frame)
    written = []
    for group, part in frame.groupby(keys, dropna=False, sort=False):
        group = group if isinstance(group, tuple) else (group,)
        lines = curve_lines(part, hue, starts)
        names = curve_metrics(pd.concat([c for c, _ in lines.values()] or [pd.DataFrame()]),
                              metrics)
        if not lines or not names:
            continue
        fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
        for ax, name in zip(axes[0], names):
            for line, (curves, n) in lines.items():
                stats = curves.dropna(subset=[name]).groupby("epoch")[name].agg(
                    ["mean", lambda s: s.std(ddof=DDOF)])
                if stats.empty:
                    continue
                stats.columns = ["mean", "std"]
                spread = stats["std"].fillna(0)
                text = None if hue is None else f"{line} (n={n})"
                if len(stats) == 1:  # evaluated once (e.g. IRM's eval_every = all steps): a bar
                    ax.errorbar(stats.index, stats["mean"], yerr=spread, marker="o", capsize=4,
                                label=text)
                else:
                    drawn = ax.plot(stats.index, stats["mean"], marker="." if len(stats) < 40
                                    else None, label=text)
                    ax.fill_between(stats.index, stats["mean"] - spread,
                                    stats["mean"] + spread, alpha=0.25,
                                    color=drawn[0].get_color())
            ax.set(xlabel="epoch", title=name)
        if hue is not None:
            axes[0][0].legend(fontsize=7)
        title = ", ".join(f"{k}={label(k, v)}" for k, v in zip(keys, group))
        runs = (f"n={part.folder.nunique()} runs" if hue is None else
                "n runs per line; a stage-2 run drawn after the run it starts from")
        fig.suptitle(f"{title}  ({runs}; band: ± sample std)", fontsize=9)
        fig.tight_layout()
        stem = "_".join(f"{k}={v}" for k, v in zip(keys, group)) + (f"_by_{hue}" if hue else "")
        path = out_path(out, re.sub(r"[^\w.=-]+", "_", stem) + ".png")
        save_figure(fig, path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------- sweep state
def run_state(folder, active_within):
    """finished (safe_files.RunView.finished: the one rule, for the epochs its args.json
    plans), running (a process holds its lock: safe_files.held; or, for a run on another
    machine, a file changed within active_within seconds) or stopped."""
    planned = whole(config_of(folder).get("epochs"))
    if read_run(folder, os.path.dirname(os.path.abspath(folder))).finished(planned):
        return "finished"
    if held(folder):
        return "running"
    newest = max((os.path.getmtime(p) for p in glob.glob(os.path.join(folder, "**"),
                                                         recursive=True)), default=0)
    return "running" if time.time() - newest < active_within else "stopped"


def epochs_done(folder):
    """Epochs done (safe_files.read_run: the finished record's, else metrics.jsonl's last)."""
    return read_run(folder, os.path.dirname(os.path.abspath(folder))).epochs


def sweep_state(roots, expect, active_within):
    """A DataFrame: every run folder with its state and epochs done / planned, plus one
    'never started' row per --expect combination that no run folder's configuration matches."""
    rows = []
    for folder in run_folders(roots):
        config = config_of(folder)
        if not config:
            continue
        rows.append({**{k: key_text(k, config.get(k)) for k in expect},
                     "variant": variant(config),
                     "state": run_state(folder, active_within),
                     "epochs": f"{epochs_done(folder)}/{config.get('epochs')}", "folder": folder,
                     "_config": {**config, "variant": variant(config)}})
    for combo in (itertools.product(*(v.split(",") for v in expect.values())) if expect
                  else ()):  # nothing expected: no phantom 'never started' row
        wanted = dict(zip(expect, combo))
        if not any(all(same_value(r["_config"].get(k), v) for k, v in wanted.items())
                   for r in rows):
            rows.append({**wanted, "state": "never started", "folder": "", "epochs": ""})
    frame = pd.DataFrame(rows).drop(columns="_config", errors="ignore")
    return frame


# --------------------------------------------------------------------------- commands
def out_path(out, name):
    """A file of --out: the folder must be one (a file there is refused in one line)."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise SystemExit(f"--out {out} is a file, not a folder; pass a folder")
    return os.path.join(out, name)


def save_figure(fig, path, **kwargs):
    """A figure written through the file layer (atomic, never through a link)."""
    write_with(path, lambda fh: fig.savefig(fh, format="png", **kwargs),
               os.path.dirname(os.path.abspath(path)))


def save_text(out, name, text):
    write_text(out_path(out, name), text, out)


def save_csv(out, name, frame):
    save_text(out, name, frame.to_csv(index=False))


def write_outputs(out, name, frame, summary, text):
    save_csv(out, f"{name}_runs.csv", frame)
    save_csv(out, f"{name}.csv", summary)
    save_text(out, f"{name}.md", text)


def table_text(frame, keys, metrics, column, paper):
    summary = with_paper(summarise(frame, keys, metrics), frame, keys, paper)
    if column:
        text = markdown_pivot(summary, keys, column, frame, paper)
    else:
        text = markdown_wide(summary, keys, metrics)
    return summary, text + collapsed_note(frame) + pooled_note(frame, keys)


def collapsed_note(frame):
    """The runs that ended collapsed to one class (records.collapse), named under the table:
    their accuracy is a class's share, not the method's."""
    if "collapsed" not in frame:
        return ""
    hit = frame[frame.collapsed == True]  # noqa: E712 (None: not measured)
    if hit.empty:
        return ""
    names = ", ".join(sorted(os.path.basename(str(f)) for f in hit.folder))
    return (f"\n\nEnded collapsed to one class ({len(hit)} of {len(frame)} runs; their "
            f"accuracy is a class's share, not the method's): {names}")


def pooled_note(frame, keys):
    """The groups whose runs differ in a method's searched hyperparameter (Method.grid: a
    compare plan's grid points), named under the table: their n counts settings, not seeds
    alone, and the spread is the grid's. --group_by the flag, or --where its value, parts them."""
    flags = sorted({f for cls in METHODS.values() for f in cls.grid} & set(frame) - set(keys))
    mixed, differ = [], set()
    for group, part in frame.groupby(keys, dropna=False, sort=False) if flags else ():
        here = {f for f in flags if part[f].dropna().astype(str).nunique() > 1}
        if here:
            group = group if isinstance(group, tuple) else (group,)
            mixed.append(", ".join(f"{k}={label(k, v)}" for k, v in zip(keys, group)))
            differ |= here
    if not mixed:
        return ""
    return (f"\n\nPooled over different hyperparameters ({', '.join(sorted(differ))}) in "
            f"{len(mixed)} group(s), e.g. {mixed[0]}: their n counts settings, not seeds alone. "
            "Add the flags to --group_by, or pick one setting with --where.")


def is_ledger(root):
    """A folder of run records none of which keeps a checkpoint: what `ledger` writes (and a
    committed results/ folder is)."""
    folders = run_folders([root])
    return bool(folders) and not any(os.path.isdir(os.path.join(f, "checkpoints"))
                                     for f in folders)


def out_folder(args, name, suffix):
    """--out, or ROOT/<name> beside the runs read. A ledger is never written into (its folder
    holds run records only, and is often committed): there --out must be given."""
    if args.out:
        return args.out
    root = args.roots[0]
    if is_ledger(root):
        stem = os.path.normpath(root)
        raise SystemExit(f"{root} is a ledger (run records without checkpoints), so nothing is "
                         f"written into it: give --out, e.g. --out {stem}_{suffix}")
    return os.path.join(root, name)


def records_or_exit(args):
    frame = load_records(args.roots)
    if frame.empty:
        raise SystemExit(f"no finished runs (results.json) under {', '.join(args.roots)}")
    frame = where(frame, parse_pairs(args.where))
    if frame.empty:
        raise SystemExit(f"no finished runs match {' '.join(args.where)}")
    asked = list(getattr(args, "group_by", None) or []) + [
        getattr(args, k) for k in ("columns", "hue") if getattr(args, k, None)]
    unknown = [k for k in asked if k not in frame.columns]
    if unknown:
        known = ", ".join(sorted(c for c in frame.columns if not c.startswith("_"))[:30])
        raise SystemExit(f"unknown key {unknown[0]!r} for --group_by/--columns/--hue; the records "
                         f"have: {known} ...")
    return frame


def cmd_table(args):
    frame = records_or_exit(args)
    keys = args.group_by + ([args.columns] if args.columns and args.columns not in args.group_by
                            else [])
    check_metrics(frame, args.metrics)
    summary, text = table_text(frame, keys, args.metrics, args.columns, load_paper())
    text += (f"\n\nmean ± sample std (ddof={DDOF}) over n runs, final epoch; "
             "paper: results/paper_numbers.csv\n")
    print(text)
    if args.final:
        hit = summary[(summary.metric == metrics.FINAL) & summary[args.group_by[0]].map(
            lambda v: label(args.group_by[0], v) == args.final or v == args.final)]
        if hit.empty:
            raise SystemExit(f"no finished '{args.final}' runs to report")
        print(f"{args.final} {metrics.FINAL}={hit['mean'].iloc[0]:.4f}")
    if args.out:
        write_outputs(args.out, args.name, frame, summary, text)
        print(f"written to {args.out}/{args.name}.csv, {args.name}.md, {args.name}_runs.csv")


def cmnist_table(frame, paper):
    """The Colored-MNIST table: variant x sigma^2, test accuracy; the paper's rows beside."""
    frame = frame[frame.dataset_name == "ColoredMNIST"]
    lengths = sorted(frame.epochs.unique())
    if len(lengths) > 1:  # a cell's mean over 2- and 100-epoch runs would mean nothing
        raise SystemExit("these Colored-MNIST runs have several lengths ("
                         f"{', '.join(map(str, lengths))} epochs per stage); pick one with "
                         "--where epochs=N")
    summary, text = table_text(frame, ["variant", "color_var"], [metrics.FINAL], "color_var",
                               paper)
    epochs = ", ".join(map(str, lengths))
    split = ""
    parts = [m for m in metrics.DETAILS if m in frame]
    if parts:  # records from 2026-11-29 on
        wide = markdown_wide(summarise(frame, ["variant", "color_var"], parts).assign(
            paper=float("nan")), ["variant", "color_var"], parts, paper=False)
        split = ("\n\nThe same runs on the test images painted with their digit's training "
                 "colour (aligned) and with another digit's (conflicting), and the bias a "
                 "fresh head reads from the frozen f (`main.py --mode probe`; chance: always "
                 "the most frequent colour bin) where it was run; with --val_fraction, the "
                 "test accuracy at the epoch validation accuracy selects, and the oracle's "
                 "(the best test accuracy over epochs: chosen on the test set, shown only to "
                 "measure the gap):\n\n" + wide)
    return summary, (f"Test accuracy, final epoch, mean ± sample std (ddof={DDOF}) over seeds, n "
                     f"runs per cell. Epochs per stage: {epochs}.\n\n{text}{split}\n")


def cmd_cmnist(args):
    frame = records_or_exit(args)
    if "dataset_name" not in frame or not (frame.dataset_name == "ColoredMNIST").any():
        raise SystemExit(f"no finished Colored-MNIST runs under {', '.join(args.roots)}; run "
                         "scripts/run_cmnist_table.sh first")
    out = out_folder(args, "cmnist_table", "table")
    paper = load_paper()
    summary, text = cmnist_table(frame, paper)
    runs = frame[frame.dataset_name == "ColoredMNIST"].sort_values(
        ["color_var", "seed", "variant"])
    cols = ["color_var", "seed", "variant", "method", metrics.FINAL, metrics.CI95,
            *metrics.DETAILS, "selected_epoch", metrics.AGREEMENT, "epochs",
            "commit", "dirty", "device", "wall_time_s", "folder"]
    save_csv(out, "results.csv",
             runs.reindex(columns=cols).rename(columns={"color_var": "sigma2"}))
    save_csv(out, "summary.csv", summary)
    save_text(out, "results.md", text)
    plot_vs_var(summary, paper, out_path(out, "accuracy_vs_var.png"))
    print(text)
    print(f"written to {out}/results.csv, summary.csv, results.md, accuracy_vs_var.png")


def cmd_methods(args):
    frame = records_or_exit(args)
    paper = load_paper()
    parts = [f"# Methods x benchmarks\n\nMean ± sample std (ddof={DDOF}) over seeds (restarts) "
             "of final-epoch accuracy, n runs; the paper's numbers beside ours "
             "(results/paper_numbers.csv)."]
    for dataset, (title, shown, column) in SECTIONS.items():
        part = frame[frame.dataset_name == dataset]
        if part.empty:
            continue
        if dataset == "ColoredMNIST":
            _, text = cmnist_table(part, paper)
        else:
            keys = ["variant"] + ([column] if column else [])
            _, text = table_text(part, keys, shown, None, paper)
        parts.append(f"## {title}\n\n{text}")
    text = "\n\n".join(parts) + "\n"
    out = out_folder(args, "methods_table", "table")
    save_text(out, "results.md", text)
    print(text)
    print(f"written to {out}/results.md")


def cmd_curves(args):
    frame = records_or_exit(args)
    out = out_folder(args, "curves", "curves")
    written = plot_curves(frame, args.group_by, args.metrics, out, args.hue)
    print("\n".join(written) if written else "no metrics.jsonl to plot")


def cmd_status(args):
    frame = sweep_state(args.roots, parse_pairs(args.expect), args.active_within)
    if frame.empty:
        raise SystemExit(f"no runs under {', '.join(args.roots)} and nothing --expect'ed")
    counts = frame.state.value_counts()
    print(md_table(list(frame.columns), frame.fillna("").values.tolist()))
    print("\n" + ", ".join(f"{state}: {counts.get(state, 0)}" for state in
                           ("finished", "running", "stopped", "never started")))




def ledger_name(folder, roots):
    """A run's place in the ledger: its path under the root it was found in, so members of
    two sweeps (each folder named seed=0, ...) keep their sweep's name and never collide."""
    for root in roots:
        rel = os.path.relpath(folder, root)
        if rel != "." and not rel.startswith(".."):
            return rel
    return os.path.basename(os.path.normpath(folder))


def cmd_ledger(args):
    """Copy each finished run's small record into the committed ledger (e.g. results/cmnist):
    GPU machines keep nothing, so what a lease produced must land in the repository. Never
    checkpoints or data. A record already in the ledger is kept: identical files are skipped,
    different ones are listed and left alone (exit 1), so nothing there is overwritten."""
    if os.path.lexists(args.into) and not os.path.isdir(args.into):
        raise SystemExit(f"--into {args.into} is a file, not a folder; pass the ledger's folder")
    frame = records_or_exit(args)
    added, same, differ = [], 0, []
    into = os.path.realpath(args.into)
    for folder in frame.folder:
        real = os.path.realpath(folder)
        if os.path.commonpath([real, into]) == into:
            continue  # the ledger's own copy, found again under a root that holds the ledger
        dest = os.path.join(args.into, ledger_name(folder, args.roots))
        new, kept, other = add_record(folder, dest, os.path.dirname(os.path.abspath(folder)),
                                      args.into)
        added += [os.path.join(dest, n) for n in new]
        differ += [os.path.join(dest, n) for n in other]
        same += len(kept)
    print("\n".join(f"added {p}" for p in added))
    print(f"{len(added)} files added to {args.into}, {same} already there")
    if differ:
        raise SystemExit("kept (the ledger's copy differs from the run's; move one aside to "
                         "replace it): " + ", ".join(differ))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, func, help_text, metrics=None):
        c = sub.add_parser(name, help=help_text, description=help_text)
        c.add_argument("roots", nargs="+", help="folders searched (recursively) for run folders")
        c.add_argument("--where", nargs="*", default=[], metavar="KEY=VALUE",
                       help="keep runs whose configuration matches (VALUE may list "
                            "alternatives: seed=0,1)")
        c.add_argument("--out", default=None, help="folder for the written files")
        if metrics is not None:
            c.add_argument("--metrics", nargs="+", default=metrics)
        c.set_defaults(func=func)
        return c

    t = command("table", cmd_table, "mean ± std, n per group; CSV and Markdown",
                [metrics.TRAIN, metrics.FINAL])
    t.add_argument("--group_by", nargs="+", default=["variant"],
                   help="configuration keys (any key of args.json, 'variant', provenance keys)")
    t.add_argument("--columns", default=None, help="spread this key's values over columns")
    t.add_argument("--name", default="summary", help="file stem of the written files")
    t.add_argument("--final", default=None,
                   help=f"print 'LABEL {metrics.FINAL}=<mean>' last, for the first group "
                        "key's LABEL")
    command("cmnist", cmd_cmnist, "the Colored-MNIST table and accuracy_vs_var.png "
            "(default --out: ROOT/cmnist_table; required for a ledger)")
    command("methods", cmd_methods, "every method x benchmark in one Markdown file "
            "(default --out: ROOT/methods_table; required for a ledger)")
    c = command("curves", cmd_curves, "per-epoch curves from metrics.jsonl, one PNG per group "
                "(default --out: ROOT/curves; required for a ledger)", [])
    c.add_argument("--group_by", nargs="+", default=["variant", "dataset_name"])
    c.add_argument("--hue", default=None,
                   help="one line per value of this key in each figure (e.g. variant: baseline "
                        "and LNL on one set of axes, a stage-2 run drawn after the run it "
                        "starts from)")
    g = command("ledger", cmd_ledger, "copy finished runs' results.json, metrics.jsonl, "
                "args.json and probe.json into a committed ledger folder (never checkpoints)")
    g.add_argument("--into", required=True, help="the ledger folder, e.g. results/cmnist")
    s = sub.add_parser("status", help="a sweep's state: finished, running, stopped, never started")
    s.add_argument("roots", nargs="+")
    s.add_argument("--expect", nargs="*", default=[], metavar="KEY=V1,V2",
                   help="the sweep's grid: every combination without a run folder is 'never "
                        "started'")
    s.add_argument("--active_within", type=float, default=900,
                   help="seconds: an unfinished run whose lock no process here holds is "
                        "'running' when its folder changed this recently (a run on another "
                        "machine), else 'stopped'")
    s.set_defaults(func=cmd_status)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "metrics", None) == []:
        args.metrics = None
    try:
        args.func(args)
    except UserError as err:  # a damaged or unsafe file (safe_files): one line, exit 1
        raise SystemExit(f"error: {err}")


if __name__ == "__main__":
    sys.exit(main())
