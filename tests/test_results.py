"""scripts/results.py on hand-written run records: grouping by configuration keys, sample
std and n, the paper's numbers beside ours, older records, curves and a sweep's state."""
import json
import os
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import results  # noqa: E402


def record(folder, config, epochs_done=None, curve=None, **metrics):
    """A run folder as main.py leaves it: args.json, metrics.jsonl, checkpoints/ and (when
    finished) results.json with the config inside."""
    (folder / "checkpoints").mkdir(parents=True)
    config = {"dataset_name": "ColoredMNIST", "method": "lnl", "seed": 0, "color_var": 0.02,
              "grayscale": False, "epochs": 2, "experiment_name": folder.name, **config}
    (folder / "args.json").write_text(json.dumps(config))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e + 1, **row}) + "\n" for e, row in enumerate(curve or [])))
    if metrics:
        done = config["epochs"] if epochs_done is None else epochs_done
        (folder / "results.json").write_text(json.dumps(
            {"epochs": done, **metrics, "config": config,
             "provenance": {"commit": "abc", "dirty": False, "device": "cpu"}}))


@pytest.fixture
def ledger(tmp_path):
    record(tmp_path / "cmnist_var0.020_seed0_lnl", {}, test_acc=0.8, bias_agreement=0.2)
    record(tmp_path / "cmnist_var0.020_seed1_lnl", {"seed": 1}, test_acc=0.9)
    record(tmp_path / "cmnist_var0.050_seed0_gray", {"method": "baseline", "grayscale": True,
                                                     "color_var": 0.05}, test_acc=0.7)
    irm = {"dataset_name": "IRMColoredMNIST", "method": "irm"}
    record(tmp_path / "irm_cmnist" / "irm_r0", {**irm, "irm_penalty_weight": 9e4},
           train_acc=0.7, test_acc=0.68)
    record(tmp_path / "irm_cmnist" / "erm_r0", {**irm, "irm_penalty_weight": 0.0},
           train_acc=0.87, test_acc=0.17)
    record(tmp_path / "andmask_synthetic" / "andmask_s0",
           {"dataset_name": "SpiralSignatures", "method": "andmask", "andmask_tau": 1.0},
           train_acc=0.9, test_acc=0.85)
    return tmp_path


def test_methods_table_groups_by_configuration_not_folder_names(ledger, capsys):
    results.main(["methods", str(ledger)])
    text = (ledger / "methods_table" / "results.md").read_text()
    # sample std of 0.8 and 0.9 is 0.0707 (the population std would be 0.050)
    assert "| LNL (ours) | 0.850 ± 0.071 (n = 2) | — |" in text
    assert "| LNL (paper) | 0.8185 | 0.9618 |" in text
    assert "| Gray (ours) | — | 0.700 (n = 1) |" in text  # --grayscale, not the folder name
    assert "| ERM | 1 | 0.870 | 0.170 | 0.874 | 0.171 |" in text
    assert "| IRM | 1 | 0.700 | 0.680 | 0.708 | 0.669 |" in text
    assert "| AND-mask | 1 | 0.900 | 0.850 | — | — |" in text and "CIFAR" not in text
    assert "sample std (ddof=1)" in text
    assert text in capsys.readouterr().out


def test_table_filters_groups_and_writes_csv_and_markdown(ledger, capsys):
    out = ledger / "t"
    results.main(["table", str(ledger), "--where", "dataset_name=ColoredMNIST",
                  "experiment_name=cmnist_var0.020*", "--group_by", "variant", "seed",
                  "--metrics", "test_acc", "bias_agreement", "--out", str(out), "--name", "x"])
    printed = capsys.readouterr().out
    assert "| LNL | 0 | 1 | 0.800 | 0.200 | 0.8185 | — |" in printed
    assert "| LNL | 1 | 1 | 0.900 | — | 0.8185 | — |" in printed and "Gray" not in printed
    import pandas as pd
    summary = pd.read_csv(out / "x.csv")
    assert set(summary.metric) == {"test_acc", "bias_agreement"}
    runs = pd.read_csv(out / "x_runs.csv")
    assert sorted(runs.seed) == [0, 1] and set(runs.commit) == {"abc"}
    assert (out / "x.md").read_text().startswith("| variant | seed | n |")


def test_final_line_and_unknown_keys(ledger, capsys):
    results.main(["table", str(ledger / "irm_cmnist"), "--final", "IRM"])
    assert capsys.readouterr().out.splitlines()[-1] == "IRM test_acc=0.6800"
    with pytest.raises(SystemExit, match="no records have the key 'colour'"):
        results.main(["table", str(ledger), "--where", "colour=red"])


def test_cmnist_preset_writes_table_csv_and_plot(ledger):
    results.main(["cmnist", str(ledger), "--out", str(ledger / "c")])
    md = (ledger / "c" / "results.md").read_text()
    assert "| variant | σ²=0.020 | σ²=0.050 |" in md
    assert "| LNL (ours) | 0.850 ± 0.071 (n = 2) | — |" in md
    assert "| Baseline (paper) | 0.4055 | 0.845 |" not in md  # no Baseline runs: no rows
    csv = (ledger / "c" / "results.csv").read_text().splitlines()
    assert csv[0].startswith("sigma2,seed,variant,method,test_acc") and len(csv) == 4
    assert (ledger / "c" / "accuracy_vs_var.png").read_bytes()[:4] == b"\x89PNG"


def test_cmnist_table_adds_aligned_and_conflicting_and_a_95_interval_of_the_mean(tmp_path):
    for seed, (acc, aligned, conflicting) in enumerate([(0.4, 0.9, 0.35), (0.5, 0.95, 0.45)]):
        record(tmp_path / f"cmnist_var0.020_seed{seed}_baseline",
               {"method": "baseline", "seed": seed}, test_acc=acc, test_acc_aligned=aligned,
               test_acc_conflicting=conflicting, test_acc_ci95=[acc - 0.03, acc + 0.03])
    (tmp_path / "cmnist_var0.020_seed0_baseline" / "probe.json").write_text(json.dumps(
        {"probe_bias_acc": 0.9, "chance": 0.3}))
    results.main(["cmnist", str(tmp_path), "--out", str(tmp_path / "c")])
    md = (tmp_path / "c" / "results.md").read_text()
    assert ("| variant | color_var | n | test_acc_aligned | test_acc_conflicting | "
            "probe_bias_acc | probe_chance |" in md)
    assert "| Baseline | 0.020 | 2 | 0.925 ± 0.035 | 0.400 ± 0.071 | 0.900 | 0.300 |" in md
    import pandas as pd
    summary = pd.read_csv(tmp_path / "c" / "summary.csv")
    row = summary[summary.metric == "test_acc"].iloc[0]
    # mean 0.45, sample std 0.0707, n 2: t(1) = 12.706, half width 12.706 * 0.0707 / sqrt 2
    assert row.ci95_low == pytest.approx(0.45 - 0.6353, abs=1e-3)
    assert row.ci95_high == pytest.approx(0.45 + 0.6353, abs=1e-3)
    runs = pd.read_csv(tmp_path / "c" / "results.csv")
    assert {"test_acc_ci95", "test_acc_aligned", "test_acc_conflicting",
            "probe_bias_acc"} <= set(runs.columns)


def test_cmnist_table_refuses_to_average_runs_of_several_lengths(ledger):
    record(ledger / "cmnist_var0.020_seed2_lnl", {"seed": 2, "epochs": 100}, test_acc=0.95)
    with pytest.raises(SystemExit, match=r"several lengths \(2, 100 epochs per stage\)"):
        results.main(["cmnist", str(ledger), "--out", str(ledger / "c")])
    results.main(["cmnist", str(ledger), "--where", "epochs=100", "--out", str(ledger / "c")])
    md = (ledger / "c" / "results.md").read_text()
    assert "| LNL (ours) | 0.950 (n = 1) |" in md and "Epochs per stage: 100." in md


def test_older_records_take_their_config_from_args_json(tmp_path, capsys):
    run = tmp_path / "old"
    run.mkdir()
    (run / "args.json").write_text(json.dumps({"method": "blindeye", "color_var": 0.03,
                                               "dataset_name": "ColoredMNIST", "epochs": 1}))
    (run / "results.json").write_text(json.dumps({"test_acc": 0.5, "epochs": 1}))
    results.main(["table", str(tmp_path), "--group_by", "variant", "color_var",
                  "--metrics", "test_acc"])
    assert "| BlindEye | 0.030 | 1 | 0.500 | 0.7883 |" in capsys.readouterr().out


def test_curves_one_png_per_group_with_bands(tmp_path, capsys):
    for seed in (0, 1):
        record(tmp_path / f"s{seed}", {"seed": seed}, test_acc=0.5, curve=[
            {"test_acc": 0.3 + seed / 10, "loss_cls": 2.0}, {"test_acc": 0.5, "loss_cls": 1.0}])
    record(tmp_path / "g", {"grayscale": True}, test_acc=0.9,
           curve=[{"test_acc": 0.9, "loss_cls": 0.5}])
    results.main(["curves", str(tmp_path), "--group_by", "variant", "--out", str(tmp_path / "c")])
    pngs = sorted(os.listdir(tmp_path / "c"))
    assert pngs == ["variant=gray.png", "variant=lnl.png"]
    assert (tmp_path / "c" / "variant=lnl.png").read_bytes()[:4] == b"\x89PNG"


def test_curves_hue_draws_stage_two_after_the_run_it_starts_from(tmp_path):
    """The recipe's LNL continues from its baseline's last epoch: with --hue variant both are
    lines of one figure and LNL's epochs follow the baseline's; a figure without the baseline
    keeps LNL's own epochs."""
    record(tmp_path / "cmnist_var0.020_seed0_baseline", {"method": "baseline"}, test_acc=0.4,
           curve=[{"test_acc": 0.3}, {"test_acc": 0.4}])
    record(tmp_path / "cmnist_var0.020_seed0_lnl", {"init_checkpoint": (
        "/elsewhere/outputs/cmnist_var0.020_seed0_baseline/checkpoints/last.pth")},
        test_acc=0.7, curve=[{"test_acc": 0.6}, {"test_acc": 0.7}])
    frame = results.load_records([str(tmp_path)])
    starts = results.stage_starts(frame)
    together = results.curve_lines(frame, "variant", starts)
    assert sorted(together) == ["Baseline", "LNL"]
    assert list(together["Baseline"][0].epoch) == [1, 2]
    assert list(together["LNL"][0].epoch) == [3, 4]
    alone = results.curve_lines(frame[frame.variant == "lnl"], None, starts)
    assert list(alone["all runs"][0].epoch) == [1, 2]
    results.main(["curves", str(tmp_path), "--group_by", "color_var", "--hue", "variant",
                  "--metrics", "test_acc", "--out", str(tmp_path / "c")])
    assert os.listdir(tmp_path / "c") == ["color_var=0.020_by_variant.png"]
    with pytest.raises(SystemExit, match="unknown key 'colour'"):
        results.main(["curves", str(tmp_path), "--hue", "colour", "--out", str(tmp_path / "d")])


def test_status_lists_finished_running_stopped_and_never_started(tmp_path, capsys):
    record(tmp_path / "done", {"seed": 0}, test_acc=0.5)
    record(tmp_path / "live", {"seed": 1}, curve=[{"loss_cls": 1.0}])
    record(tmp_path / "dead", {"seed": 2}, curve=[{"loss_cls": 1.0}])
    old = time.time() - 3600
    for path in (tmp_path / "dead").iterdir():
        os.utime(path, (old, old))
    os.utime(tmp_path / "dead", (old, old))
    results.main(["status", str(tmp_path), "--expect", "seed=0,1,2,3", "color_var=0.020"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()
            if line.startswith("| ") and "seed" not in line}
    assert "finished" in rows["0"] and "2/2" in rows["0"]
    assert "running" in rows["1"] and "1/2" in rows["1"]
    assert "stopped" in rows["2"] and "never started" in rows["3"]
    assert out.splitlines()[-1] == "finished: 1, running: 1, stopped: 1, never started: 1"


def test_ledger_copies_small_records_once_and_never_overwrites(ledger, tmp_path, capsys):
    into = tmp_path / "results" / "cmnist"
    (ledger / "cmnist_var0.020_seed0_lnl" / "checkpoints" / "last.pth").write_bytes(b"w")
    (ledger / "cmnist_var0.020_seed0_lnl" / "probe.json").write_text(
        '{"probe_bias_acc": 0.3, "chance": 0.2}')  # main.py --mode probe ran on it
    results.main(["ledger", str(ledger), "--where", "dataset_name=ColoredMNIST",
                  "--into", str(into)])
    assert sorted(os.listdir(into)) == ["cmnist_var0.020_seed0_lnl", "cmnist_var0.020_seed1_lnl",
                                        "cmnist_var0.050_seed0_gray"]
    assert sorted(os.listdir(into / "cmnist_var0.020_seed0_lnl")) == [
        "args.json", "metrics.jsonl", "probe.json", "results.json"]  # no checkpoints
    # the table is rebuilt from the ledger alone, written where --out says: never into the
    # ledger, which holds run records only
    for command in ("cmnist", "methods", "curves"):
        with pytest.raises(SystemExit, match=f"is a ledger .* --out {into}_"):
            results.main([command, str(into)])
    assert sorted(os.listdir(into)) == ["cmnist_var0.020_seed0_lnl", "cmnist_var0.020_seed1_lnl",
                                        "cmnist_var0.050_seed0_gray"]
    results.main(["cmnist", str(into), "--out", str(tmp_path / "t")])
    assert "| LNL (ours) | 0.850 ± 0.071 (n = 2) | — |" in (tmp_path / "t" / "results.md").read_text()
    # again: nothing added; a ledger file that differs is kept and named
    mine = into / "cmnist_var0.050_seed0_gray" / "results.json"
    mine.write_text("{}")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        results.main(["ledger", str(ledger), "--where", "dataset_name=ColoredMNIST",
                      "--into", str(into)])
    assert "0 files added" in capsys.readouterr().out and str(mine) in str(exc.value)
    assert mine.read_text() == "{}"


def test_damaged_records_are_skipped_with_a_warning(ledger, capsys):
    (ledger / "cmnist_var0.020_seed1_lnl" / "results.json").write_text("{torn")
    with open(ledger / "cmnist_var0.020_seed0_lnl" / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "test')
    results.main(["table", str(ledger), "--where", "variant=lnl", "--group_by", "variant"])
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "seed1" in captured.err
    assert "| LNL | 1 |" in captured.out  # the damaged run is left out, the other counted
    assert len(results.read_metrics(str(ledger / "cmnist_var0.020_seed0_lnl"))) == 0


def test_a_run_reached_twice_through_a_link_counts_once(ledger, tmp_path, capsys):
    os.symlink(ledger / "cmnist_var0.020_seed0_lnl", tmp_path / "again")
    results.main(["table", str(ledger), str(tmp_path), "--where", "variant=lnl", "seed=0",
                  "--group_by", "variant"])
    assert "| LNL | 1 |" in capsys.readouterr().out


def test_a_record_file_that_is_a_link_is_named_and_never_read(ledger, tmp_path, capsys):
    run = tmp_path / "handed" / "linked"
    run.mkdir(parents=True)
    os.symlink(ledger / "cmnist_var0.020_seed0_lnl" / "results.json", run / "results.json")
    os.symlink("/dev/zero", run / "args.json")
    with pytest.raises(SystemExit, match="no finished runs"):  # the link's run is not counted
        results.main(["table", str(tmp_path / "handed"), "--group_by", "variant"])
    captured = capsys.readouterr()
    assert captured.err.count("is a link") == 2 and "linked" in captured.err
    (run / "args.json").unlink()  # beside a plain args.json: the link named once, not twice
    (run / "args.json").write_text("{}")
    with pytest.raises(SystemExit, match="no finished runs"):
        results.main(["table", str(tmp_path / "handed"), "--group_by", "variant"])
    assert capsys.readouterr().err.count("warning: skipped") == 1


def test_unknown_group_key_and_missing_folder_are_one_line(ledger):
    with pytest.raises(SystemExit, match="unknown key 'bogus'"):
        results.main(["table", str(ledger), "--group_by", "bogus"])
    for command in ("status", "table"):
        with pytest.raises(SystemExit, match="is not a folder"):
            results.main([command, str(ledger / "missing")])


def test_the_ledger_holds_two_sweeps_whose_members_share_folder_names(tmp_path, capsys):
    runs = tmp_path / "outputs"
    for sweep_name, acc in (("lnl_sweep", 0.8), ("blindeye_sweep", 0.7)):
        record(runs / sweep_name / "seed=0", {"method": sweep_name.split("_")[0]},
               test_acc=acc)
    into = tmp_path / "ledger"
    results.main(["ledger", str(runs), "--into", str(into)])
    for sweep_name, acc in (("lnl_sweep", 0.8), ("blindeye_sweep", 0.7)):
        saved = json.loads((into / sweep_name / "seed=0" / "results.json").read_text())
        assert saved["test_acc"] == acc


def test_a_pivot_of_several_metrics_names_each_row_and_lff_stage_two_is_its_own_row(
        tmp_path, capsys):
    """`table --columns ... --metrics a b` (the README's command for LfF's benchmark) showed
    the last metric's values alone, unnamed; LNL from scratch and LNL as stage 2 from a vanilla
    run are two rows of LfF's benchmark."""
    lff = {"dataset_name": "LfFColoredMNIST", "lff_conflict_ratio": 0.01, "method": "lnl"}
    record(tmp_path / "scratch", lff, test_acc=0.4, test_acc_selected=0.3)
    record(tmp_path / "stage2", {**lff, "init_checkpoint": "v/last.pth"}, test_acc=0.6,
           test_acc_selected=0.5)
    results.main(["table", str(tmp_path), "--group_by", "variant", "--columns",
                  "lff_conflict_ratio", "--metrics", "test_acc", "test_acc_selected"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| LNL")]
    assert sorted(rows) == ["| LNL test_acc (ours) | 0.400 (n = 1) |",
                    "| LNL test_acc_selected (ours) | 0.300 (n = 1) |",
                    "| LNL, stage 2 from vanilla test_acc (ours) | 0.600 (n = 1) |",
                    "| LNL, stage 2 from vanilla test_acc_selected (ours) | 0.500 (n = 1) |"]


def test_status_of_an_empty_folder_lists_no_phantom_run(tmp_path, capsys):
    """With nothing --expect'ed, an empty folder listed one 'never started' run."""
    with pytest.raises(SystemExit, match="no runs under .* and nothing --expect'ed"):
        results.main(["status", str(tmp_path)])
    assert "never started" not in capsys.readouterr().out


@pytest.mark.parametrize("metric", ["config", "bogus_metric"])
def test_a_metric_no_record_holds_as_a_number_is_one_line(tmp_path, metric, capsys):
    """`--metrics config` was a traceback; an unknown metric beside known ones a silent column
    of dashes."""
    record(tmp_path / "run", {"method": "lnl", "color_var": 0.02, "seed": 0}, test_acc=0.5)
    with pytest.raises(SystemExit) as exc:
        results.main(["table", str(tmp_path), "--metrics", "test_acc", metric])
    assert metric in str(exc.value) and "test_acc" in str(exc.value)


def test_status_calls_a_run_running_while_a_process_holds_its_lock(tmp_path, capsys):
    """The run lock (run_folder.lock) is the test of 'running' (safe_files.held), whatever
    the files' times say; an old folder nobody holds is 'stopped'; a link named .lock is
    neither followed nor taken for a lock."""
    import subprocess
    for name, seed in (("held", 0), ("free", 1), ("linked", 2)):
        record(tmp_path / name, {"seed": seed}, curve=[{"loss_cls": 1.0}])
    (tmp_path / "free" / ".lock").write_text("")
    os.symlink(tmp_path / "held" / ".lock", tmp_path / "linked" / ".lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(tmp_path / "held" / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        results.main(["status", str(tmp_path), "--active_within", "0"])
    finally:
        holder.kill()
        holder.wait()
    rows = {line.split("|")[-2].strip(): line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "folder" not in line}
    state = {os.path.basename(k): v for k, v in rows.items()}
    assert "running" in state["held"]
    assert "stopped" in state["free"] and "stopped" in state["linked"]


def test_a_group_pooling_several_grid_settings_is_named_under_the_table(tmp_path, capsys):
    """A compare plan's grid points of one method are not seeds: a group that pools them says
    so under the table (which flags differ), and parting them by the flag says nothing."""
    for k, (lam, acc) in enumerate(((0.01, 0.68), (0.1, 0.35))):
        record(tmp_path / f"lnl_{k}", {"dataset_name": "LfFColoredMNIST", "lambda_entropy": lam,
                                       "mu_grl": 0.1, "lff_q": 0.7}, test_acc=acc)
    results.main(["table", str(tmp_path), "--group_by", "variant", "--metrics", "test_acc"])
    out = capsys.readouterr().out
    assert "| LNL | 2 | 0.515 ± 0.233 |" in out
    assert ("Pooled over different hyperparameters (lambda_entropy) in 1 group(s), e.g. "
            "variant=LNL: their n counts settings, not seeds alone.") in out
    results.main(["table", str(tmp_path), "--group_by", "variant", "lambda_entropy",
                  "--metrics", "test_acc"])
    assert "Pooled" not in capsys.readouterr().out
