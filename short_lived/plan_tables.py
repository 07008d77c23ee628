"""The README's tables of the long-run plans, built from what the repository holds: the ledger's
records and, for an unfinished run, the epochs its resume point holds (short_lived/long_runs.py
table --readme README.md writes them between their marks; a test fails when the README's
tables are not what the repository holds). A cell is the final epoch, mean ± std over the seeds
with n (ledger.mean_std); a run that ended collapsed to one class is named so. Any records'
tables, pandas-built: scripts/results.py.
"""
import os

import ledger
import metrics
from errors import UserError
from plan_runs import planned_epochs
from plans import AFTER_LNL, CRITERION, LFF_RATIOS
from safe_files import number, read_json, read_text, write_text

TABLE_ROWS = ("baseline", "lnl", "blindeye", "gray", "lff", "groupdro", "jtt")
TABLE_MARKS = ("<!-- long_runs.py table -->", "<!-- end of long_runs.py table -->")


def paper_numbers():
    """{(method, sigma^2): published test accuracy} on Colored MNIST (Kim et al., CVPR 2019,
    Fig. 4's table; ledger.paper_numbers)."""
    return {(r["variant"], r["color_var"]): r["value"] for r in ledger.paper_numbers()
            if r["dataset"] == "ColoredMNIST" and r["metric"] == metrics.FINAL}


def final_accuracy(life, run):
    """A finished run's final-epoch test accuracy from the ledger, else None."""
    view = life.view(run, "ledger")
    return view.record[metrics.FINAL] if view.finished(planned_epochs(run)) else None


def spread(values):
    """'mean ± std (n = k)' of the seeds' final accuracies (ledger.mean_std: sample std, ddof
    1); one seed says n = 1 and no spread."""
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
    return ledger.mean_std(mean, std, n)


def cell(life, runs):
    """Ours for one (method, sigma^2), from what is kept (never a live work folder): the mean
    ± std over the seeds whose records are in the ledger, with n; then the epochs of the seeds
    whose resume points hold some; '—' where the plan has no such run."""
    if not runs:
        return "—"
    done = [(r, final_accuracy(life, r)) for r in runs]
    values = [acc for _, acc in done if acc is not None]
    going = [(r, life.done(r, life.kept_in)) for r, acc in done if acc is None]
    lost = [r for r, e in going if not e and lost_start(life, r)]
    going = [(r, e) for r, e in going if e]
    parts = [spread(values)] if values else []
    damaged = [r for r, acc in done if acc is None and life.view(r, "ledger").damaged]
    if damaged:  # named, never dropped silently
        parts.append(", ".join(f"seed {r['seed']}" for r in damaged) + ": damaged record ("
                     + life.view(damaged[0], "ledger").damaged + ")")
    collapsed = [r for r, acc in done if acc is not None and collapsed_at_end(life, r)]
    if collapsed:  # its accuracy is a class's share, not the method's: never shown bare
        parts[0] += (f", {len(collapsed)} of {len(values)} collapsed to one class (epoch "
                     + ", ".join(collapse_epoch(life, r) for r in collapsed) + ")")
    if going:
        each = ", ".join(f"{e}" + (f" (seed {r['seed']})" if len(runs) > 1 else "")
                         for r, e in going)
        parts.append(f"{'not finished: ' if not values else ''}{each} of "
                     f"{planned_epochs(going[0][0])} epochs")
    if lost:
        parts.append("seed " + ", ".join(str(r["seed"]) for r in lost) + " cannot start: "
                     "its start run's checkpoint was not kept")
    return "; ".join(parts) or "not started"


def collapsed_at_end(life, run):
    """Whether a finished run's record says it ended collapsed to one class
    (records.collapse; records from before 2026-12-06 did not measure it)."""
    state = life.view(run, "ledger").record.get("collapse")
    return isinstance(state, dict) and state.get("final") is True


def collapse_epoch(life, run):
    """The epoch a collapsed run's record says it collapsed at; '?' where the record's value
    is not an epoch (a handed record: its text never reaches the README)."""
    first = life.view(run, "ledger").record["collapse"].get("first_epoch")
    return str(first) if isinstance(first, int) and not isinstance(first, bool) else "?"


def lost_start(life, run):
    """A stage-2 run whose start run is in the ledger without a kept checkpoint (it finished
    before this run was planned): it can never start from what the repository holds."""
    after = life.by_name.get(run["after"]) if run["after"] else None
    return (after is not None and final_accuracy(life, after) is not None
            and not life.has_checkpoint(after, life.kept_in))


def labelled(keys, dataset):
    """(key, its name on the benchmark) for a table's rows (records.labels: the registries)."""
    import records  # here: the other commands need no torch
    names = records.labels(dataset)
    return [(key, names[key]) for key in keys]


def headline_table(life):
    """The README's headline table in Markdown: ours beside the paper's per method and per
    sigma^2 of the plan that has begun (ascending, as the paper's table), built from the
    ledger and the resume points alone, so that what the README says is what the repository
    holds. A cell pools the seeds: mean ± std with n once two have finished."""
    runs = {}
    for r in life.plan:
        runs.setdefault((r["variant"], r["sigma"]), []).append(r)
    cells = {key: cell(life, group) for key, group in runs.items()}
    sigmas = sorted({r["sigma"] for r in life.plan}, key=float)
    begun = [s for s in sigmas
             if any(c != "not started" for (_, sigma), c in cells.items() if sigma == s)]
    paper = paper_numbers()
    lines = ["| σ² | " + " | ".join(begun) + " |", "|---|" + "---|" * len(begun)]
    for method, name in labelled(TABLE_ROWS, "ColoredMNIST"):
        if not any((method, s) in runs for s in begun) or (
                method in AFTER_LNL and all(cells.get((method, s), "—") in ("—", "not started")
                                            for s in begun)):
            continue  # a later method's row once it has begun (the paper has none)
        ours = (cells.get((method, s), "—") for s in begun)
        published = (f"{paper[method, s]:.4f}" if (method, s) in paper else "—" for s in begun)
        lines += [f"| {name} (ours) | " + " | ".join(ours) + " |",
                  f"| {name} (paper) | " + " | ".join(published) + " |"]
    return "\n".join(lines)


LFF_ROWS = ("baseline", "lff", "groupdro", "jtt", "lnl", "blindeye", "lnl_stage2",
            "blindeye_stage2")
LFF_MARKS = ("<!-- long_runs.py table --plan lff -->",
             "<!-- end of long_runs.py table --plan lff -->")


def lff_table(life):
    """The README's table of LfF's benchmark: per method and share of conflicting images, the
    final-epoch test accuracy (mean ± std over the seeds in the ledger, with n), or the epochs
    the resume points hold. No published number beside it: the LfF paper's table was not read
    here (docs/references.md §4a)."""
    return "\n".join(share_table(life, labelled(LFF_ROWS, "LfFColoredMNIST"), cell)[0])


def share_table(life, rows, cell_of):
    """(Markdown lines: a row per method of rows that the plan has, a column per share of
    conflicting images in ascending order (the LfF paper's), each cell cell_of(life, runs);
    the plan's runs by (variant, sigma))."""
    runs = {}
    for r in life.plan:
        runs.setdefault((r["variant"], r["sigma"]), []).append(r)
    ratios = sorted({r["sigma"] for r in life.plan if r["sigma"] in LFF_RATIOS}, key=float)
    lines = ["| conflicting | " + " | ".join(f"{float(r):.1%}" for r in ratios) + " |",
             "|---|" + "---|" * len(ratios)]
    for method, name in rows:
        if any((method, r) in runs for r in ratios):
            lines.append(f"| {name} | " + " | ".join(cell_of(life, runs.get((method, r), []))
                                                      for r in ratios) + " |")
    return lines, runs


COMPARE_ROWS = ("baseline", "lff", "groupdro", "jtt", "lnl", "blindeye", "dfa")
COMPARE_MARKS = ("<!-- long_runs.py table --plan compare -->",
                 "<!-- end of long_runs.py table --plan compare -->")


def selection_of(life, grid, path):
    """The grid's selection made now from its finished records (validation only:
    hparams.choose), with today's intervals; where the plan wrote its file when the chosen runs
    started, that file's choice is what they trained at: shown as made now when the two choose
    alike, else the file as it is; {"damaged": why, "path"} for a file that is not a selection. None
    while the grid is unfinished or a record cannot be read."""
    import hparams  # here: the other commands need no torch
    stored, made = None, None
    runs = [life.by_name[g] for g in grid]
    if path and os.path.lexists(path):
        try:
            stored = hparams.check_selection(read_json(path, life.opts.ledger),
                                             runs[0]["variant"], path)
        except UserError as err:  # a committed file: named, never trusted nor a traceback
            return {"damaged": str(err), "path": path}
        except OSError as exc:
            return {"damaged": f"{path}: {exc.strerror}", "path": path}
    if runs and all(life.state(r) == "finished" for r in runs):
        try:
            made = hparams.choose(runs[0]["variant"], [
                (r["point"], life.view(r, "ledger").record, r["name"]) for r in runs], CRITERION)
        except UserError:
            made = None
    if stored is not None and (made is None or made.get("choice") != stored.get("choice")):
        return stored
    return made


def compare_cell(life, runs):
    """Ours for one (method, share) of the comparison: a method without a grid pools its
    seeds; one with a grid shows how far its grid is, then pools the chosen grid run (seed 0)
    with the seeds trained at the choice, and names the choice."""
    pooled, selection = chosen_runs(life, runs)
    if selection and "damaged" in selection:
        return (f"its selection file is damaged ({os.path.basename(selection['path'])}): "
                "restore it from git (`long_runs.py table --full` says why)")
    if pooled is None:
        grid = [r for r in runs if r.get("point")]
        done = sum(life.state(r) == "finished" for r in grid)
        return f"grid: {done} of {len(grid)} runs finished"
    if selection is None:
        return cell(life, pooled)
    choice = ", ".join(f"{k.split('_', 1)[1]} {v:g}" if isinstance(v, (int, float))
                       else f"{k} {v}" for k, v in selection.get("choice", {}).items())
    noisy = "" if selection.get("separable") else ", too noisy to choose"
    return f"{cell(life, pooled)} [{choice}{noisy}]"


def chosen_runs(life, runs):
    """(the runs a cell pools: the chosen grid run and the seeds at the choice, the
    selection), or (runs, None) for a method without a grid; None for the runs while its grid
    has not chosen (or its selection file is damaged)."""
    grid = [r for r in runs if r.get("point")]
    if not grid:
        return runs, None
    chosen = [r for r in runs if r.get("choose")]
    selection = selection_of(life, [r["name"] for r in grid],
                             chosen[0]["choose"]["path"] if chosen else None)
    if selection is None or "damaged" in selection:
        return None, selection
    seed0 = life.by_name.get(selection.get("chosen_run"))
    return ([seed0] if seed0 else []) + chosen, selection


def full_compare_table(life):
    """The comparison with what the README leaves out: per method and share, the final epoch,
    the test oracle (the best test accuracy over epochs: chosen on the test set, shown only to
    measure the gap) and the criterion's value at the choice with its interval."""
    lines = ["| method | conflicting | final epoch | test oracle | "
             f"{CRITERION} at the choice [95% interval] | choice |", "|---|---|---|---|---|---|"]
    runs = {}
    for r in life.plan:
        if r["sigma"] in LFF_RATIOS:
            runs.setdefault((r["variant"], r["sigma"]), []).append(r)
    names = dict(labelled(COMPARE_ROWS, "LfFColoredMNIST"))
    order = {m: i for i, m in enumerate(COMPARE_ROWS)}
    for (method, ratio), group in sorted(runs.items(), key=lambda kv: (
            order.get(kv[0][0], len(order)), float(kv[0][1]))):
        pooled, selection = chosen_runs(life, group)
        if selection and "damaged" in selection:
            lines.append(f"| {names[method]} | {float(ratio):.1%} | {selection['damaged']} "
                         "| — | — | — |")
            continue
        if pooled is None:
            continue
        records = [life.view(r, "ledger").record for r in pooled
                   if final_accuracy(life, r) is not None]
        oracle = [x[metrics.ORACLE] for x in records if number(x.get(metrics.ORACLE)) is not None]
        crit, choice = "—", "recipe"
        if selection:
            best = next((g for g in selection["grid"] if g["run"] == selection["chosen_run"]),
                        None)
            if best:
                crit = f"{best['value']:.3f} [{best['ci95'][0]:.3f}, {best['ci95'][1]:.3f}]"
            choice = ", ".join(f"{k} {v:g}" for k, v in selection["choice"].items())
            choice += "" if selection.get("separable") else " (too noisy to choose)"
        lines.append(f"| {names[method]} | {float(ratio):.1%} | "
                     f"{cell(life, pooled)} | {spread(oracle) if oracle else '—'} | {crit} | "
                     f"{choice} |")
    return "\n".join(lines)


def compare_table(life):
    """The README's comparison table: per method and share of conflicting images, the final
    epoch at the hyperparameters chosen on validation (plans.CRITERION), mean ± std over
    seeds with n, the choice in brackets; then the later methods on LNL's Colored MNIST."""
    rows = labelled(COMPARE_ROWS, "LfFColoredMNIST")
    lines, runs = share_table(life, rows, compare_cell)
    other = [(m, runs[m, "0.020"]) for m, _ in rows if (m, "0.020") in runs]
    if other:
        on_lnls = dict(labelled(COMPARE_ROWS, "ColoredMNIST"))
        lines += ["", "| LNL's Colored MNIST, σ² 0.020 | " + " | ".join(
            on_lnls[m] for m, _ in other) + " |", "|---|" + "---|" * len(other),
            "| final epoch | " + " | ".join(cell(life, rs) for _, rs in other) + " |"]
    return "\n".join(lines)


def table_of(life):
    """The plan's README table and its marks."""
    if getattr(life.opts, "plan", "headline") == "lff":
        return lff_table(life), LFF_MARKS
    if getattr(life.opts, "plan", "headline") == "compare":
        return compare_table(life), COMPARE_MARKS
    return headline_table(life), TABLE_MARKS


def write_table(life, path):
    """Replace the table between the plan's marks in path (the README) with its table
    (table_of); a file without both marks is left alone (one line says so)."""
    root = os.path.dirname(os.path.abspath(path))
    try:
        text = read_text(path, root)
    except UserError as err:
        raise SystemExit(f"{err} (nothing was changed)")
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc.strerror}; pass the README's path")
    table, marks = table_of(life)
    start, end = (text.find(mark) for mark in marks)
    if start < 0 or end < start:
        raise SystemExit(f"{path} has no '{marks[0]}' ... '{marks[1]}' block; add "
                         "the two lines where the table goes (nothing was changed)")
    start += len(marks[0])
    new = text[:start] + "\n" + table + "\n" + text[end:]
    if new != text:
        write_text(path, new, root)  # never through a link (safe_files)
    print(f"{path}: the table {'updated' if new != text else 'already matched'}")
