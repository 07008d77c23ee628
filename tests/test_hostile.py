"""Bad and hostile input, table-driven: each case ends in one clear line (no traceback), with the
documented exit code, and changes no file that existed before (a snapshot of the whole test
folder, outputs and a sibling folder outside them, is compared before and after)."""
import errno
import fcntl
import gzip
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

import colored_mnist
import fetch_data
import main as cli
import run_folder
import utils
from solver import Solver


def snapshot(root):
    """{relative path: sha256} of every file under root (folders as None)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(folder, d), root)] = None
        for f in files:
            path = os.path.join(folder, f)
            out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def common(mnist_root, out, name="base", epochs="1"):
    return ["--data_root_base", mnist_root, "--output_dir", str(out), "--device", "cpu",
            "--max_train_samples", "200", "--max_test_samples", "100", "--epochs", epochs,
            "--experiment_name", name]


@pytest.fixture(scope="module")
def world(mnist_root, tmp_path_factory):
    """tmp/outputs/base: a finished 1-epoch baseline; tmp/outside: a folder beside the outputs
    holding checkpoints/ and logs/ that no run may touch."""
    root = tmp_path_factory.mktemp("hostile")
    out = root / "outputs"
    cli.main(common(mnist_root, out) + ["--method", "baseline", "--lr", "0.01"])
    for sub in ("checkpoints", "logs"):
        (root / "outside" / sub).mkdir(parents=True)
        (root / "outside" / sub / "keep.txt").write_text("user data")
    (out / "base" / "notes.npy").write_bytes(b"a user's own file")
    return root


def expect_refusal(root, argv, code, words, capsys, call=None):
    """Run main (or call) on argv: exit code, one stderr line naming `words`, no traceback, and
    no file under root changed, added or removed."""
    before = snapshot(root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        (call or cli.main)(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == code, err
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    problem = [line for line in err if "error" in line]
    assert len(problem) == 1, err
    for w in words:
        assert w in problem[0], (w, problem[0])
    assert snapshot(root) == before
    return problem[0]


def with_out(world, mnist_root, *extra, name="base", epochs="1"):
    return common(mnist_root, world / "outputs", name, epochs) + list(extra)


def ckpt_path(world):
    return str(world / "outputs" / "base" / "checkpoints" / "last.pth")


# (id, extra flags, exit code, words in the message); flags go after a valid base command line
CASES = [
    ("name_dotdot_path", ["--experiment_name", "../../x", "--overwrite"], 2,
     ["stays inside --output_dir"]),
    ("name_absolute", ["--experiment_name", "/tmp/abs_run"], 2, ["absolute"]),
    ("name_dotdot", ["--experiment_name", ".."], 2, ["'..'"]),
    ("name_empty", ["--experiment_name", ""], 2, ["empty"]),
    ("name_newline", ["--experiment_name", "a\nepoch 100/100 test_acc=0.99"], 2,
     ["control character"]),
    ("name_escape", ["--experiment_name", "a\x1b[2Jb"], 2, ["control character"]),
    ("name_into_outside", ["--experiment_name", "../outside", "--overwrite"], 2, ["'..'"]),
    ("resume_and_overwrite", ["--resume", "--overwrite"], 2, ["pass one"]),
    ("overwrite_bad_init", ["--overwrite", "--init_checkpoint", "/nope/base.pth"], 1,
     ["does not exist"]),
    ("load_path_in_train", ["--load_checkpoint_path", "x.pth", "--experiment_name", "new"], 2,
     ["--mode test only", "--init_checkpoint"]),
    ("test_npy_in_train", ["--test_output_npy", "p.npy", "--experiment_name", "new"], 2,
     ["--mode test only"]),
    ("init_in_test", ["--mode", "test", "--init_checkpoint", "x.pth"], 2, ["--mode train only"]),
    ("resume_missing", ["--resume", "--experiment_name", "typo"], 2,
     ["has no checkpoint", "--resume_if_any"]),
    ("existing_run", ["--method", "baseline"], 2, ["--resume", "--overwrite"]),
    ("seed_negative", ["--seed", "-1"], 2, ["--seed", "negative"]),
    ("momentum_negative", ["--momentum", "-1"], 2, ["--momentum"]),
    ("momentum_one", ["--momentum", "1.5"], 2, ["--momentum"]),
    ("lr_nan", ["--lr", "nan"], 2, ["--lr", "finite"]),
    ("wd_inf", ["--weight_decay", "inf"], 2, ["--weight_decay", "finite"]),
    ("max_train_negative", ["--max_train_samples", "-5"], 2, ["--max_train_samples"]),
    ("device_gpu", ["--device", "gpu"], 2, ["--device gpu"]),
    ("epochs_text", ["--epochs", "ten"], 2, ["--epochs"]),
    ("irm_on_cmnist", ["--method", "irm", "--experiment_name", "new"], 2,
     ["environment", "--env_from_bias"]),
    ("lnl_with_env_b", ["--method", "lnl", "--env_from_bias", "--experiment_name", "new"], 2,
     ["bias target"]),
    ("workers", ["--num_workers", "-3"], 2, ["--num_workers"]),
    # a method's or dataset's flag that the run would ignore
    ("jtt_flag_on_baseline", ["--method", "baseline", "--jtt_up", "5", "--experiment_name",
                              "new"], 2, ["--jtt_up", "--method jtt only"]),
    ("lff_data_flag_on_cmnist", ["--lff_conflict_ratio", "0.05", "--experiment_name", "new"],
     2, ["--lff_conflict_ratio", "--dataset_name LfFColoredMNIST"]),
    ("probe_on_other_data", ["--mode", "probe", "--color_var", "0.030"], 2,
     ["--mode probe reads the run's own data", "--color_var"]),
    ("ratio_finer_than_its_name", ["--dataset_name", "LfFColoredMNIST", "--lff_conflict_ratio",
                                   "0.0100000001"], 2, ["--lff_conflict_ratio", "pass 0.01"]),
    ("switch_of_another_dataset", ["--skip_bad_images", "--experiment_name", "new"], 2,
     ["--skip_bad_images", "DogsCats"]),
]


@pytest.mark.parametrize("case,extra,code,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(world, mnist_root, capsys, case, extra, code,
                                                   words):
    expect_refusal(world, with_out(world, mnist_root, *extra), code, words, capsys)


def test_a_link_out_of_the_output_folder_is_refused(world, mnist_root, capsys):
    link = world / "outputs" / "link"
    link.symlink_to(world / "outside", target_is_directory=True)
    try:
        expect_refusal(world, with_out(world, mnist_root, "--experiment_name", "link",
                                       "--overwrite"), 2, ["leads outside"], capsys)
    finally:
        link.unlink()


def test_overwrite_with_init_inside_the_run_is_refused(world, mnist_root, capsys):
    expect_refusal(world, with_out(world, mnist_root, "--overwrite", "--init_checkpoint",
                                   ckpt_path(world)), 2, ["copy it elsewhere"], capsys)


TEST_TARGETS = [  # (--test_output_npy, words): targets test mode must refuse
    (lambda w: ckpt_path(w), [".npy file name"]),                         # its own checkpoint
    (lambda w: str(w / "outputs" / "base" / "checkpoints"), [".npy file name"]),  # a folder
    (lambda w: str(w / "outside" / "p.npy"), ["outside --output_dir"]),
    (lambda w: "../../outside/p.npy", ["outside --output_dir"]),
    (lambda w: "notes.npy", ["not a prediction file"]),                   # a user's file
]


@pytest.mark.parametrize("target,words", TEST_TARGETS, ids=["checkpoint", "folder", "absolute",
                                                             "relative_escape", "user_file"])
def test_test_mode_never_writes_over_what_it_did_not_write(world, mnist_root, capsys, target,
                                                           words):
    expect_refusal(world, with_out(world, mnist_root, "--mode", "test", "--test_output_npy",
                                   target(world)), 2, words, capsys)


def test_checkpoint_that_is_a_folder(world, mnist_root, capsys):
    folder = str(world / "outputs" / "base" / "checkpoints")
    expect_refusal(world, with_out(world, mnist_root, "--mode", "test",
                                   "--load_checkpoint_path", folder), 1, ["is a folder"], capsys)


def test_relative_prediction_name_lands_in_the_run_folder(world, mnist_root, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the run folder: nothing may land here
    cli.main(with_out(world, mnist_root, "--mode", "test", "--test_output_npy", "mine.npy"))
    assert os.listdir(tmp_path) == []
    out = np.load(world / "outputs" / "base" / "mine.npy")
    assert out["pred_label"].shape == (100,)
    # an earlier prediction file may be replaced by the next evaluation
    cli.main(with_out(world, mnist_root, "--mode", "test", "--test_output_npy", "mine.npy"))


def test_another_runs_checkpoint_never_replaces_this_runs_predictions(mnist_root, tmp_path,
                                                                     capsys):
    """Test mode of run a with run b's checkpoint: a's own test_predictions stay unless the
    user names another file (then both are kept)."""
    out = tmp_path / "outputs"
    for name in ("a", "b"):
        cli.main(common(mnist_root, out, name) + ["--method", "baseline", "--lr", "0.01"])
    cli.main(common(mnist_root, out, "a") + ["--mode", "test"])
    foreign = str(out / "b" / "checkpoints" / "last.pth")
    expect_refusal(tmp_path, common(mnist_root, out, "a") + [
        "--mode", "test", "--load_checkpoint_path", foreign], 2,
        ["holds the predictions of", "--test_output_npy"], capsys)
    cli.main(common(mnist_root, out, "a") + ["--mode", "test", "--load_checkpoint_path",
                                             foreign, "--test_output_npy", "of_b.npy"])
    assert json.load(open(out / "a" / "of_b.json"))["checkpoint"] == foreign
    assert json.load(open(out / "a" / "test_predictions.json"))["checkpoint"].endswith(
        os.path.join("a", "checkpoints", "last.pth"))
    cli.main(common(mnist_root, out, "a") + ["--mode", "test"])  # its own: replaced freely


def test_an_unreadable_checkpoint_folder_is_named_not_read_as_empty(world, mnist_root, capsys,
                                                                   monkeypatch):
    """--resume of a run whose checkpoints/ cannot be read said it "has no checkpoint". The
    denial is faked (root may read anything): os.access as a user without r-x would answer."""
    ckpts = str(world / "outputs" / "base" / "checkpoints")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
        False if os.path.abspath(p) == ckpts and mode & os.R_OK else real(p, mode, **kw)))
    monkeypatch.setattr(os.path, "exists", lambda p, real=os.path.exists: (
        False if os.path.dirname(os.path.abspath(p)) == ckpts else real(p)))
    expect_refusal(world, with_out(world, mnist_root, "--resume", "--epochs", "2"), 2,
                   ["cannot read", "checkpoints", "chmod"], capsys)


def test_a_second_run_on_a_held_folder_is_refused(world, mnist_root, capsys):
    folder = world / "outputs" / "base"
    with open(folder / ".lock", "a") as fh:  # another process's run, as the kernel sees it
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        expect_refusal(world, with_out(world, mnist_root, "--overwrite", "--method", "baseline"),
                       2, ["another run is using"], capsys)
        fcntl.flock(fh, fcntl.LOCK_UN)


CONFIGS = [("mode: bogus\n", ["mode", "bogus"]), ("lr: [0.1, 0.2]\n", ["lr", "single value"]),
           ("epochs: null\n", ["epochs", "single value"]), ("method: magic\n", ["magic"]),
           ("grayscale: 3\n", ["switch"]), ("epochs: 2.5\n", ["epochs", "int"]),
           ("lr: nan\n", ["--lr", "finite"]), ("- 1\n- 2\n", ["mapping"]),
           ("lr: [\n", ["--config"]),
           # a few hundred bytes of aliases expand to gigabytes: refused before expanding
           ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c]\n",
            ["aliases"]),
           ("x" * 70000 + ": 1\n", ["KiB"]),
           ("1: 2\nlr: 0.1\n", ["unknown keys", "1"]),
           ("1: 2\nbogus: 3\n", ["unknown keys", "bogus"]),  # mixed key types: no sort error
           ("lr: '" + "9" * 5000 + "x'\n", ["lr", "..."]),
           ("lr: 0.1\nepochs: 3\nlr: 0.2\n", ["lr", "more than once"])]


@pytest.mark.parametrize("text,words", CONFIGS, ids=[c[0].split(":")[0].strip("- \n")
                                                    + str(i) for i, c in enumerate(CONFIGS)])
def test_config_values_get_the_flags_checks(world, mnist_root, capsys, text, words):
    cfg = world / "outside" / "c.yaml"
    cfg.write_text(text)
    try:
        expect_refusal(world, with_out(world, mnist_root, "--config", str(cfg),
                                       "--experiment_name", "new"), 2, words, capsys)
    finally:
        cfg.unlink()


def test_a_config_that_is_not_utf8_is_one_line(world, mnist_root, capsys):
    cfg = world / "outside" / "latin1.yaml"
    cfg.write_bytes("lr: 0.1 # \u00e9t\u00e9\n".encode("latin-1"))
    try:
        expect_refusal(world, with_out(world, mnist_root, "--config", str(cfg)), 2,
                       ["UTF-8"], capsys)
    finally:
        cfg.unlink()


@pytest.mark.parametrize("flag", ["--seed", "--data_seed"])
def test_a_seed_beyond_32_bits_is_one_line(world, mnist_root, capsys, flag):
    expect_refusal(world, with_out(world, mnist_root, flag, "4294967296", name="s64"), 2,
                   [flag, "32-bit"], capsys)


def test_resume_keeps_the_recipe_and_refuses_another_run(world, mnist_root, capsys):
    def argv(method="baseline", *extra):
        return with_out(world, mnist_root, "--method", method, "--lr", "0.01", *extra,
                        name="rec")
    cli.main(argv())
    for args, words in ((argv("baseline", "--color_var", "0.03"),
                         ["belongs to another run", "color_var"]),
                        (argv("lnl"), ["method: checkpoint='baseline' vs now='lnl'"]),
                        (argv("baseline", "--seed", "3"), ["seed"])):
        expect_refusal(world, args + ["--resume"], 2, words, capsys)
    # another lr: a warning that names the value used, and args.json records that value
    cli.main(argv("baseline", "--lr", "0.5", "--epochs", "2", "--resume"))
    err = capsys.readouterr().err
    assert "--lr 0.5 differs from the resumed run's 0.01; the run continues with 0.01" in err
    recorded = json.load(open(world / "outputs" / "rec" / "args.json"))
    assert recorded["lr"] == 0.01 and recorded["epochs"] == 2


def test_stage_two_is_not_resumed_from_an_older_stage_one(world, mnist_root, capsys):
    init = str(world / "outputs" / "s1" / "checkpoints" / "last.pth")
    def stage(n, epochs):
        extra = (["--method", "baseline", "--lr", "0.01"] if n == 1 else
                 ["--method", "lnl", "--init_checkpoint", init])
        return with_out(world, mnist_root, *extra, "--resume_if_any", name=f"s{n}",
                        epochs=epochs)
    cli.main(stage(1, "1"))
    cli.main(stage(2, "1"))
    cli.main(stage(1, "2"))  # the recipe re-run with more epochs: stage 1 goes on to 2
    expect_refusal(world, stage(2, "2"), 2,
                   ["has changed since", "epoch 1", "epoch 2", "--overwrite"], capsys)


def test_stage_two_resumes_where_its_outputs_folder_was_moved(mnist_root, tmp_path, capsys):
    """A stage-2 run is tied to the bytes of its stage-1 checkpoint, not to their path: an
    outputs folder moved (or restored from an archive on another machine) resumes, and the
    record then names the checkpoint's new place; other bytes there are still refused."""
    def stage(out, n, epochs):
        extra = (["--method", "baseline", "--lr", "0.01"] if n == 1 else
                 ["--method", "lnl", "--init_checkpoint",
                  str(out / "s1" / "checkpoints" / "last.pth")])
        return common(mnist_root, out, f"s{n}", epochs) + extra + ["--resume_if_any"]
    first = tmp_path / "first" / "outputs"
    cli.main(stage(first, 1, "1"))
    cli.main(stage(first, 2, "1"))
    moved = tmp_path / "moved" / "outputs"
    shutil.copytree(first, moved)
    shutil.rmtree(tmp_path / "first")
    capsys.readouterr()
    cli.main(stage(moved, 2, "2"))
    err = capsys.readouterr().err
    assert "is gone" not in err and "another run" not in err
    record = json.load(open(moved / "s2" / "results.json"))
    assert record["epochs"] == 2
    ckpt = torch.load(moved / "s2" / "checkpoints" / "last.pth", weights_only=False)
    assert ckpt["init"]["path"] == str(moved / "s1" / "checkpoints" / "last.pth")
    # a stage 1 trained on by another epoch: the stage-2 run refuses to go on from it
    cli.main(stage(moved, 1, "2"))
    expect_refusal(tmp_path, stage(moved, 2, "3"), 2, ["has changed since", "--overwrite"],
                   capsys)


def test_networks_that_cannot_read_the_dataset(world, mnist_root, capsys):
    expect_refusal(world, with_out(world, mnist_root, "--dataset_name", "IRMColoredMNIST",
                                   "--method", "baseline", "--experiment_name", "new"),
                   2, ["cannot read IRMColoredMNIST", "configs/"], capsys)


def test_damaged_mnist_files(world, tmp_path, capsys):
    data = tmp_path / "data" / "MNIST" / "raw"
    data.mkdir(parents=True)
    for stem in colored_mnist.MNIST_FILES.values():
        (data / f"{stem}.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x01x"))
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(b"plain text, not gzip")
    (data / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0" * 4000)[:30])
    for stem, words in (("t10k-labels-idx1-ubyte", ["damaged", "fetch"]),
                        ("train-labels-idx1-ubyte", ["damaged", "fetch"])):
        with pytest.raises(utils.UserError) as err:
            colored_mnist.read_idx(str(data / f"{stem}.gz"))
        for w in words:
            assert w in str(err.value)
    # fetch_data --from refuses the damaged folder before writing anything
    dest = tmp_path / "dest"
    expect_refusal(tmp_path, ["mnist", "--from", str(data), "--data_root_base", str(dest)], 1,
                   ["damaged"], capsys, call=fetch_data.main)
    assert not dest.exists()


@pytest.fixture
def small_mnist(monkeypatch):
    """The first 2,000 images of each MNIST split: the cache logic under test does not depend
    on the count, and each Colored-MNIST build then takes a fraction of a second."""
    real = colored_mnist.load_mnist
    monkeypatch.setattr(colored_mnist, "load_mnist",
                        lambda root: {k: v[:2000] for k, v in real(root).items()})


def test_truncated_colored_mnist_cache_is_rebuilt(mnist_root, tmp_path, capsys, small_mnist):
    data = tmp_path / "data"
    shutil.copytree(os.path.join(mnist_root, "MNIST"), data / "MNIST")
    path = colored_mnist.cmnist_cache_path(str(data), 0.02, 0)
    good = colored_mnist.load_or_build_cmnist(str(data), 0.02, 0, str(tmp_path / "out"))
    whole = open(path, "rb").read()
    for damage in (whole[:len(whole) // 2], whole[:-200], b"garbage"):
        open(path, "wb").write(damage)
        again = colored_mnist.load_or_build_cmnist(str(data), 0.02, 0, str(tmp_path / "out"))
        assert all(np.array_equal(good[k], again[k]) for k in good)
        assert "damaged" in capsys.readouterr().out
    assert open(path, "rb").read() == whole


def test_read_only_data_folder_caches_in_the_output_folder(mnist_root, tmp_path, monkeypatch,
                                                           capsys, small_mnist):
    """A shared read-only dataset mount (simulated: root ignores file modes)."""
    data, out = tmp_path / "ro", tmp_path / "out"
    shutil.copytree(os.path.join(mnist_root, "MNIST"), data / "MNIST")
    real = colored_mnist.writable
    monkeypatch.setattr(colored_mnist, "writable",
                        lambda f: not str(f).startswith(str(data)) and real(f))
    first = colored_mnist.load_or_build_cmnist(str(data), 0.045, 0, str(out))
    assert not (data / "colored_mnist").exists()
    cached = out / ".cache" / "colored_mnist"
    assert len(os.listdir(cached)) == 1
    assert "cached as" in capsys.readouterr().out
    again = colored_mnist.load_or_build_cmnist(str(data), 0.045, 0, str(out))  # read, not built
    assert "building" not in capsys.readouterr().out
    assert np.array_equal(first["train_image"], again["train_image"])
    monkeypatch.setattr(colored_mnist, "writable", lambda f: False)
    shutil.rmtree(cached)
    colored_mnist.load_or_build_cmnist(str(data), 0.045, 0, str(out))
    assert "kept in memory" in capsys.readouterr().out and not cached.exists()


def test_full_disk_names_the_file_and_keeps_the_last_checkpoint(world, mnist_root, monkeypatch,
                                                                capsys):
    base = with_out(world, mnist_root, "--method", "baseline", name="disk")
    cli.main(base)
    before = (world / "outputs" / "disk" / "checkpoints" / "last.pth").read_bytes()

    def no_space(obj, fh, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", no_space)
    longer = with_out(world, mnist_root, "--method", "baseline", "--resume", name="disk",
                      epochs="2")
    line = expect_refusal(world / "outputs" / "disk" / "checkpoints", longer, 1,
                          ["no space left", "last.pth", "MiB free", "--resume"], capsys)
    assert line.startswith("error: no space left")
    assert (world / "outputs" / "disk" / "checkpoints" / "last.pth").read_bytes() == before


def test_a_full_disk_at_the_first_checkpoint_does_not_advise_resume(world, mnist_root,
                                                                    monkeypatch, capsys):
    """With no checkpoint saved yet, --resume would fail: the advice is to run it again."""
    def no_space(obj, fh, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(SystemExit) as exc:
        cli.main(with_out(world, mnist_root, "--method", "baseline", name="first"))
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "no space left" in err
    assert "--resume" not in err and "no checkpoint was saved yet" in err


def test_ctrl_c_in_test_mode_is_one_line(world, mnist_root, monkeypatch, capsys):
    def interrupted(self, loader):
        raise KeyboardInterrupt
    monkeypatch.setattr(Solver, "predict_all", interrupted)
    expect_refusal(world / "outputs" / "base" / "checkpoints",
                   with_out(world, mnist_root, "--mode", "test"), 130, ["interrupted"], capsys)


def test_torchrun_refusal_is_printed_by_one_process(monkeypatch, capsys):
    _, args = cli.parse_args(["--method", "irm", "--env_from_bias"])
    for rank, lines in (("1", 0), ("0", 1)):
        monkeypatch.setenv("RANK", rank)
        with pytest.raises(SystemExit) as exc:
            cli.check_distributed(cli.build_parser(), args, 2)
        assert exc.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == lines


def test_overwrite_removes_only_what_the_tool_wrote(world, mnist_root):
    base = with_out(world, mnist_root, "--method", "baseline", name="ow")
    cli.main(base)
    folder = world / "outputs" / "ow"
    (folder / "my_notes.txt").write_text("mine")
    (folder / "checkpoints" / "my_model.pt").write_bytes(b"mine too")
    cli.main(base + ["--overwrite", "--resume_if_any"])  # what a script passes: overwrite wins
    assert (folder / "my_notes.txt").read_text() == "mine"
    assert (folder / "checkpoints" / "my_model.pt").read_bytes() == b"mine too"
    assert len([l for l in open(folder / "metrics.jsonl")]) == 1  # the new run's only
    log = (folder / "run.log").read_text()
    assert "kept files this tool did not write" in log and "epoch 1/1" in log and "ETA" in log
    assert run_folder.check_experiment_name("a/b") is None


# --------------------------------------------------------------------------- untrusted files
class RunsCode:
    """A pickled object that, when unpickled, creates a folder: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def poisoned(world, name):
    """A copy of the finished run's checkpoint with one extra pickled object that runs code."""
    ckpt = torch.load(ckpt_path(world), weights_only=True)
    ckpt["note"] = RunsCode(str(world / f"code_ran_{name}"))
    path = world / f"{name}.pth"
    torch.save(ckpt, path)
    return str(path)


@pytest.mark.parametrize("mode", ["init_checkpoint", "test", "resume"])
def test_a_checkpoint_that_would_run_code_is_refused_unrun(world, mnist_root, capsys, mode):
    """Every way a handed checkpoint reaches the tool: stage 2's start, test mode, and a
    last.pth left in a run folder for --resume."""
    path = poisoned(world, mode)
    if mode == "init_checkpoint":
        argv = with_out(world, mnist_root, "--method", "lnl", "--init_checkpoint", path,
                        name="from_poison")
    elif mode == "test":
        argv = with_out(world, mnist_root, "--mode", "test", "--load_checkpoint_path", path,
                        "--test_output_npy", "p.npy", name="base")
    else:
        cli.main(with_out(world, mnist_root, "--method", "baseline", "--lr", "0.01",
                          name="to_resume"))
        shutil.copyfile(path, world / "outputs" / "to_resume" / "checkpoints" / "last.pth")
        argv = with_out(world, mnist_root, "--method", "baseline", "--lr", "0.01",
                        "--epochs", "2", "--resume", name="to_resume")
    before = snapshot(world)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code != 0 and "Traceback" not in err, err
    # not this tool's old format either: the converter (which would refuse it) is not named
    assert "could run code" in err and "convert_checkpoint.py" not in err, err
    assert not os.path.exists(world / f"code_ran_{mode}")  # nothing was unpickled
    after = snapshot(world)
    assert {k: v for k, v in after.items() if "from_poison" not in k} == \
        {k: v for k, v in before.items() if "from_poison" not in k}


def test_an_old_format_checkpoint_converts_once_and_then_resumes(world, mnist_root, tmp_path):
    """The converter is the one knowing unpickle: old checkpoints (numpy RNG state) become
    weights_only checkpoints that resume; the original stays beside them."""
    import subprocess
    import sys
    out = tmp_path / "outputs"
    argv = common(mnist_root, out, "old") + ["--method", "baseline", "--lr", "0.01"]
    cli.main(argv)
    last = out / "old" / "checkpoints" / "last.pth"
    ckpt = torch.load(last, weights_only=True)
    rng = ckpt["rng"]["numpy"]  # written as releases before 2026-11 wrote it
    ckpt["rng"]["numpy"] = (rng["name"], rng["keys"].numpy().astype(np.uint32), rng["pos"],
                            rng["has_gauss"], rng["cached_gaussian"])
    torch.save(ckpt, last)
    with pytest.raises(SystemExit):
        cli.main(argv + ["--epochs", "2", "--resume"])
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts",
                          "convert_checkpoint.py")
    done = subprocess.run([sys.executable, script, str(last)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert os.path.exists(str(last) + ".pre2026-11")
    again = torch.load(last, weights_only=True)
    assert torch.equal(again["rng"]["numpy"]["keys"], rng["keys"])
    cli.main(argv + ["--epochs", "2", "--resume"])
    assert json.load(open(out / "old" / "results.json"))["epochs"] == 2
    done = subprocess.run([sys.executable, script, str(last)], capture_output=True, text=True)
    assert done.returncode == 2 and "exists already" in done.stderr  # never overwrites


# --------------------------------------------------------------------------- names and links
def test_a_wildcard_name_touches_only_its_own_run(world, mnist_root, capsys):
    """Run names are literal: 'g_*' --overwrite leaves g_a alone; 'h[1]' does not resume h1."""
    base = ["--method", "baseline", "--lr", "0.01"]
    cli.main(with_out(world, mnist_root, *base, name="g_a"))
    cli.main(with_out(world, mnist_root, *base, name="h1"))
    others = {k: v for k, v in snapshot(world / "outputs").items()
              if k.startswith(("g_a", "h1"))}
    cli.main(with_out(world, mnist_root, *base, name="g_*"))
    cli.main(with_out(world, mnist_root, *base, "--overwrite", name="g_*"))
    expect_refusal(world, with_out(world, mnist_root, *base, "--resume", name="h[1]"), 2,
                   ["no checkpoint"], capsys)
    after = snapshot(world / "outputs")
    assert {k: v for k, v in after.items() if k.startswith(("g_a", "h1"))} == others


@pytest.mark.parametrize("entry", ["checkpoints", "logs", "metrics.jsonl", "run.log"])
def test_a_linked_entry_of_a_run_folder_is_refused(world, mnist_root, capsys, entry):
    """--overwrite or a resumed run would delete or append through the link, outside the run."""
    name = f"linked_{entry.replace('.', '_')}"
    cli.main(with_out(world, mnist_root, "--method", "baseline", "--lr", "0.01", name=name))
    run = world / "outputs" / name
    target = world / "outside" / ("checkpoints" if entry == "checkpoints" else "logs")
    if entry in ("checkpoints", "logs"):
        shutil.rmtree(run / entry)
        os.symlink(target, run / entry)
    else:
        os.remove(run / entry)
        os.symlink(target / "keep.txt", run / entry)
    for flag in ("--overwrite", "--resume"):
        expect_refusal(world, with_out(world, mnist_root, "--method", "baseline", "--lr",
                                       "0.01", "--epochs", "2", flag, name=name), 2,
                       ["symbolic link", entry], capsys)
    assert (world / "outside" / "logs" / "keep.txt").read_text() == "user data"


def test_a_torn_last_metrics_line_does_not_block_resume(world, mnist_root, capsys):
    """A crash mid-write leaves half a line: it is dropped and the run resumes."""
    argv = with_out(world, mnist_root, "--method", "baseline", "--lr", "0.01", name="torn")
    cli.main(argv)
    metrics = world / "outputs" / "torn" / "metrics.jsonl"
    with open(metrics, "a") as fh:
        fh.write('{"epoch": 2, "loss_cls": 0.1')
    cli.main(argv + ["--epochs", "2", "--resume"])
    rows = [json.loads(line) for line in open(metrics)]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert "incomplete line" in capsys.readouterr().out


def test_the_lock_is_held_from_the_first_check_to_the_end(world, mnist_root, monkeypatch):
    """A second process must find the run taken while the first is still building its data
    (before, the lock came after the data, so both passed their checks)."""
    seen = []
    real_build = cli.build_run

    def build_and_probe(args):
        with open(world / "outputs" / "early" / ".lock", "a") as other:  # as another process
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
                fcntl.flock(other, fcntl.LOCK_UN)
            except BlockingIOError:
                seen.append("held")
        return real_build(args)
    monkeypatch.setattr(cli, "build_run", build_and_probe)
    cli.main(with_out(world, mnist_root, "--method", "baseline", "--lr", "0.01", name="early"))
    assert seen == ["held"]


def test_a_refused_new_run_leaves_no_folder_behind(world, mnist_root, capsys):
    expect_refusal(world, with_out(world, mnist_root, "--method", "lnl", "--init_checkpoint",
                                   str(world / "missing.pth"), name="never/made"), 1,
                   ["missing.pth"], capsys)
    assert not os.path.exists(world / "outputs" / "never")


def test_predictions_load_without_unpickling_and_a_pickle_is_never_read(world, mnist_root,
                                                                        capsys):
    """Prediction files are structured arrays (plain np.load); an existing target that is a
    pickle (which np.load(allow_pickle=True) would run) is refused as foreign, not read."""
    cli.main(with_out(world, mnist_root, "--mode", "test", "--test_output_npy", "plain.npy"))
    rows = np.load(world / "outputs" / "base" / "plain.npy")
    assert rows["pred_label"].shape == (100,) and rows["probabilities"].shape == (100, 10)
    summary = json.load(open(world / "outputs" / "base" / "plain.json"))
    assert summary["predictions"] == "plain.npy" and 0 <= summary["accuracy"] <= 1
    marker = world / "code_ran_npy"
    np.save(world / "outputs" / "base" / "pickled.npy",
            np.array([RunsCode(str(marker))], dtype=object), allow_pickle=True)
    expect_refusal(world, with_out(world, mnist_root, "--mode", "test", "--test_output_npy",
                                   "pickled.npy"), 2, ["not a prediction file"], capsys)
    assert not marker.exists()
    (world / "outputs" / "base" / "notes.json").write_text('{"mine": 1}')
    np.save(world / "outputs" / "base" / "notes2.npy", rows)
    os.rename(world / "outputs" / "base" / "notes.json", world / "outputs" / "base" / "notes2.json")
    expect_refusal(world, with_out(world, mnist_root, "--mode", "test", "--test_output_npy",
                                   "notes2.npy"), 2, ["notes2.json", "not a prediction summary"],
                   capsys)


def test_test_mode_evaluates_on_the_runs_own_data(world, mnist_root, capsys):
    """A gray run at another sigma^2, tested without repeating its data flags, is evaluated on
    its own data (the accuracy its training reported); a contradicting flag is one line."""
    cli.main(with_out(world, mnist_root, "--method", "baseline", "--lr", "0.01", "--color_var",
                      "0.045", "--grayscale", name="gray45"))
    trained = json.load(open(world / "outputs" / "gray45" / "results.json"))["test_acc"]
    acc = cli.main(with_out(world, mnist_root, "--mode", "test", name="gray45"))
    assert acc == trained
    used = json.load(open(world / "outputs" / "gray45" / "test_args.json"))
    assert used["color_var"] == 0.045 and used["grayscale"] is True
    expect_refusal(world, with_out(world, mnist_root, "--mode", "test", "--color_var", "0.03",
                                   name="gray45"), 2, ["--color_var", "0.045", "contradicts"],
                   capsys)


def test_resume_with_fewer_epochs_than_done_is_one_line(world, mnist_root, capsys):
    """Before, --resume --epochs 1 on a finished 2-epoch run rewrote its args.json."""
    argv = with_out(world, mnist_root, "--method", "baseline", "--lr", "0.01", name="two",
                    epochs="2")
    cli.main(argv)
    expect_refusal(world, argv + ["--epochs", "1", "--resume"], 2,
                   ["--epochs 1", "already trained 2 epochs"], capsys)


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 3 MiB filesystem (tmpfs; needs root, as CI and this machine have)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    import subprocess
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_really_full_disk_is_one_line_and_keeps_the_last_checkpoint(mnist_root, tiny_disk,
                                                                      capsys):
    """torch.save on a full filesystem raises RuntimeError, not OSError: still one line."""
    argv = common(mnist_root, tiny_disk / "out", "full") + ["--method", "baseline"]
    cli.main(argv)
    last = tiny_disk / "out" / "full" / "checkpoints" / "last.pth"
    before = last.read_bytes()
    free = shutil.disk_usage(tiny_disk).free
    (tiny_disk / "filler").write_bytes(b"\0" * max(free - len(before) // 2, 0))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(argv + ["--epochs", "2", "--resume"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "no space left" in lines[0] and "--resume" in lines[0], err
    assert last.read_bytes() == before


@pytest.mark.parametrize("config,method", [("irm_cmnist_erm.yaml", "groupdro"),
                                           ("spiral.yaml", "lff"), ("spiral.yaml", "jtt")])
def test_a_multiclass_method_on_a_one_logit_dataset_is_refused_before_a_folder_exists(
        config, method, tmp_path, capsys):
    """GroupDRO, LfF and JTT take a cross-entropy over class logits: on a one-logit (binary)
    dataset they died mid-training with 'Target 1 is out of bounds', leaving a run folder."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["--config", os.path.join("configs", config), "--method", method,
                  "--output_dir", str(tmp_path), "--experiment_name", "one_logit"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--method {method} computes a cross-entropy over class logits" in err
    assert "Traceback" not in err and not os.listdir(tmp_path)


def damage_checkpoint(path, change):
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


@pytest.mark.parametrize("method,change,said", [
    ("lff", lambda c: c["nets"].pop("f_b"), "holds no network 'f_b'"),
    ("lff", lambda c: c["nets"]["g_b"].update(weight=torch.zeros(10, 7)), "network 'g_b' holds"),
    ("lff", lambda c: c["optimizers"].pop("biased"), "no optimizer state 'biased'"),
    ("lff", lambda c: c["method"].update(ema=torch.zeros(2, 3)), "loss averages 'ema'"),
    ("groupdro", lambda c: c["method"].update(q=torch.ones(3) / 3), "group weights are not"),
    ("jtt", lambda c: c["method"].update(errors=torch.zeros(5, dtype=torch.bool)),
     "error set is not one flag"),
    ("jtt", lambda c: c["method"].update(examples_seen="400"), "'examples_seen' is '400'"),
    ("jtt", lambda c: c["method"].update(examples_seen=-1), "not a count"),
    ("dfa", lambda c: c["method"].update(step=2.5), "'step' is 2.5, not a count"),
    ("lff", lambda c: c["method"].update(ema=c["method"]["ema"] * float("nan")),
     "'ema' are not finite floats"),
    ("groupdro", lambda c: c["method"].update(q=-c["method"]["q"]), "not a distribution"),
    ("groupdro", lambda c: c["method"].update(q=c["method"]["q"].long()), "not a distribution"),
])
def test_a_resumed_checkpoint_lacking_a_twin_an_optimizer_or_a_method_state_is_refused(
        method, change, said, mnist_root, tmp_path, capsys):
    """The twins, optimizer groups and method states are checked as f, g, h are: a KeyError,
    a size-mismatch trace or an IndexError before; now one line, exit 2, nothing written."""
    common = ["--config", "configs/lff_cmnist.yaml", "--method", method, "--data_root_base",
              mnist_root, "--output_dir", str(tmp_path), "--device", "cpu",
              "--max_train_samples", "400", "--max_test_samples", "100", "--batch_size", "64",
              "--experiment_name", "run"] + {"jtt": ["--jtt_first_epochs", "1"],
                                             "dfa": ["--config", "configs/dfa_cmnist.yaml"]
                                             }.get(method, [])
    cli.main(common + ["--epochs", "2"])
    damage_checkpoint(tmp_path / "run" / "checkpoints" / "last.pth", change)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main(common + ["--epochs", "3", "--resume"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and said in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_test_mode_loads_every_network_the_method_predicts_with(mnist_root, tmp_path):
    """DFA predicts through both encoders: test mode loads f_b too, so it reproduces the
    record's final accuracy (it took f, g, h only before)."""
    common = ["--config", "configs/dfa_cmnist.yaml", "--data_root_base", mnist_root,
              "--output_dir", str(tmp_path), "--device", "cpu", "--max_train_samples", "600",
              "--max_test_samples", "200", "--batch_size", "64", "--lff_input_scale", "unit",
              "--lr", "0.001", "--experiment_name", "dfa"]
    cli.main(common + ["--epochs", "2"])
    acc = cli.main(common + ["--mode", "test"])
    assert acc == json.load(open(tmp_path / "dfa" / "results.json"))["test_acc"]


def test_jtt_with_no_epoch_left_for_its_second_model_is_refused(tmp_path, capsys):
    """T >= --epochs trained plain ERM and recorded it as JTT."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["--config", "configs/lff_cmnist.yaml", "--method", "jtt", "--epochs", "50",
                  "--output_dir", str(tmp_path), "--experiment_name", "erm"])
    assert exc.value.code == 2
    assert "--jtt_first_epochs 50 leaves none of --epochs 50" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_an_upsampling_that_would_exhaust_the_memory_is_refused_before_any_folder(
        tmp_path, capsys):
    """--jtt_up 1e8 trained T epochs, then asked for 191 GB to serve the error set (a
    traceback); lambda_up is at most 1000 (the authors search 20-100)."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["--config", "configs/lff_cmnist.yaml", "--method", "jtt", "--jtt_up", "1e8",
                  "--jtt_first_epochs", "1", "--epochs", "3", "--output_dir", str(tmp_path),
                  "--experiment_name", "huge"])
    assert exc.value.code == 2
    assert "--jtt_up must lie in [1, 1000]; got 100000000.0" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_an_over_long_run_name_is_refused_before_any_folder(tmp_path, capsys):
    """It said 'check permissions and space' and left empty nested folders."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["--output_dir", str(tmp_path), "--experiment_name", "a/" + "b" * 300])
    assert exc.value.code == 2
    assert "more than a file name may hold" in capsys.readouterr().err
    assert not os.listdir(tmp_path)
