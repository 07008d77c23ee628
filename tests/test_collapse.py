"""A run that collapses to one class is named so (issue #41, 3): in its log when it happens, in
its record with the epoch it happened, and in every table, never shown as the method's
accuracy without a word."""
import json
import os
import sys
import types

import torch

import main as cli
import records

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "short_lived"))
import dead_units  # noqa: E402
import long_runs  # noqa: E402
import plans  # noqa: E402
import results  # noqa: E402


def test_collapse_is_read_from_the_epochs_top_class_share():
    rows = [{"epoch": 1, "test_top_class_share": 0.2}, {"epoch": 2, "test_top_class_share": 0.95},
            {"epoch": 3, "test_top_class_share": 1.0}, {"epoch": 4, "test_top_class_share": 0.3}]
    state = records.collapse(rows)
    assert state["first_epoch"] == 2 and state["epochs"] == 2 and state["final"] is False
    assert "recovered" in records.collapse_text(state)
    assert records.collapse(rows[:3])["final"] is True
    assert records.collapse(rows[:1]) is None and records.collapse([]) is None
    assert records.top_class_share([3, 3, 3, 1], 10) == 0.75


def test_a_forced_blindeye_collapse_is_detected_and_named(mnist_root, tmp_path, capfd):
    """BlindEye with its confusion loss weighted 100 times erases f's features: every test
    prediction names one class from the first epoch. The log says so, the record holds the
    state, and both tables name it beside the accuracy."""
    torch.set_num_threads(1)
    folder = tmp_path / "ledger" / "lff_ratio0.01_seed0_blindeye"
    cli.main(["--config", "configs/lff_cmnist.yaml", "--method", "blindeye", "--blindeye_alpha",
              "100", "--lr", "0.01", "--data_root_base", mnist_root, "--output_dir",
              str(tmp_path / "ledger"), "--device", "cpu", "--max_train_samples", "1000",
              "--max_test_samples", "300", "--batch_size", "64", "--epochs", "2",
              "--save_every", "1", "--experiment_name", folder.name])
    out = capfd.readouterr().out
    assert "collapsed to one class" in out
    final = next(line for line in out.splitlines() if "final test_acc=" in line)
    assert "collapsed to one class at epoch 1 (still at the end)" in final  # never bare
    record = json.load(open(folder / "results.json"))
    assert record["collapse"]["first_epoch"] == 1 and record["collapse"]["final"] is True
    assert record["test_top_class_share"] >= records.COLLAPSE_SHARE
    # the mechanism (scripts/dead_units.py): f's units die under the confusion loss
    rows = list(dead_units.rows(str(folder), 500))
    assert [r[0] for r in rows] == [1, 2] and all(r[1] > 0.5 for r in rows)

    plan = plans.lff_plan(2, ("0.01",), (0,), ("blindeye",))
    opts = types.SimpleNamespace(work=str(tmp_path / "work"), keep=str(tmp_path / "keep"),
                                 ledger=str(tmp_path / "ledger"), device="cpu", plan="lff")
    life = long_runs.lifecycle(plan, opts)
    row = next(line for line in long_runs.lff_table(life).splitlines()
               if line.startswith("| BlindEye"))
    assert "1 of 1 collapsed to one class (epoch 1)" in row
    record["collapse"]["first_epoch"] = "<img src=x>"  # a handed record's text: never shown
    (folder / "results.json").write_text(json.dumps(record))
    row = next(line for line in long_runs.lff_table(long_runs.lifecycle(plan, opts)).splitlines()
               if line.startswith("| BlindEye"))
    assert "1 of 1 collapsed to one class (epoch ?)" in row and "img" not in row

    frame = results.load_records([str(tmp_path / "ledger")])
    _, text = results.table_text(frame, ["variant"], ["test_acc"], None, results.load_paper())
    assert "Ended collapsed to one class (1 of 1 runs" in text and folder.name in text


def test_a_healthy_run_records_no_collapse(mnist_root, tmp_path):
    cli.main(["--config", "configs/lff_cmnist.yaml", "--method", "baseline", "--data_root_base",
              mnist_root, "--output_dir", str(tmp_path), "--device", "cpu",
              "--max_train_samples", "1000", "--max_test_samples", "300", "--batch_size", "64",
              "--epochs", "2", "--lff_input_scale", "unit", "--save_every", "1",
              "--experiment_name", "ok"])
    record = json.load(open(tmp_path / "ok" / "results.json"))
    assert record["collapse"] is None and record["test_top_class_share"] < 0.5
    assert all(dead < 0.5 for _, dead, _, _ in dead_units.rows(str(tmp_path / "ok"), 500))


def test_a_record_with_impossible_values_is_named_in_the_tables_and_status(tmp_path, capsys):
    """A test_acc of 1e308 or a 400-digit epoch count entered the table as a 300-digit
    'mean ± inf', and status read 'not started 100/100': such a record is damaged, and named."""
    plan = plans.lff_plan(100, ("0.01",), (0, 1), ("lff",))
    ledger = tmp_path / "ledger"
    for run, record in zip(plan, ({"epochs": 100, "test_acc": 1e308},
                                  {"epochs": 10 ** 400, "test_acc": 0.5})):
        (ledger / run["name"]).mkdir(parents=True)
        (ledger / run["name"] / "results.json").write_text(json.dumps(record))
    opts = types.SimpleNamespace(work=str(tmp_path / "work"), keep=str(tmp_path / "keep"),
                                 ledger=str(ledger), device="cpu", plan="lff")
    life = long_runs.lifecycle(plan, opts)
    row = next(line for line in long_runs.lff_table(life).splitlines()
               if line.startswith("| LfF"))
    assert "seed 0, seed 1: damaged record (" in row and "inf" not in row
    assert "test_acc 1e+308 is not an accuracy in [0, 1]" in row
    long_runs.status(life)
    assert capsys.readouterr().out.count("damaged record in the ledger") == 2
    results.load_records([str(ledger)])
    err = capsys.readouterr().err
    assert err.count("warning: skipped") == 2 and "not a whole number of epochs" in err
