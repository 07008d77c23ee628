"""Hyperparameters chosen without the test set (issue #41, 4), as DomainBed and SubpopBench
choose them: each method declares a small grid over its own flags (Method.grid); the grid's
runs (seed 0) are compared on the held-out validation split (--val_fraction: the training
skew, never a test image) by a named criterion, each value with a bootstrap interval; the
seeds then run at the choice (main.py --hparams_from), and each of their records holds the
criterion, the grid and the choice. A run without a grid keeps its paper's recipe.

Criteria (by name, read from a finished record's val_groups, records.group_counts):
  val_acc_conflicting   accuracy on the validation images off the training correlation
  val_worst_group_acc   the lowest accuracy over the (label, bias label) groups (GroupDRO's
                        and JTT's criterion: Sagawa et al. 2020, Liu et al. 2021)
The interval: a bootstrap of the images the criterion reads, seeded, its 2.5% and 97.5%
quantiles: the conflicting images redrawn with replacement as one set (their correct count
Binomial(N, their accuracy)); for the worst group, each group's count redrawn Binomial(n, its
accuracy). (Redrawing the conflicting images within each (label, bias) group, as this did
until 2026-12-07, understates the spread: at 1% conflicting most such groups hold one or two
validation images, all right or all wrong, and redraw to themselves, so an interval could
have no width at all.) A grid whose every interval overlaps the best one's cannot be told
apart by the criterion: the choice is still the best value (the papers' rule), and the
selection says it is too noisy to choose ("separable": false).
"""
import copy
import itertools

import numpy as np

import metrics
from errors import UserError
from methods import METHODS
from safe_files import number, short_value

RESAMPLES, SEED = 10000, 0


def points(method):
    """The method's grid as a list of {flag: value}, the recipe's defaults first."""
    grid = METHODS[method].grid
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def tag(point):
    """A grid point as part of a run name: lff_q0.5, jtt_first_epochs10_jtt_up20."""
    return "_".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}"
                    for k, v in point.items())


def _groups(record, split="val"):
    """[(examples, correct, aligned)] of a record's split, or None (absent or damaged)."""
    rows = record.get(metrics.groups(split)) if isinstance(record, dict) else None
    if not isinstance(rows, list) or not rows:
        return None
    out = []
    for row in rows:
        if (not isinstance(row, list) or len(row) != 5
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in row)):
            return None
        n, correct, aligned = row[2:]
        if not 0 <= correct <= n or n == 0 or aligned not in (0, 1):
            return None
        out.append((n, correct, aligned))
    return out


def _conflicting(groups, rng, resamples):
    """Accuracy over the conflicting images, and over each redraw of them as one set."""
    n = sum(n for n, _, a in groups if not a)
    if not n:
        return None
    correct = sum(c for _, c, a in groups if not a)
    return correct / n, rng.binomial(n, correct / n, size=resamples) / n


def _worst(groups, rng, resamples):
    """The lowest group accuracy, and its value over each redraw of every group's count."""
    draws = [rng.binomial(n, c / n, size=resamples) / n for n, c, _ in groups]
    return min(c / n for n, c, _ in groups), np.min(np.stack(draws), axis=0)


CRITERIA = {metrics.conflicting("val"): _conflicting, metrics.worst_group("val"): _worst}


def criterion(record, name, resamples=RESAMPLES, seed=SEED):
    """(value, [low, high]) of a criterion on a finished record, or None when the record has
    no validation groups (or none the criterion reads)."""
    groups = _groups(record)
    if groups is None:
        return None
    result = CRITERIA[name](groups, np.random.default_rng(seed), resamples)
    if result is None:
        return None
    value, boot = result
    return float(value), [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]


def choose(method, runs, name):
    """The selection over a grid's finished runs: runs is [(point, record, run name)]. Reads
    validation fields only. Returns {method, criterion, grid: [{hparams, run, value, ci95}],
    choice, chosen_run, separable, note}; a UserError when a grid point has no usable record."""
    if name not in CRITERIA:
        raise UserError(f"unknown criterion {name!r}; known: {', '.join(CRITERIA)}")
    grid = []
    for point, record, run in runs:
        scored = criterion(record, name)
        if scored is None:
            raise UserError(f"{run}: its record has no validation groups for {name} (a run "
                            "without --val_fraction, or one recorded before 2026-12-06): train "
                            "it again with the grid's flags")
        grid.append({"hparams": point, "run": run, "value": scored[0], "ci95": scored[1]})
    best = max(range(len(grid)), key=lambda i: (grid[i]["value"], -i))  # ties: the earlier
    low = grid[best]["ci95"][0]
    separable = any(g["ci95"][1] < low for i, g in enumerate(grid) if i != best)
    note = ("" if separable else "too noisy to choose: every grid point's interval overlaps "
            "the best one's; the best value is taken all the same")
    config = runs[best][1].get("config") if isinstance(runs[best][1].get("config"), dict) else {}
    return {"method": method, "criterion": name, "grid": grid,
            "choice": grid[best]["hparams"], "chosen_run": grid[best]["run"],
            "separable": separable, "note": note,
            "chosen_on": {k: config.get(k) for k in ("dataset_name", "lff_conflict_ratio",
                                                     "color_var", "val_fraction")}}


def read_selection(selection, method, path):
    """A selection (a handed file's JSON, already read through the file layer) checked for
    what main.py applies: its method, and a choice of this method's grid flags whose values
    are of the grid's kinds. Returns {flag: value}."""
    where = f"--hparams_from {path}"
    if selection.get("method") != method:
        raise UserError(f"{where} chose hyperparameters for --method "
                        f"{selection.get('method')!r}, not {method!r}; pass that method's "
                        "selection")
    choice, grid = selection.get("choice"), METHODS[method].grid
    if not isinstance(choice, dict) or not choice or set(choice) - set(grid):
        raise UserError(f"{where} holds no choice of {method}'s grid flags "
                        f"({', '.join(grid) or 'it has none'}); write it with "
                        "scripts/launch.py --plan compare or pass the flags themselves")
    for flag, value in choice.items():
        kind = type(grid[flag][0])
        ok = number(value) is not None and (kind is float or float(value).is_integer())
        if not ok:
            raise UserError(f"{where}: {flag}={value!r} is not a {kind.__name__}")
        choice[flag] = kind(value)
    if selection.get("criterion") not in CRITERIA:
        raise UserError(f"{where} names no known criterion ({', '.join(CRITERIA)})")
    return choice


def check_selection(selection, method, path):
    """A stored selection (a committed file, so untrusted) whole, as choose writes it: what
    read_selection checks, then its grid (a run, a value and a 95% interval per point), its
    chosen run (a grid point's, whose values are the choice) and whether it was separable.
    Returns the selection; a UserError says what to do."""
    choice = read_selection(copy.deepcopy(selection), method, path)
    grid = selection.get("grid")
    points_ok = isinstance(grid, list) and grid and all(
        isinstance(g, dict) and isinstance(g.get("run"), str)
        and isinstance(g.get("hparams"), dict) and number(g.get("value")) is not None
        and isinstance(g.get("ci95"), list) and len(g["ci95"]) == 2
        and all(number(v) is not None for v in g["ci95"]) for g in grid)
    chosen = points_ok and [g for g in grid if g["run"] == selection.get("chosen_run")]
    if not (chosen and chosen[0]["hparams"] == choice  # the choice is the chosen grid point's
            and isinstance(selection.get("separable"), bool)):
        raise UserError(f"{path} is not a selection as the plan writes it (its grid, chosen run "
                        "or separable flag); restore it from git, or move it aside and the "
                        "plan chooses again from the grid's records")
    return selection


def applied_text(selection, args, data_flags):
    """The line a run at a selection's choice logs at its start: the choice, its criterion and
    where it was chosen, and what differs from this run's data (a choice carried to another
    share or benchmark, as BlindEye's alpha to LNL's, is the user's call, but never a silent
    one). `data_flags`: this run's dataset's own flags (its spec's options)."""
    choice = ", ".join(f"{k} {v:g}" for k, v in selection["choice"].items())
    made = selection.get("chosen_on")
    made = made if isinstance(made, dict) else {}
    same = made.get("dataset_name") == args.dataset_name
    shown = lambda v: v if isinstance(v, (int, float)) or (
        isinstance(v, str) and v.isprintable() and len(v) <= 40) else short_value(v)
    differs = [f"{k} {shown(made[k])} (this run: {getattr(args, k)})"
               for k in (list(data_flags) + ["val_fraction"] if same else ["dataset_name"])
               if made.get(k) is not None and made[k] != getattr(args, k, None)]
    noisy = "" if selection.get("separable") is True else ", too noisy to choose"
    return (f"hyperparameters from --hparams_from {args.hparams_from}: {choice} (chosen by "
            f"{selection['criterion']}{noisy})"
            + (f"; chosen on other data: {', '.join(differs)}" if differs else ""))
