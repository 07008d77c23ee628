"""Hyperparameters chosen without the test set (hparams.py, issue #41, 4): each method's grid,
the named validation criteria with their bootstrap intervals, a choice that never reads a test
metric, a grid too noisy to choose said so, and main.py --hparams_from applying a choice and
recording the criterion, the grid and the choice."""
import copy
import json
import os

import numpy as np
import pytest

import hparams
import main as cli
from errors import UserError
from methods import METHODS
from safe_files import write_json


def record(conflicting, worst, seed=0):
    """A finished record: validation groups (label, bias, n, correct, aligned) with the given
    conflicting accuracy over 200 images and a worst group at `worst` (of 50), plus test
    metrics that a selection must never read."""
    rng = np.random.default_rng(seed)
    groups = [[0, 0, 400, 390, 1], [1, 1, 400, 380, 1],
              [0, 1, 50, int(round(worst * 50)), 0],
              [1, 0, 150, int(round(conflicting * 200 - worst * 50)), 0]]
    return {"val_groups": groups, "test_acc": float(rng.random()),
            "test_acc_conflicting": float(rng.random()), "test_worst_group_acc": 0.1,
            "test_acc_oracle": 0.9, "test_groups": [[0, 0, 10, 3, 1]]}


def test_every_method_after_lnl_declares_a_grid_over_its_own_flags_defaults_first():
    for name in ("lff", "groupdro", "jtt", "lnl", "blindeye", "dfa"):
        grid = METHODS[name].grid
        own = {o.name: o.default for o in METHODS[name].options}
        assert grid and set(grid) <= own.keys() | {"lff_q"}, name
        first = hparams.points(name)[0]
        defaults = {o.name: o.default for c in METHODS.values() for o in c.options}
        assert first == {k: defaults[k] for k in grid}, name  # the recipe's point first
    assert len(hparams.points("jtt")) == 9 and hparams.points("baseline") == [{}]
    assert hparams.tag({"jtt_first_epochs": 10, "jtt_up": 50.0}) == "jtt_first_epochs10_jtt_up50"


def test_the_criteria_and_their_intervals():
    value, (low, high) = hparams.criterion(record(0.6, 0.4), "val_acc_conflicting")
    assert value == pytest.approx(0.6) and low < 0.6 < high and high - low < 0.2
    value, (low, high) = hparams.criterion(record(0.6, 0.4), "val_worst_group_acc")
    assert value == pytest.approx(0.4) and low < 0.4 < high
    assert hparams.criterion({"test_acc": 1.0}, "val_acc_conflicting") is None
    damaged = record(0.6, 0.4)
    damaged["val_groups"][0][3] = 999  # more correct than examples
    assert hparams.criterion(damaged, "val_acc_conflicting") is None


def test_an_interval_over_many_tiny_conflicting_groups_has_the_spread_of_its_images():
    """At 1% conflicting most (label, bias) groups hold one or two validation images, each all
    right or all wrong: the interval is that of the pooled images' accuracy (50 of 60 right:
    a binomial's spread, about ± 0.09), never the zero width of redrawing each group alone."""
    groups = [[0, 0, 4000, 3900, 1], [1, 1, 4000, 3950, 1]]
    groups += [[k % 10, 1 + k % 9, 2, 2 if k < 25 else 0, 0] for k in range(30)]
    value, (low, high) = hparams.criterion({"val_groups": groups}, "val_acc_conflicting")
    assert value == pytest.approx(50 / 60)
    assert 0.12 < high - low < 0.26 and low < value < high


def test_the_choice_is_the_same_when_every_test_metric_is_noise():
    runs = [({"lff_q": q}, record(c, w, seed=i), f"run{i}")
            for i, (q, c, w) in enumerate(((0.7, 0.50, 0.30), (0.5, 0.80, 0.60),
                                           (0.9, 0.55, 0.20)))]
    chosen = hparams.choose("lff", runs, "val_acc_conflicting")
    assert chosen["choice"] == {"lff_q": 0.5} and chosen["separable"] is True
    rng = np.random.default_rng(1)
    for trial in range(20):
        noisy = copy.deepcopy(runs)
        for _, rec, _ in noisy:
            for key in [k for k in rec if k.startswith("test")]:
                rec[key] = (float(rng.random()) if not isinstance(rec[key], list)
                            else [[0, 0, 10, int(rng.integers(0, 11)), 1]])
        assert hparams.choose("lff", noisy, "val_acc_conflicting") == chosen
        assert hparams.choose("lff", noisy, "val_worst_group_acc")["choice"] == {"lff_q": 0.5}


def test_a_grid_the_criterion_cannot_tell_apart_is_said_to_be_too_noisy():
    runs = [({"lff_q": q}, record(c, 0.3), q) for q, c in ((0.7, 0.50), (0.5, 0.52))]
    chosen = hparams.choose("lff", runs, "val_acc_conflicting")
    assert chosen["separable"] is False and "too noisy" in chosen["note"]
    assert chosen["choice"] == {"lff_q": 0.5}
    with pytest.raises(UserError, match="no validation groups"):
        hparams.choose("lff", [({"lff_q": 0.7}, {"test_acc": 0.9}, "old")],
                       "val_acc_conflicting")


def test_hparams_from_applies_the_choice_and_the_record_holds_it(mnist_root, tmp_path,
                                                                  capsys):
    runs = [({"groupdro_eta": eta}, record(c, 0.3), f"g{eta}")
            for eta, c in ((0.01, 0.5), (0.001, 0.7), (0.1, 0.4))]
    selection = hparams.choose("groupdro", runs, "val_acc_conflicting")
    path = tmp_path / "selection.json"
    write_json(str(path), selection)
    common = ["--config", "configs/lff_cmnist.yaml", "--method", "groupdro", "--data_root_base",
              mnist_root, "--output_dir", str(tmp_path), "--device", "cpu",
              "--max_train_samples", "600", "--max_test_samples", "200", "--epochs", "1",
              "--hparams_from", str(path)]
    _, args = cli.parse_args(common)
    assert args.groupdro_eta == 0.001
    cli.main(common + ["--experiment_name", "chosen"])
    saved = json.load(open(tmp_path / "chosen" / "results.json"))
    assert saved["config"]["groupdro_eta"] == 0.001
    assert saved["hparam_selection"]["criterion"] == "val_acc_conflicting"
    assert len(saved["hparam_selection"]["grid"]) == 3
    assert saved["val_groups"] and "val_acc_conflicting" in saved

    with pytest.raises(SystemExit):  # a flag that disagrees with the choice
        cli.parse_args(common + ["--groupdro_eta", "0.1"])
    assert "disagrees with --hparams_from" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the default passed by hand disagrees too
        cli.parse_args(common + ["--groupdro_eta", "0.01"])
    assert "disagrees with --hparams_from" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # another method's selection
        cli.parse_args(["--method", "lff", "--hparams_from", str(path)])
    assert "not 'lff'" in capsys.readouterr().err
    bad = dict(selection, choice={"groupdro_eta": "fast"})
    write_json(str(path), bad)
    with pytest.raises(SystemExit):
        cli.parse_args(["--method", "groupdro", "--hparams_from", str(path)])
    assert "is not a float" in capsys.readouterr().err


def groupdro_compare(tmp_path, seeds=(0, 1)):
    """(long_runs, the lifecycle of a compare plan of GroupDRO at 1%, `seeds`, its grid
    runs, seed 1's run at the choice), nothing trained."""
    import sys
    import types
    sys.path.insert(0, "scripts")
    sys.path.insert(0, "short_lived")
    import long_runs
    import plans
    ledger = tmp_path / "ledger"
    plan = plans.compare_plan(100, ("0.01",), seeds, ("groupdro",), ledger=str(ledger))
    opts = types.SimpleNamespace(work=str(tmp_path / "work"), keep=str(tmp_path / "keep"),
                                 ledger=str(ledger), device="cpu", plan="compare")
    return (long_runs, long_runs.lifecycle(plan, opts), [r for r in plan if r.get("point")],
            next(r for r in plan if r["name"] == "cmp_ratio0.01_seed1_groupdro"))


def finish_grid(life, grid):
    """The grid's records in the ledger: validation conflicting accuracy 0.5, 0.7, 0.4."""
    for run, conflicting in zip(grid, (0.5, 0.7, 0.4)):
        folder = os.path.join(life.opts.ledger, run["name"])
        os.makedirs(folder)
        with open(os.path.join(folder, "results.json"), "w") as f:
            json.dump({**record(conflicting, 0.3), "epochs": 100, "test_acc": 1.0 - conflicting},
                      f)


def test_the_compare_plan_grids_at_seed_0_then_the_seeds_wait_for_their_grid_and_its_choice(
        tmp_path):
    """Seed 0 trains every grid point; seed 1's run waits for its grid, then starts with the
    choice the grid's validation records make (written once into the ledger, never from a
    test metric), and the table names it."""
    long_runs, life, grid, chosen = groupdro_compare(tmp_path)
    assert [r["point"]["groupdro_eta"] for r in grid] == [0.01, 0.001, 0.1]
    assert all(r["seed"] == 0 and "--groupdro_eta" in r["flags"] for r in grid)
    assert chosen["waits_for"] == [r["name"] for r in grid] and "--hparams_from" in chosen["flags"]
    assert not life.ready(chosen) and "grid: 0 of 3" in long_runs.compare_table(life)
    finish_grid(life, grid)
    assert life.ready(chosen)
    life.prepare(chosen)
    selection = json.load(open(chosen["choose"]["path"]))
    assert selection["choice"] == {"groupdro_eta": 0.001}
    assert selection["chosen_run"] == grid[1]["name"]
    row = next(l for l in long_runs.compare_table(life).splitlines() if l.startswith("| Group"))
    assert row == "| GroupDRO | 0.300 (n = 1) [eta 0.001] |"  # seed 0's chosen run so far
    full = long_runs.full_compare_table(life).splitlines()[-1]
    assert full.startswith("| GroupDRO | 1.0% | 0.300 (n = 1) |")
    assert "| 0.700 [" in full and full.endswith("| groupdro_eta 0.001 |")


@pytest.mark.parametrize("damage", [{"choice": [1]}, {"choice": {"groupdro_eta": "fast"}},
                                    {"choice": {"groupdro_eta": 0.5}, "grid": "x"},
                                    {"grid": [{"run": 1}]}, {"separable": "yes"},
                                    {"choice": {"groupdro_eta": 0.5}},  # no grid point's
                                    {"chosen_run": "cmp_ratio0.01_seed0_groupdro_eta0.1"}])
def test_a_damaged_selection_file_is_named_in_the_tables_never_read_as_a_choice(tmp_path,
                                                                               damage):
    """A committed selection file is untrusted: one that is not what the plan writes is named
    in both tables (what to do, which file), never shown as the choice nor a traceback."""
    long_runs, life, grid, chosen = groupdro_compare(tmp_path)
    finish_grid(life, grid)
    life.prepare(chosen)
    path = chosen["choose"]["path"]
    with open(path) as f:
        selection = json.load(f)
    with open(path, "w") as f:
        json.dump({**selection, **damage}, f)
    row = next(l for l in long_runs.compare_table(life).splitlines() if l.startswith("| Group"))
    assert row == ("| GroupDRO | its selection file is damaged (groupdro_ratio0.01.json): "
                   "restore it from git (`long_runs.py table --full` says why) |")
    full = long_runs.full_compare_table(life).splitlines()[-1]
    assert full.startswith(f"| GroupDRO | 1.0% | ") and path in full and "0.5" not in full


def test_a_run_at_its_grids_choice_is_estimated_from_the_chosen_grid_run(tmp_path):
    """JTT's upsampled epoch depends on its choice: before the choice a chosen-hyperparameter
    run is estimated from its grid's slowest run, after it from the chosen one."""
    long_runs, life, grid, chosen = groupdro_compare(tmp_path)
    for run, seconds in zip(grid, (100.0, 300.0, 200.0)):
        os.makedirs(os.path.join(life.opts.ledger, run["name"]))
        with open(os.path.join(life.opts.ledger, run["name"], "pace.json"), "w") as f:
            json.dump({"cpu_1_threads": {"seconds": seconds, "epochs": 100}}, f)
    assert long_runs.seconds_per_epoch(life, chosen) == (
        3.0, f"as the slowest of its grid, {grid[1]['name']}")
    for run, conflicting in zip(grid, (0.5, 0.4, 0.7)):  # eta 0.1 is chosen
        with open(os.path.join(life.opts.ledger, run["name"], "results.json"), "w") as f:
            json.dump({**record(conflicting, 0.3), "epochs": 100, "test_acc": 0.5}, f)
    assert long_runs.seconds_per_epoch(life, chosen) == (2.0, f"as {grid[2]['name']}")


def test_a_seed_at_the_choice_is_estimated_from_another_seed_at_it_once_measured(tmp_path):
    """Seed 2 trains what seed 1 trained: its pace, when measured, is the estimate (the grid's
    runs may have trained beside the test suite, several times slower)."""
    long_runs, life, grid, seed1 = groupdro_compare(tmp_path, (0, 1, 2))
    seed2 = life.by_name["cmp_ratio0.01_seed2_groupdro"]
    for run, seconds in zip(grid + [seed1], (100.0, 300.0, 200.0, 50.0)):
        os.makedirs(os.path.join(life.opts.ledger, run["name"]))
        with open(os.path.join(life.opts.ledger, run["name"], "pace.json"), "w") as f:
            json.dump({"cpu_1_threads": {"seconds": seconds, "epochs": 100}}, f)
    assert long_runs.seconds_per_epoch(life, seed2) == (0.5, f"as {seed1['name']}")
    assert long_runs.seconds_per_epoch(life, seed1) == (0.5, "measured")
