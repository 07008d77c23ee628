"""records.py: the bias diagnostic, provenance, and confusion figures that explain themselves."""
import argparse
import os

import numpy as np
import pytest
import torch

import records
from data_handler import PALETTE
from utils import matrix_figure


def test_bias_agreement_is_the_share_of_predictions_equal_to_the_bias():
    preds = np.array([0, 1, 2, 3])
    assert records.bias_agreement(preds, np.array([0, 1, 5, 5, 9]), 10) == 0.5
    # a bias attribute that does not name a class (12 age bins vs 2 genders) has no agreement
    assert records.bias_agreement(preds, np.array([0, 1, 11, 3]), 2) is None


def test_provenance_names_commit_device_versions_and_times():
    prov = records.provenance(torch.device("cpu"), started=100.0, ended=160.5)
    assert prov["wall_time_s"] == 60.5 and prov["started"].startswith("1970-01-01T00:01:40")
    assert prov["device"] == "cpu" and prov["torch"] == torch.__version__
    assert prov["commit"] is None or len(prov["commit"]) == 40
    outside = records.git_state(root=os.path.abspath(os.sep))  # not a checkout
    assert outside == {"commit": None, "dirty": None}


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
    plt.close(fig)
