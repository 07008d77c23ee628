"""records.py: the bias diagnostic, provenance, and confusion figures that explain themselves."""
import argparse
import json
import os
import subprocess

import numpy as np
import pytest
import torch

import records
from colored_mnist import PALETTE
from utils import matrix_figure


def test_bias_agreement_is_the_share_of_predictions_equal_to_the_bias():
    preds = np.array([0, 1, 2, 3])
    assert records.bias_agreement(preds, np.array([0, 1, 5, 5, 9]), 10) == 0.5
    # a bias attribute that does not name a class (12 age bins vs 2 genders) has no agreement
    assert records.bias_agreement(preds, np.array([0, 1, 11, 3]), 2) is None


def colour_world(n_test=2000, seed=0):
    """Colored-MNIST-like arrays: in training every digit wears its own colour; on the test
    set colours are random."""
    rng = np.random.default_rng(seed)
    train_y = rng.integers(0, 10, 5000)
    test_y, test_colour = rng.integers(0, 10, n_test), rng.integers(0, 10, n_test)
    return train_y, train_y.copy(), test_y, test_colour


def test_a_model_that_reads_only_the_colour_is_right_when_aligned_and_wrong_otherwise():
    train_y, train_colour, test_y, test_colour = colour_world()
    cells = records.bias_cells(train_y, train_colour)
    by_colour = records.aligned_accuracies(cells, test_y, test_colour, test_colour)
    assert by_colour == {"test_acc_aligned": 1.0, "test_acc_conflicting": 0.0}
    by_digit = records.aligned_accuracies(cells, test_y, test_y, test_colour)
    assert by_digit == {"test_acc_aligned": 1.0, "test_acc_conflicting": 1.0}
    aligned = (test_y == test_colour).mean()  # about 1 in 10 test images
    assert 0.07 < aligned < 0.13


def test_in_pattern_cells_of_the_real_image_splits():
    """Dogs and Cats TB1 (dark cats, bright dogs) and an IMDB-Face-like split where each
    gender spans several age bins: a cell is in the pattern when training favours it."""
    cells = records.bias_cells(np.array([0] * 50 + [1] * 50), np.array([0] * 50 + [1] * 50))
    got = records.aligned_accuracies(cells, np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]),
                                     np.array([0, 1, 1, 0]))
    assert got == {"test_acc_aligned": 0.5, "test_acc_conflicting": 0.5}
    women, men = np.zeros(30, int), np.ones(30, int)
    ages = np.r_[np.arange(30) % 3, 5 + np.arange(30) % 3]  # women 0-2, men 5-7 of 8 bins
    cells = records.bias_cells(np.r_[women, men], ages)
    inside = records.aligned_accuracies(cells, np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]),
                                        np.array([1, 6, 7, 2]))
    assert inside == {"test_acc_aligned": 1.0, "test_acc_conflicting": 1.0}
    first = records.aligned_accuracies(cells, np.array([0, 0]), np.array([0, 1]),
                                       np.array([2, 6]))
    assert first == {"test_acc_aligned": 1.0, "test_acc_conflicting": 0.0}


def test_worst_group_accuracy_is_the_lowest_over_label_and_bias_groups():
    """GroupDRO's and JTT's metric: groups (y, bias label) with examples; the mean hides one."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    bias = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    preds = np.array([0, 0, 0, 1, 1, 1, 1, 0])  # right everywhere but group (0, 1) and (1, 0)
    assert records.worst_group_accuracy(labels, preds, bias) == 0.0
    preds[3], preds[7] = 0, 1
    assert records.worst_group_accuracy(labels, preds, bias) == 1.0
    assert records.worst_group_accuracy([], [], []) is None


def test_bootstrap_interval_covers_the_accuracy_and_narrows_with_more_examples():
    rng = np.random.default_rng(1)
    small, large = rng.random(200) < 0.7, rng.random(20000) < 0.7
    for correct in (small, large):
        low, high = records.bootstrap_ci(correct)
        assert low <= correct.mean() <= high
        assert records.bootstrap_ci(correct) == [low, high]  # seeded: the same interval
    width = lambda c: np.subtract(*records.bootstrap_ci(c)[::-1])
    assert width(large) < width(small) / 5  # about sqrt(100) = 10 times narrower
    # about 1.96 binomial standard errors either side
    assert width(small) == pytest.approx(2 * 1.96 * np.sqrt(0.7 * 0.3 / 200), rel=0.15)


def test_selection_takes_the_best_validation_epoch_and_shows_the_oracle_apart():
    history = [{"epoch": 1, "val_acc": 0.5, "test_acc": 0.30},
               {"epoch": 2, "val_acc": 0.9, "test_acc": 0.40},
               {"epoch": 3, "val_acc": 0.9, "test_acc": 0.55},  # a tie: the earlier epoch
               {"epoch": 4, "test_acc": 0.60}]                   # not evaluated on val
    assert records.selection(history) == {
        "selected_epoch": 2, "val_acc_selected": 0.9, "test_acc_selected": 0.40,
        "test_acc_oracle": 0.55, "oracle_epoch": 3}
    assert records.selection([{"epoch": 1, "test_acc": 0.3}]) == {}
    # GroupDRO's and JTT's criterion, where validation has (label, bias label) groups
    for row, worst in zip(history, (0.2, 0.1, 0.0, None)):
        if worst is not None:
            row["val_worst_group_acc"] = worst
    chosen = records.selection(history)
    assert (chosen["selected_epoch_worst_group"], chosen["test_acc_selected_worst_group"],
            chosen["selected_epoch"]) == (1, 0.30, 2)
    # JTT's first model (its first T epochs) is not the model it reports: selection and the
    # oracle look from its second model's first epoch on
    later = records.selection(history, first_epoch=3)
    assert (later["selected_epoch"], later["test_acc_selected"], later["oracle_epoch"],
            later["selected_epoch_worst_group"]) == (3, 0.55, 3, 3)


def test_every_evaluation_metric_is_tagged_test_and_a_method_statistic_train():
    """One rule (metrics.tag) for TensorBoard: what an evaluation measures lies under test/,
    whatever its set, what a method's step measures under train/."""
    import metrics
    evaluated = [metrics.FINAL, metrics.aligned(), metrics.conflicting(), metrics.worst_group(),
                 metrics.TOP_CLASS, metrics.AGREEMENT, metrics.VALIDATION,
                 metrics.conflicting("val"), metrics.worst_group("val")]
    tags = [metrics.tag(k, eval_sets={"val"}) for k in evaluated]
    assert all(t.startswith("test/") for t in tags) and len(set(tags)) == len(tags)
    assert tags[:2] == ["test/acc", "test/acc_aligned"]  # the tags earlier runs wrote
    assert [metrics.tag(k, {"val"}) for k in (metrics.TRAIN, "loss_cls", "lr")] == [
        "train/train_acc", "train/loss_cls", "train/lr"]
    # an extra set's name is read from the run, not guessed: without it, train/
    assert metrics.tag("mixed_acc", {"mixed"}) == "test/mixed_acc"
    assert metrics.tag("mixed_acc") == "train/mixed_acc"


def test_provenance_names_commit_device_versions_and_times():
    prov = records.provenance(torch.device("cpu"), started=100.0, ended=160.5)
    assert prov["wall_time_s"] == 60.5 and prov["started"].startswith("1970-01-01T00:01:40")
    assert prov["device"] == "cpu" and prov["torch"] == torch.__version__
    assert prov["commit"] is None or len(prov["commit"]) == 40
    outside = records.git_state(root=os.path.abspath(os.sep))  # not a checkout
    assert outside == {"commit": None, "dirty": None}


def test_a_cpu_piece_names_its_cpu_instruction_set_and_threads(monkeypatch):
    """A run carried between machines changes CPU (and kernels) between pieces: each piece's
    steps line in run.log and the record say which."""
    monkeypatch.setattr(records, "cpu_name", lambda: "Some CPU 9000")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert records.device_text(torch.device("cpu")) == "cpu (Some CPU 9000, AVX512, 1 thread)"
    prov = records.provenance(torch.device("cpu"), started=0.0, ended=1.0)
    assert (prov["device_name"], prov["cpu_capability"], prov["threads"]) == (
        "Some CPU 9000", "AVX512", 1)


def test_the_record_names_the_code_the_process_loaded_not_the_checkout_at_its_end(monkeypatch):
    """A run of hours outlives commits: its record keeps the commit read when the process
    started, and says whether the checkout changed under it."""
    loaded = {"commit": "a" * 40, "dirty": False}
    monkeypatch.setattr(records, "LOADED_CODE", loaded)
    monkeypatch.setattr(records, "git_state", lambda root=None: {"commit": "b" * 40,
                                                                 "dirty": False})
    prov = records.provenance(torch.device("cpu"), started=1.0, ended=2.0)
    assert prov["commit"] == "a" * 40 and prov["checkout_changed"] is True
    monkeypatch.setattr(records, "git_state", lambda root=None: dict(loaded))
    assert records.provenance(torch.device("cpu"), 1.0, 2.0)["checkout_changed"] is False
    assert records.code_text() == "code at commit aaaaaaaaaaaa"
    assert records.code_text({"commit": "c" * 40, "dirty": True}).endswith(
        "with uncommitted changes")


def test_dirty_means_code_changed_not_records_under_results(tmp_path):
    """The long runs rewrite resume points under results/ as they train: that is not code."""
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], env=env, check=True,
                                    capture_output=True)
    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "main.py").write_text("x = 1\n")
    (tmp_path / "results" / "run.log").write_text("epoch 1\n")
    git("add", "-A")
    git("commit", "-qm", "c")
    (tmp_path / "results" / "run.log").write_text("epoch 2\n")
    (tmp_path / "results" / "new.json").write_text("{}")
    assert records.git_state(str(tmp_path))["dirty"] is False
    (tmp_path / "main.py").write_text("x = 2\n")
    assert records.git_state(str(tmp_path))["dirty"] is True


def test_a_linked_venv_is_not_uncommitted_code(tmp_path):
    """A .venv that is a link (a common set-up) is as ignored as a .venv folder: the
    repository's own .gitignore must match both, or every run is marked dirty."""
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path / "repo"), *a], env=env,
                                    check=True, capture_output=True)
    (tmp_path / "repo").mkdir()
    (tmp_path / "elsewhere").mkdir()
    git("init", "-q")
    (tmp_path / "repo" / ".gitignore").write_text(
        open(os.path.join(records.ROOT, ".gitignore")).read())
    (tmp_path / "repo" / "main.py").write_text("x = 1\n")
    git("add", "-A")
    git("commit", "-qm", "c")
    os.symlink(tmp_path / "elsewhere", tmp_path / "repo" / ".venv")
    assert records.git_state(str(tmp_path / "repo"))["dirty"] is False


def test_every_ledger_record_says_when_its_commit_was_read():
    """Records name the code the process loaded at its start; the two written before that
    rule (465dc81) name the checkout at their end, and say so in a field of their own."""
    import glob
    paths = glob.glob(os.path.join(records.ROOT, "results", "cmnist", "*", "results.json"))
    assert paths
    for path in paths:
        prov = json.load(open(path))["provenance"]
        assert prov.get("commit_read_at") in ("process start", "run end"), path
        if prov["commit_read_at"] == "run end":
            assert "commit_note" in prov, path


def panels(dataset="ColoredMNIST"):
    args = argparse.Namespace(experiment_name="lnl", dataset_name=dataset, color_var=0.025)
    labels, preds, bias = np.arange(20) % 10, np.arange(20) % 10, (np.arange(20) + 1) % 10
    return dict(records.confusion_panels(args, labels, preds, bias, 10, 7, "last.pth"))


def test_confusion_titles_say_sigma2_epoch_and_checkpoint():
    p = panels()
    matrix, title, ylabel, _, colours = p["label"]
    assert np.trace(matrix) == 20 and "accuracy 1.000" in title
    assert "σ²=0.025, epoch 7, last.pth" in title and colours is None
    matrix, title, ylabel, _, colours = p["bias"]
    assert np.trace(matrix) == 0 and "σ²=0.025" in title and "colour" in ylabel
    assert colours is PALETTE
    assert "σ²" not in panels("IRMColoredMNIST")["bias"][1]


def test_colour_matrix_shows_its_colours_and_a_labelled_colour_bar():
    import matplotlib.pyplot as plt
    fig = matrix_figure(panels()["bias"][0], "t", "colour", "pred", row_colours=PALETTE)
    ax, bar = fig.axes
    assert "share of the row" in bar.get_ylabel()
    swatches = [tuple(p.get_facecolor()[:3]) for p in ax.patches]
    assert swatches == [pytest.approx(tuple(c)) for c in PALETTE]
    # laid out without overlaps or clipping: the axis label clears the swatches, and every
    # label and title lies inside the figure
    fig.canvas.draw()  # lays the ticks and labels out
    renderer = fig.canvas.get_renderer()
    label = ax.yaxis.label.get_window_extent(renderer)
    assert all(label.x1 < p.get_window_extent(renderer).x0 for p in ax.patches)
    page = fig.bbox
    for text in (ax.title, ax.xaxis.label, ax.yaxis.label, bar.yaxis.label):
        box = text.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and \
            box.y1 <= page.y1, text.get_text()
    plt.close(fig)
