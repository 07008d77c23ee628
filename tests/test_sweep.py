"""Sweeps (sweep.py): several runs trained together in one process, each exactly as alone.
In-process on small slices of real MNIST, single-threaded (the runs are bit-for-bit
comparisons, and one thread is also the fastest for these tiny networks)."""
import json
import os
import signal
import sys

import pytest
import torch

import main as cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def argv(mnist_root, out, *extra, n_train="800", epochs="2"):
    return ["--data_root_base", mnist_root, "--output_dir", str(out), "--device", "cpu",
            "--max_train_samples", n_train, "--max_test_samples", "200", "--batch_size", "8",
            "--epochs", epochs, "--lr_decay_period", "1", "--save_every", "1", *extra]


def nets(out, name):
    return torch.load(os.path.join(out, name, "checkpoints", "last.pth"),
                      weights_only=False)["nets"]


def assert_same_nets(a, b):
    for net in a:
        for key, value in a[net].items():
            assert torch.equal(value, b[net][key]), (net, key)


def test_each_run_of_a_sweep_ends_with_the_weights_of_the_same_run_alone(mnist_root, tmp_path):
    """baseline and LNL x sigma^2 0.020, 0.050, seed 3: 4 runs of 60 steps each (2 epochs, so
    the learning-rate decay between them is part of each run)."""
    sweep = argv(mnist_root, tmp_path / "sweep", "--method", "baseline", "lnl",
                 "--color_var", "0.020", "0.050", "--seed", "3", "--lr", "0.01",
                 "--experiment_name", "s", n_train="240")
    accs = cli.main(sweep)
    names = [f"s/method={m},color_var={v}" for m in ("baseline", "lnl") for v in ("0.020", "0.050")]
    assert sorted(accs) == sorted(names)
    for i, name in enumerate(names):
        method, var = name.split("method=")[1].split(",color_var=")
        alone = cli.main(argv(mnist_root, tmp_path / "alone", "--method", method, "--color_var",
                              var, "--seed", "3", "--lr", "0.01", "--experiment_name", f"a{i}",
                              n_train="240"))
        assert accs[name] == alone
        assert_same_nets(nets(tmp_path / "sweep", name), nets(tmp_path / "alone", f"a{i}"))
        folder = tmp_path / "sweep" / name
        # exactly a single run's files, with single values in args.json
        assert sorted(os.listdir(folder)) == sorted(os.listdir(tmp_path / "alone" / f"a{i}"))
        saved = json.load(open(folder / "args.json"))
        assert (saved["method"], saved["color_var"], saved["seed"]) == (method, float(var), 3)
        assert saved["experiment_name"] == name
        log = (folder / "run.log").read_text()
        assert "epoch 2/2" in log and f"({name}, epoch 2)" in log and "[s/" not in log
        rows = [json.loads(line) for line in open(folder / "metrics.jsonl")]
        assert [r["epoch"] for r in rows] == [1, 2]
    # test mode reads one run of the sweep like any run
    acc = cli.main(["--mode", "test", "--output_dir", str(tmp_path / "sweep"),
                    "--experiment_name", names[0], "--data_root_base", mnist_root,
                    "--device", "cpu", "--max_test_samples", "200"])
    assert acc == accs[names[0]]


def test_a_sweep_stopped_mid_epoch_resumes_to_where_an_uninterrupted_sweep_ends(
        mnist_root, tmp_path, monkeypatch, capsys, stop_after):
    flags = ["--method", "lnl", "--seed", "0", "1", "--lr", "0.01", "--experiment_name", "s"]
    straight = cli.main(argv(mnist_root, tmp_path / "straight", *flags, n_train="320"))
    stop_after(2 * 40 + 27)  # epoch 2 (40 steps an epoch), two runs in turn
    with pytest.raises(SystemExit) as exc:
        cli.main(argv(mnist_root, tmp_path / "stopped", *flags, n_train="320"))
    assert exc.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert err.count("stopped by SIGTERM at epoch 2") == 2 and "--resume" in err
    for name in straight:
        ckpt = torch.load(tmp_path / "stopped" / name / "checkpoints" / "last.pth",
                          weights_only=False)
        assert ckpt["epoch"] == 1 and 0 < ckpt["step_in_epoch"] < 40
    monkeypatch.undo()
    resumed = cli.main(argv(mnist_root, tmp_path / "stopped", *flags, "--resume", n_train="320"))
    assert resumed == straight
    for name in straight:
        assert_same_nets(nets(tmp_path / "straight", name), nets(tmp_path / "stopped", name))
        rows = [json.loads(line) for line in open(tmp_path / "stopped" / name / "metrics.jsonl")]
        assert [r["epoch"] for r in rows] == [1, 2]


def test_a_diverging_run_stops_alone_and_the_others_finish_as_alone(mnist_root, tmp_path,
                                                                     capsys):
    common = argv(mnist_root, tmp_path, "--method", "baseline", n_train="160", epochs="1")
    with pytest.raises(SystemExit) as exc:
        cli.main(common + ["--lr", "0.01", "1e6", "--experiment_name", "s"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "[s/lr=1e6] stopped: non-finite loss at epoch 1" in err
    assert "1 of 2 runs did not finish: s/lr=1e6" in err
    assert not (tmp_path / "s" / "lr=1e6" / "results.json").exists()
    good = json.load(open(tmp_path / "s" / "lr=0.01" / "results.json"))
    alone = cli.main(common + ["--lr", "0.01", "--experiment_name", "alone"])
    assert good["test_acc"] == alone
    assert_same_nets(nets(tmp_path, "s/lr=0.01"), nets(tmp_path, "alone"))


def test_run_names_templates_and_refusals_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--output_dir", str(out), "--data_root_base", str(tmp_path)]
    _, runs = cli.parse_runs(base + ["--seed", "0", "1", "--color_var", "0.020", "0.05",
                                     "--experiment_name", "cm_var{color_var}_s{seed}",
                                     "--init_checkpoint", "o/b_{color_var}_{seed}.pth"])
    assert [(r.experiment_name, r.init_checkpoint, r.seed) for r in runs] == [
        ("cm_var0.020_s0", "o/b_0.020_0.pth", 0), ("cm_var0.05_s0", "o/b_0.05_0.pth", 0),
        ("cm_var0.020_s1", "o/b_0.020_1.pth", 1), ("cm_var0.05_s1", "o/b_0.05_1.pth", 1)]
    _, runs = cli.parse_runs(base + ["--lr", "0.1", "0.2"])
    assert [r.experiment_name for r in runs] == ["sweep/lr=0.1", "sweep/lr=0.2"]
    _, (one,) = cli.parse_runs(base + ["--seed", "4"])
    assert one.seed == 4 and one.experiment_name == "lnl_var0.020_seed4"
    bad = [(["--lr", "0.1", "-1"], "--lr must be positive"),
           (["--seed", "1", "1"], "lists a value twice"),
           (["--seed", "0", "1", "--experiment_name", "x_{lr}_{oops}"], "{oops}"),
           (["--seed", "0", "1", "--lr", "0.1", "0.2", "--experiment_name", "x{seed}"],
            "would share"),
           (["--method", "lnl", "irm"], "--method irm"),
           (["--mode", "test", "--seed", "0", "1"], "--mode test evaluates one run")]
    for extra, words in bad:
        with pytest.raises(SystemExit) as exc:
            cli.main(base + extra)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and "error:" in err[0], (extra, err)
        assert not out.exists()
    with pytest.raises(SystemExit):
        cli.parse_args(base + ["--seed", "0", "1"])
    assert "a sweep" in capsys.readouterr().err


def test_benchmark_times_n_runs_as_a_sweep_against_one_by_one(capsys):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))
    import benchmark  # in-process, as tests/test_fast.py runs it
    benchmark.main(["--device", "cpu", "--train_samples", "64", "--batch_size", "32",
                    "--epochs", "1", "--runs", "2", "--methods", "baseline", "--paths", "fast",
                    "--precisions", "fp32"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row = report["results"]["baseline"]["fast"]["sweep"]
    assert report["runs"] == row["runs"] == 2 and "sweep_peak_gpu_mib" not in row  # CPU
    assert row["sweep_model_epochs_per_s"] > 0 and row["one_by_one_model_epochs_per_s"] > 0
    assert row["ratio"] == pytest.approx(
        row["sweep_model_epochs_per_s"] / row["one_by_one_model_epochs_per_s"], rel=0.05)


def test_unrelated_runs_listed_in_one_process_end_as_each_alone(mnist_root, tmp_path, capsys):
    """--runs_from (what long_runs.py --per_process writes): a Gray baseline and an LNL stage 2
    from another run's checkpoint, other sigma^2 and seeds, in one process; each ends with the
    weights it ends with alone. A listed run that lists runs, or a flag beside the list, is one
    line."""
    base = argv(mnist_root, tmp_path / "alone", "--method", "baseline", "--lr", "0.01",
                "--experiment_name", "b", n_train="160", epochs="1")
    cli.main(base)
    init = str(tmp_path / "alone" / "b" / "checkpoints" / "last.pth")
    runs = {"gray": ["--method", "baseline", "--grayscale", "--color_var", "0.050", "--seed",
                     "4", "--lr", "0.01"],
            "lnl": ["--method", "lnl", "--init_checkpoint", init, "--seed", "5"]}
    listing = []
    for name, flags in runs.items():
        cli.main(argv(mnist_root, tmp_path / "alone", *flags, "--experiment_name", name,
                      n_train="160"))
        listing.append(argv(mnist_root, tmp_path / "together", *flags, "--experiment_name",
                            name, n_train="160"))
    (tmp_path / "runs.json").write_text(json.dumps(listing))
    accs = cli.main(["--runs_from", str(tmp_path / "runs.json")])
    assert sorted(accs) == sorted(runs)
    for name in runs:
        assert_same_nets(nets(tmp_path / "together", name), nets(tmp_path / "alone", name))
    capsys.readouterr()
    for bad, says in (([["--runs_from", "x.json"]], "cannot list runs"), ([[1, 2]], "each a list"),
                      ({"a": 1}, "not the list")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(SystemExit) as exc:
            cli.main(["--runs_from", str(tmp_path / "bad.json")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as exc:
        cli.main(["--runs_from", str(tmp_path / "runs.json"), "--epochs", "3"])
    assert exc.value.code == 2 and "no other flags" in capsys.readouterr().err
