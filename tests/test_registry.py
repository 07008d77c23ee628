"""A new method and a new dataset are one class and one spec each: registered here in a few
lines, they get their flags, --help groups, range checks, b check, run name and a training run
through main.py, without any change to the Solver, the parser or main.py."""
import json
import os

import numpy as np
import pytest

import main as cli
from data_handler import ArrayDataset
from dataset_specs import DATASETS, DatasetSpec, batch_fields, register_dataset
from methods import METHODS, Method, register, task_accuracy, task_loss, zero_all
from options import ARCHITECTURE, DEFINES, DRIVES, RECIPE, ROLES, Option


def toy_datasets(args):
    """Two environments of --toy_size points; y = the sign of the first coordinate."""
    rng = np.random.default_rng(args.data_seed)
    x = rng.standard_normal((args.toy_size, 4)).astype(np.float32)
    y, env = (x[:, 0] > 0).astype(np.int64), np.arange(args.toy_size) % 2
    return {"train": ArrayDataset(x, y, env, env), "test": ArrayDataset(x, y, env, env)}


@pytest.fixture
def toys():
    """Register the toy method and dataset for one test, then restore both registries."""
    saved = dict(METHODS), dict(DATASETS)

    @register("toy")
    class Toy(Method):
        """Cross-entropy scaled by --toy_weight."""
        reads = ("x", "y", "env")
        options = (Option("toy_weight", 0.5, "Toy: loss scale", range="[0, 1]"),)

        def update(self, batch, optimizers):
            x, y = batch["x"], batch["y"]
            zero_all(optimizers)
            logits = self.predict(x)
            loss = self.args.toy_weight * task_loss(logits, y)
            loss.backward()
            optimizers["main"].step()
            return {"loss_cls": loss.detach(), "train_acc": task_accuracy(logits, y)}

    register_dataset(DatasetSpec("Toy", toy_datasets, b="env", classes=1,
                                 options=(Option("toy_size", 64, "Toy: points", range="> 0"),)))
    yield
    for registry, old in zip((METHODS, DATASETS), saved):
        registry.clear()
        registry.update(old)


TOY = ["--dataset_name", "Toy", "--method", "toy", "--f_network_name", "spiral_mlp_f",
       "--g_network_name", "spiral_mlp_g", "--h_network_name", "none", "--hidden_dim", "8"]


def test_declared_flags_appear_in_help_with_their_defaults(toys, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "--method toy:" in out and "--dataset_name Toy:" in out
    assert "Toy: loss scale (default: 0.5)" in out and "Toy: points (default: 64)" in out


def test_spec_supplies_classes_and_run_name(toys):
    _, args = cli.parse_args(TOY)
    assert (args.num_main_classes, args.toy_weight, args.toy_size) == (1, 0.5, 64)
    assert args.experiment_name == "toy_Toy_seed0"
    _, args = cli.parse_args(TOY + ["--num_main_classes", "3"])  # the flag overrides the spec
    assert args.num_main_classes == 3


@pytest.mark.parametrize("extra,words", [
    (["--toy_weight", "2"], "--toy_weight must lie in [0, 1]; got 2.0"),
    (["--toy_size", "0"], "--toy_size must be positive; got 0"),
    (["--method", "lnl", "--h_network_name", "cmnist_h"],
     "--method lnl reads the batch field 'bias' (h's bias target"),
])
def test_declared_ranges_and_b_kind_are_checked_before_anything_runs(toys, capsys, extra, words):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(TOY + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and words in err[0], err


def test_toy_method_needs_environments_on_colored_mnist(toys, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["--method", "toy"])
    assert exc.value.code == 2
    assert "(on ColoredMNIST pass --env_from_bias" in capsys.readouterr().err


def test_toy_method_trains_on_toy_dataset_through_main(toys, tmp_path):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("toy_weight: 0.25\ntoy_size: 96\n")  # configs use the declared flags too
    acc = cli.main(TOY + ["--config", str(cfg), "--output_dir", str(tmp_path), "--device",
                          "cpu", "--epochs", "2", "--batch_size", "32", "--lr", "0.1",
                          "--experiment_name", "toy"])
    assert 0.0 <= acc <= 1.0
    saved = json.load(open(tmp_path / "toy" / "args.json"))
    assert (saved["toy_weight"], saved["toy_size"], saved["num_main_classes"]) == (0.25, 96, 1)
    with open(os.path.join(tmp_path, "toy", "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    assert [r["epoch"] for r in rows] == [1, 2] and all(np.isfinite(r["loss_cls"]) for r in rows)
    # the new dataset's own flag defines its data: --resume under another value is refused
    with pytest.raises(SystemExit) as exc:
        cli.main(TOY + ["--config", str(cfg), "--output_dir", str(tmp_path), "--device", "cpu",
                        "--epochs", "3", "--batch_size", "32", "--lr", "0.1", "--toy_size",
                        "80", "--experiment_name", "toy", "--resume"])
    assert exc.value.code == 2
    # the new method's own flag is its recipe: a resumed run keeps the checkpoint's value
    cli.main(TOY + ["--config", str(cfg), "--output_dir", str(tmp_path), "--device", "cpu",
                    "--epochs", "3", "--batch_size", "32", "--lr", "0.1", "--toy_weight",
                    "0.75", "--experiment_name", "toy", "--resume"])
    saved = json.load(open(tmp_path / "toy" / "args.json"))
    assert (saved["toy_weight"], saved["epochs"]) == (0.25, 3)


def test_every_flag_declares_its_role_where_it_is_declared(toys):
    """What a flag is to a run (options.ROLES) is declared with it: main.py's own flags by
    their add(), a method's and a dataset's by their Option (else their owner's kind)."""
    parser = cli.build_parser()
    flags = {a.dest for a in parser._actions if a.dest != "help"}
    assert set(parser.roles) == flags and set(parser.roles.values()) <= set(ROLES)
    assert (parser.roles["toy_weight"], parser.roles["toy_size"]) == (RECIPE, DEFINES)
    assert (parser.roles["dataset_name"], parser.roles["seed"], parser.roles["lr"],
            parser.roles["epochs"]) == (ARCHITECTURE, DEFINES, RECIPE, DRIVES)
    assert parser.roles["skip_bad_images"] == DRIVES  # declared so by its Option


@pytest.mark.parametrize("dataset", sorted(DATASETS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_exactly_on_the_datasets_whose_fields_it_reads(method, dataset,
                                                                         capsys):
    argv = ["--method", method, "--dataset_name", dataset]
    _, plain = cli.parse_args(["--method", "baseline", *argv[2:]])  # reads x, y: accepted
    fields = batch_fields(DATASETS[dataset], plain)
    one_logit = METHODS[method].multiclass and plain.num_main_classes < 2  # a binary task
    if set(METHODS[method].reads) <= set(fields) and not one_logit:
        cli.parse_args(argv)
        return
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    err = capsys.readouterr().err.strip().splitlines()
    said = "reads the batch field" if not set(METHODS[method].reads) <= set(fields) else (
        "computes a cross-entropy over class logits")
    assert exc.value.code == 2 and len(err) == 1 and said in err[0], err
