"""End-to-end runs of main.py on a few thousand real MNIST images, on the CPU."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main as cli


def run(mnist_root, out, *extra):
    argv = ["--data_root_base", mnist_root, "--output_dir", str(out), "--device", "cpu",
            "--max_train_samples", "2000", "--max_test_samples", "1000", *extra]
    return cli.main(argv)


def metrics(out, name):
    with open(os.path.join(out, name, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def baseline_run(mnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    run(mnist_root, out, "--method", "baseline", "--lr", "0.01", "--epochs", "3",
        "--max_train_samples", "5000",
        "--save_every", "2", "--experiment_name", "base")
    return out


def test_baseline_learns_the_biased_training_set(baseline_run):
    rows = metrics(baseline_run, "base")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["loss_cls"] < rows[0]["loss_cls"]
    assert rows[-1]["train_acc"] > 0.6


def test_checkpoints_args_and_tensorboard_scalars(baseline_run):
    exp = os.path.join(baseline_run, "base")
    assert sorted(os.listdir(os.path.join(exp, "checkpoints"))) == [
        "epoch_0002.pth", "epoch_0003.pth", "last.pth"]
    ckpt = torch.load(os.path.join(exp, "checkpoints", "last.pth"), weights_only=False)
    assert ckpt["epoch"] == 3 and set(ckpt["nets"]) == {"f", "g", "h"}
    assert {"optimizers", "schedulers", "rng", "args"} <= set(ckpt)
    saved_args = json.load(open(os.path.join(exp, "args.json")))
    assert saved_args["method"] == "baseline" and saved_args["device_used"] == "cpu"
    acc = EventAccumulator(os.path.join(exp, "logs"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss_cls", "train/train_acc", "train/lr", "test/acc",
            "test/bias_agreement", "final/test_acc"} <= set(tags)
    # the HPARAMS view's records and the final confusion matrices as figures
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")
    assert {"confusion/label", "confusion/bias"} <= set(acc.Tags()["images"])
    assert [e.step for e in acc.Scalars("test/acc")] == [1, 2, 3]
    assert acc.Scalars("train/lr")[0].value == pytest.approx(0.01)


def test_results_json_splits_aligned_and_conflicting_and_gives_an_interval(baseline_run):
    """A biased baseline is right where the test image wears its digit's training colour and
    mostly wrong elsewhere; the bootstrap interval holds the accuracy and says how it was
    drawn; TensorBoard shows both parts."""
    record = json.load(open(baseline_run / "base" / "results.json"))
    assert record["test_acc_aligned"] > 0.6 and record["test_acc_conflicting"] < 0.2
    low, high = record["test_acc_ci95"]
    assert low <= record["test_acc"] <= high and high - low < 0.1
    assert record["provenance"]["test_acc_ci95_method"]["resamples"] == 10000
    assert len(record["provenance"]["data_sha256"]) == 64
    events = EventAccumulator(str(baseline_run / "base" / "logs"))
    events.Reload()
    assert {"test/acc_aligned", "test/acc_conflicting"} <= set(events.Tags()["scalars"])


def test_results_json_carries_config_and_provenance(baseline_run):
    record = json.load(open(os.path.join(baseline_run, "base", "results.json")))
    assert (record["experiment"], record["method"], record["epochs"]) == ("base", "baseline", 3)
    config = record["config"]
    assert config["color_var"] == 0.02 and config["seed"] == 0 and config["lr"] == 0.01
    assert config["device"] == "cpu" and config["max_train_samples"] == 5000
    prov = record["provenance"]
    assert len(prov["commit"]) == 40 and isinstance(prov["dirty"], bool)
    assert prov["torch"] == torch.__version__ and prov["device"] == "cpu" and prov["host"]
    assert prov["started"] <= prov["ended"] and prov["wall_time_s"] > 0


def test_a_finished_run_started_again_is_reported_and_not_rewritten(baseline_run, mnist_root,
                                                                    capsys):
    exp = baseline_run / "base"
    kept = {p: (exp / p).read_bytes() for p in ("results.json", "metrics.jsonl", "args.json",
                                                 "checkpoints/last.pth")}
    events = sorted(os.listdir(exp / "logs"))
    acc = run(mnist_root, baseline_run, "--method", "baseline", "--lr", "0.01", "--epochs", "3",
              "--max_train_samples", "5000", "--save_every", "2", "--experiment_name", "base",
              "--resume_if_any")
    assert acc == json.loads(kept["results.json"])["test_acc"]
    assert "finished earlier" in capsys.readouterr().out
    assert {p: (exp / p).read_bytes() for p in kept} == kept
    assert sorted(os.listdir(exp / "logs")) == events  # no second event file


def test_biased_baseline_predicts_the_colour_and_test_mode_writes_npy(baseline_run, mnist_root):
    npy = os.path.join(baseline_run, "preds.npy")
    acc = run(mnist_root, baseline_run, "--mode", "test", "--experiment_name", "base",
              "--test_output_npy", npy)
    rows = np.load(npy)  # plain np.load: nothing to unpickle
    summary = json.load(open(os.path.join(baseline_run, "preds.json")))
    out = {**{k: rows[k] for k in rows.dtype.names}, "accuracy": summary["accuracy"],
           "confusion_label": np.array(summary["confusion_label"]),
           "confusion_bias": np.array(summary["confusion_bias"])}
    assert set(out) >= {"true_label", "pred_label", "probabilities", "bias_index", "accuracy"}
    assert out["true_label"].shape == out["pred_label"].shape == out["bias_index"].shape == (1000,)
    assert out["probabilities"].shape == (1000, 10)
    assert np.allclose(out["probabilities"].sum(1), 1, atol=1e-5)
    assert out["accuracy"] == pytest.approx(acc)
    assert out["accuracy"] == pytest.approx((out["pred_label"] == out["true_label"]).mean())
    # the tell-tale of a biased model: it reads the colour, not the digit
    colour_agreement = (out["pred_label"] == out["bias_index"]).mean()
    assert colour_agreement > 0.5 and colour_agreement > 2 * out["accuracy"]
    # training logged the same diagnostic at its last evaluation, on the same weights
    assert metrics(baseline_run, "base")[-1]["bias_agreement"] == pytest.approx(colour_agreement)
    # the same story in the confusion matrices, saved as arrays and pictures
    assert out["confusion_label"].sum() == out["confusion_bias"].sum() == 1000
    assert np.trace(out["confusion_label"]) == (out["pred_label"] == out["true_label"]).sum()
    assert np.trace(out["confusion_bias"]) == (out["pred_label"] == out["bias_index"]).sum()
    for kind in ("label", "bias"):
        png = os.path.join(baseline_run, f"preds_confusion_{kind}.png")
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_probe_reads_the_colour_from_a_biased_baseline(baseline_run, mnist_root):
    """--mode probe: a fresh bias head on the frozen f of a biased baseline reads the colour
    bins far above chance; probe.json states the recipe and the checkpoint; the run's own
    files are untouched."""
    exp = baseline_run / "base"
    kept = {p: (exp / p).read_bytes() for p in ("results.json", "args.json",
                                                 "checkpoints/last.pth")}
    acc = run(mnist_root, baseline_run, "--mode", "probe", "--experiment_name", "base",
              "--max_train_samples", "2000")
    probe = json.load(open(exp / "probe.json"))
    assert probe["probe_bias_acc"] == acc and probe["probe_bias_acc"] > probe["chance"] + 0.2
    assert 0 < probe["chance"] < 0.6
    assert probe["recipe"]["epochs"] == 5 and probe["recipe"]["lr"] == 0.01
    assert probe["checkpoint"]["epoch"] == 3 and len(probe["checkpoint"]["sha256"]) == 64
    assert {p: (exp / p).read_bytes() for p in kept} == kept


def test_a_tiny_lnl_run_with_validation_records_every_diagnostic(baseline_run, mnist_root):
    """--val_fraction 0.1: a seeded, biased tenth of the training set is evaluated every epoch;
    the record holds the selected epoch and its test accuracy beside the final and the
    oracle's, the aligned/conflicting split, the interval and the data's digest."""
    init = os.path.join(baseline_run, "base", "checkpoints", "last.pth")
    run(mnist_root, baseline_run, "--method", "lnl", "--epochs", "2", "--init_checkpoint", init,
        "--experiment_name", "lnl_val", "--val_fraction", "0.1")
    record = json.load(open(baseline_run / "lnl_val" / "results.json"))
    rows = metrics(baseline_run, "lnl_val")
    assert all("val_acc" in r for r in rows)
    best = max(rows, key=lambda r: (r["val_acc"], -r["epoch"]))
    assert record["selected_epoch"] == best["epoch"]
    assert record["test_acc_selected"] == best["test_acc"]
    assert record["test_acc_oracle"] == max(r["test_acc"] for r in rows)
    assert record["test_acc"] == rows[-1]["test_acc"]
    for key in ("test_acc_aligned", "test_acc_conflicting", "test_acc_ci95"):
        assert key in record
    assert len(record["provenance"]["data_sha256"]) == 64
    assert record["config"]["val_fraction"] == 0.1


def test_lnl_stage_two_from_the_baseline(baseline_run, mnist_root):
    init = os.path.join(baseline_run, "base", "checkpoints", "last.pth")
    # --resume_if_any on a new experiment (as scripts/run_cmnist.sh passes it) starts from init
    run(mnist_root, baseline_run, "--method", "lnl", "--epochs", "1", "--init_checkpoint", init,
        "--experiment_name", "lnl", "--resume_if_any")
    row = metrics(baseline_run, "lnl")[0]
    assert row["train_acc"] > 0.6  # started from trained weights, not from scratch
    for k in ("loss_cls", "entropy_term", "loss_bias", "bias_acc", "test_acc"):
        assert np.isfinite(row[k])
    # stage 2's first epoch runs at the stage-1 checkpoint's lr (LNL authors' trainer)
    assert row["lr"] == pytest.approx(0.01)
    # the record names the exact checkpoint it started from (the ledger keeps no checkpoints)
    record = json.load(open(baseline_run / "lnl" / "results.json"))
    digest = hashlib.sha256(open(init, "rb").read()).hexdigest()
    assert record["init"]["sha256"] == digest and record["init"]["epoch"] >= 1


def test_each_mode_reads_its_checkpoint_once(baseline_run, mnist_root, monkeypatch):
    """Where a run starts is decided once (lifecycle.resolve_start): a fresh run reads no
    checkpoint; stage 2, a resumed run and a test read the one they start from, once."""
    reads, load = [], torch.load

    def counting_load(path, *args, **kwargs):
        reads.append(str(path))
        return load(path, *args, **kwargs)
    monkeypatch.setattr(torch, "load", counting_load)
    init = os.path.join(baseline_run, "base", "checkpoints", "last.pth")
    lnl = ["--method", "lnl", "--init_checkpoint", init, "--experiment_name", "count_lnl"]
    for argv, expected in (
            (["--method", "baseline", "--epochs", "1", "--experiment_name", "count_fresh"], []),
            ([*lnl, "--epochs", "1"], [init]),
            ([*lnl, "--epochs", "2", "--resume"],
             [os.path.join(baseline_run, "count_lnl", "checkpoints", "last.pth")]),
            (["--mode", "test", "--experiment_name", "count_lnl"],
             [os.path.join(baseline_run, "count_lnl", "checkpoints", "last.pth")])):
        reads.clear()
        run(mnist_root, baseline_run, *argv)
        assert [r for r in reads if r.endswith(".pth")] == expected, argv


def test_existing_experiment_is_not_overwritten_silently(baseline_run, mnist_root, capsys):
    with pytest.raises(SystemExit) as exc:
        run(mnist_root, baseline_run, "--method", "baseline", "--epochs", "1",
            "--experiment_name", "base")
    assert exc.value.code == 2
    assert "--resume" in capsys.readouterr().err
    assert torch.load(os.path.join(baseline_run, "base", "checkpoints", "last.pth"),
                      weights_only=False)["epoch"] == 3


def test_missing_dataset_names_the_fetch_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--data_root_base", str(tmp_path / "nothing"), "--output_dir",
                  str(tmp_path / "out"), "--epochs", "1"])
    assert exc.value.code == 1
    assert "python fetch_data.py mnist" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


def test_wrong_checkpoint_path_is_a_clear_error(mnist_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run(mnist_root, tmp_path, "--mode", "test", "--experiment_name", "x",
            "--load_checkpoint_path", str(tmp_path / "nope.pth"))
    assert exc.value.code == 1
    assert "nope.pth does not exist" in capsys.readouterr().err


def test_unknown_network_name_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--f_network_name", "vgg_nope", "--output_dir", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "vgg_nope" in err and "cmnist_f" in err


def test_checkpoint_for_other_networks_names_the_mismatch(baseline_run, mnist_root, capsys):
    with pytest.raises(SystemExit):
        run(mnist_root, baseline_run, "--mode", "test", "--experiment_name", "base",
            "--num_bias_classes", "4")
    assert "num_bias_classes" in capsys.readouterr().err


def test_config_file_sets_defaults_and_flags_win(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.05\nepochs: 7\nmethod: baseline\n")
    _, args = cli.parse_args(["--config", str(cfg), "--epochs", "3"])
    assert (args.lr, args.epochs, args.method) == (0.05, 3, "baseline")
    cfg.write_text("lr: 0.05\nlearning_rate: 1\n")
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["--config", str(cfg)])
    assert exc.value.code == 2


@pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--batch_size", "-1"),
                                        ("--lr", "0"), ("--color_var", "1.5")])
def test_bad_numbers_are_refused(flag, value):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args([flag, value])
    assert exc.value.code == 2


def test_andmask_on_cifar_random_labels_with_one_environment_per_example(tmp_path):
    from test_data import write_fake_cifar
    write_fake_cifar(tmp_path / "data", n_train=16, n_test=8)
    acc = cli.main(["--config", os.path.join(os.path.dirname(__file__), "..", "configs",
                                             "cifar_random_labels.yaml"),
                    "--data_root_base", str(tmp_path / "data"), "--output_dir", str(tmp_path),
                    "--device", "cpu", "--epochs", "1", "--batch_size", "4",
                    "--experiment_name", "cifar"])
    row = metrics(tmp_path, "cifar")[0]
    assert 0.0 <= acc <= 1.0 and "mislabeled_acc" in row and 0 < row["kept_fraction"] <= 1
    results = json.load(open(tmp_path / "cifar" / "results.json"))
    assert "mislabeled_acc" in results
