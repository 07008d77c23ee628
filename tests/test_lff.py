"""LfF's Colored MNIST (lff_cmnist.py) and the methods after LNL (LfF, GroupDRO, JTT): the
generator's rule, ratios, palette and determinism; the validation split held out of the
training images only; each method's update computed by hand on a tiny batch; each resumed
bit-exactly."""
import json
import os

import numpy as np
import pytest
import torch
from torch import nn, optim

import lff_cmnist as lff
import main as cli
from data_handler import Batch, split_validation
from dataset_specs import build_datasets
from methods import METHODS, gce_loss


# --------------------------------------------------------------------------- the generator
def test_colours_follow_the_authors_cumulative_rule():
    """Per class, in order: colour k takes the examples below round(n x cumsum(shares))[k];
    class 2 with 20 examples at own share 0.55: 0.05 each other colour -> one example each
    of colours 0 and 1, eleven of colour 2, one each of 3..9."""
    labels = np.full(20, 2)
    colours = lff.colour_assignment(labels, 0.55)
    assert colours.tolist() == [0, 1] + [2] * 11 + [3, 4, 5, 6, 7, 8, 9]


def test_ratios_palette_and_unbiased_test_on_real_mnist(mnist_root):
    mnist = lff.load_mnist(mnist_root)
    for ratio in lff.CONFLICT_RATIOS:
        colours = lff.colour_assignment(mnist["train_labels"], 1 - ratio)
        for c in range(10):
            own = colours[mnist["train_labels"] == c] == c
            assert abs((1 - own.mean()) - ratio) < 1.5 / own.size  # the share, to rounding
    data = lff.build_lff_cmnist({k: v[:2000] for k, v in mnist.items()}, 0.01, 4, 0)
    test = lff.colour_assignment(mnist["test_labels"][:2000], lff.TEST_OWN_SHARE)
    assert np.array_equal(data["test_color_index"], test)
    shares = np.bincount(test, minlength=10) / len(test)
    assert np.all(np.abs(shares - 0.1) < 0.02)  # every colour equally likely
    # the brightest stroke pixel carries its digit's palette colour, by intensity
    img, idx = data["train_image"].astype(np.float64), data["train_color_index"]
    gray = mnist["train_images"][:2000].astype(np.float64)
    bright = gray.reshape(2000, -1).argmax(1)
    colour = img.reshape(2000, -1, 3)[np.arange(2000), bright] / gray.reshape(2000, -1)[
        np.arange(2000), bright, None]
    assert np.abs(colour - lff.LFF_PALETTE[idx]).max() < 0.05  # severity 4: std 0.005
    assert (img.reshape(2000, -1, 3)[gray.reshape(2000, -1) == 0] == 0).all()  # black


def test_the_same_seed_builds_the_same_arrays_and_the_cache_is_checked(fake_mnist, tmp_path,
                                                                       monkeypatch):
    a = lff.build_lff_cmnist(fake_mnist, 0.05, 4, 7)
    b = lff.build_lff_cmnist(fake_mnist, 0.05, 4, 7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = lff.build_lff_cmnist(fake_mnist, 0.05, 4, 8)
    assert not np.array_equal(a["train_image"], c["train_image"])  # the noise is seeded
    monkeypatch.setattr(lff, "load_mnist", lambda root: fake_mnist)
    first = lff.load_or_build_lff(str(tmp_path), 0.05, 4, 7, str(tmp_path / "out"))
    cache = [p for p in os.listdir(tmp_path / "colored_mnist") if p.startswith("lff_cmnist")]
    assert len(cache) == 1 and all(np.array_equal(first[k], a[k]) for k in a)
    path = tmp_path / "colored_mnist" / cache[0]
    z = dict(np.load(path))
    z["train_label"] = z["train_label"][::-1].copy()  # changed since it was built
    np.savez(path, **z)
    again = lff.load_or_build_lff(str(tmp_path), 0.05, 4, 7, str(tmp_path / "out"))
    assert np.array_equal(again["train_label"], a["train_label"])  # rebuilt, not trusted


def test_the_validation_split_comes_from_the_training_images_only(fake_mnist, monkeypatch,
                                                                  tmp_path):
    """--val_fraction holds out training images (with their skew); the test images stay the
    test set's, untouched."""
    monkeypatch.setattr(lff, "load_mnist", lambda root: fake_mnist)
    _, args = cli.parse_args(["--config", "configs/lff_cmnist.yaml",
                              "--data_root_base", str(tmp_path), "--output_dir", str(tmp_path)])
    sets = build_datasets(args)
    train, val = split_validation(sets["train"], args.val_fraction, args.data_seed)
    assert len(train) + len(val) == 200 and len(val) == 20 and len(sets["test"]) == 100
    rows = lambda ds: {r.tobytes() for r in ds.inputs.numpy().reshape(len(ds), -1)}
    assert rows(val) <= rows(sets["train"]) and not rows(val) & rows(train)
    assert sets["test"].inputs.data_ptr() != val.inputs.data_ptr()
    batch = val.__getitems__([0, 1])
    assert set(batch) == {"x", "y", "bias", "bias_label", "index"}
    assert batch["index"].tolist() == [0, 1]  # positions within the validation set


# --------------------------------------------------------------------------- the methods
def tiny(method, **flags):
    """Two linear models on a batch of 4 (3 features, 2 classes, 2 colours)."""
    torch.manual_seed(0)
    _, args = cli.parse_args(["--method", method, "--dataset_name", "LfFColoredMNIST",
                              "--num_main_classes", "2", "--num_bias_classes", "2"])
    vars(args).update(flags)
    nets = nn.ModuleDict({k: nn.Linear(3, 2) if k.startswith("f") else nn.Identity()
                          for k in ("f", "g", "h", "f_b", "g_b")})
    x = torch.randn(4, 3)
    y, b = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 1, 0])
    train = type("Train", (), {"labels": torch.tensor([0, 1, 0, 1, 0, 1]),
                               "bias_index": np.array([0, 1, 1, 0, 0, 1]),
                               "__len__": lambda self: 6})()
    m = METHODS[method](nets, args, train_set=train)
    opts = {k: optim.SGD(v, lr=0.1) for k, v in m.param_groups().items()}
    return m, nets, opts, Batch({"x": x, "y": y, "bias_label": b, "index": torch.tensor(
        [0, 1, 2, 3])})


def test_gce_gradient_is_q_p_to_the_q_times_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    p = torch.softmax(logits, 1)[:, 0].detach()
    for rule, factor in (("authors", 0.7), ("paper", 1.0)):
        grad, = torch.autograd.grad(gce_loss(logits, y, 0.7, rule).sum(), logits)
        ce, = torch.autograd.grad(nn.functional.cross_entropy(logits, y, reduction="none")
                                  @ (factor * p ** 0.7), logits)
        assert torch.allclose(grad, ce)
    # the paper's form is the gradient of (1 - p^q) / q
    g, = torch.autograd.grad(((1 - torch.softmax(logits, 1)[:, 0] ** 0.7) / 0.7).sum(), logits)
    assert torch.allclose(torch.autograd.grad(gce_loss(logits, y, 0.7, "paper").sum(),
                                              logits)[0], g, atol=1e-6)


def test_lff_weights_by_hand():
    """First step: the averages take the losses whole; w = (l_b / max_b) / (l_b / max_b +
    l_d / max_d) per class; second step: 0.7 old + 0.3 new."""
    m, nets, opts, batch = tiny("lff")
    m._averages(torch.device("cpu"))
    lb, ld = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 2.0, 1.0, 1.0])
    w = m.weights(torch.stack([lb, ld]), batch["index"], batch["y"])
    # class 0: examples 0, 2 (max_b 3, max_d 2); class 1: examples 1, 3 (max_b 4, max_d 2)
    nb = torch.tensor([1 / 3, 2 / 4, 3 / 3, 4 / 4])
    nd = torch.tensor([2 / 2, 2 / 2, 1 / 2, 1 / 2])
    assert torch.allclose(w, nb / (nb + nd + 1e-8))
    m.weights(torch.tensor([[2.0], [2.0]]), torch.tensor([0]), torch.tensor([0]))
    assert torch.isclose(m.ema[0, 0], torch.tensor(0.7 * 1.0 + 0.3 * 2.0))
    stats = m.update(batch, opts)  # both models step on one backward pass
    assert {"loss_cls", "loss_biased", "lff_weight"} <= set(stats)
    assert all(p.grad is not None for k in ("f_b", "f") for p in nets[k].parameters())


def test_group_dro_weights_and_loss_by_hand():
    m, nets, opts, batch = tiny("groupdro", groupdro_eta=0.5)
    logits = nets["f"](batch["x"]).detach()
    losses = nn.functional.cross_entropy(logits, batch["y"], reduction="none")
    group = batch["y"] * 2 + batch["bias_label"]  # 4 groups, one example each
    q = torch.full((4,), 0.25) * torch.exp(0.5 * losses[torch.argsort(group)])
    q = q / q.sum()
    stats = m.update(batch, opts)
    assert torch.allclose(m.q, q) and torch.isclose(stats["loss_robust"],
                                                    losses[torch.argsort(group)] @ q)


def test_jtt_switches_to_a_fresh_model_with_the_error_set_upweighted():
    m, nets, opts, batch = tiny("jtt", jtt_first_epochs=1, jtt_up=5.0, jtt_sampling="weight")
    initial = {k: v.clone() for k, v in nets["f"].state_dict().items()}
    m.train_set = type("Set", (), {
        "__len__": lambda self: 4,
        "__getitems__": lambda self, s: Batch({k: v[s] for k, v in batch.items()})})()
    m.switch_at = 4  # T = one epoch of these 4 examples
    m.update(batch, opts)  # ERM: the first model moves
    assert not torch.equal(nets["f"].weight, initial["weight"]) and m.errors is None
    wrong = nets["f"](batch["x"]).argmax(1) != batch["y"]
    opts["main"].state["x"] = "momentum"
    before_second = {k: v.clone() for k, v in nets["f"].state_dict().items()}
    logits = nn.functional.linear(batch["x"], initial["weight"], initial["bias"])
    losses = nn.functional.cross_entropy(logits, batch["y"], reduction="none")
    stats = m.update(batch, opts)
    assert torch.equal(m.errors, wrong) and "x" not in opts["main"].state
    w = 1 + 4.0 * wrong.float()
    assert torch.isclose(stats["loss_cls"], losses.mean())  # from the initial weights again
    assert not torch.equal(nets["f"].weight, before_second["weight"])
    expect = initial["weight"] - 0.1 * torch.autograd.functional.jacobian(
        lambda wt: ((nn.functional.cross_entropy(nn.functional.linear(
            batch["x"], wt, initial["bias"]), batch["y"], reduction="none") * w).sum()
            / w.sum()), initial["weight"])
    assert torch.allclose(nets["f"].weight, expect, atol=1e-6)


# --------------------------------------------------------------------------- whole runs
@pytest.mark.parametrize("method", ["lff", "groupdro", "jtt"])
def test_each_new_method_trains_on_lff_cmnist_and_resumes_bit_exactly(method, mnist_root,
                                                                      tmp_path, monkeypatch,
                                                                      stop_after):
    """Two epochs straight against one epoch, a stop, and one resumed: every metric and every
    network (LfF's biased twin included) equal to the last bit."""
    common = ["--config", "configs/lff_cmnist.yaml", "--method", method, "--data_root_base",
              mnist_root, "--output_dir", str(tmp_path), "--device", "cpu",
              "--max_train_samples", "1000", "--max_test_samples", "300", "--batch_size", "64",
              "--lff_input_scale", "unit"] + (["--jtt_first_epochs", "1"] if method == "jtt"
                                               else [])
    cli.main(common + ["--epochs", "2", "--experiment_name", "straight"])
    stop_after(10)  # a budget's stop in epoch 1 (15 steps an epoch)
    with pytest.raises(SystemExit):
        cli.main(common + ["--epochs", "2", "--experiment_name", "pieces"])
    monkeypatch.undo()
    cli.main(common + ["--epochs", "2", "--experiment_name", "pieces", "--resume"])
    rows = {n: [json.loads(line) for line in open(tmp_path / n / "metrics.jsonl")]
            for n in ("straight", "pieces")}
    assert rows["straight"] == rows["pieces"] and len(rows["straight"]) == 2
    assert max(r["train_acc"] for r in rows["straight"]) > 0.3  # it learns
    nets = {n: torch.load(tmp_path / n / "checkpoints" / "last.pth", weights_only=True)
            for n in ("straight", "pieces")}
    for net, state in nets["straight"]["nets"].items():
        assert all(torch.equal(v, nets["pieces"]["nets"][net][k]) for k, v in state.items())
    if method == "lff":
        assert {"f_b", "g_b"} <= set(nets["straight"]["nets"])
    record = json.load(open(tmp_path / "straight" / "results.json"))
    assert "test_worst_group_acc" in record and "val_worst_group_acc" in record
    if method == "jtt":  # selection and the oracle look at the second model only (epoch 2)
        assert record["selected_epoch"] == record["oracle_epoch"] == 2


@pytest.mark.parametrize("method", ["lff", "groupdro", "jtt"])
def test_the_new_methods_train_on_lnls_colored_mnist(method, mnist_root, tmp_path):
    """The other direction (issue #33, 5): LNL's Colored MNIST and networks; GroupDRO's groups
    are the digit and the digit whose palette colour the image wears."""
    acc = cli.main(["--method", method, "--lr", "0.01", "--color_var", "0.020",
                    "--data_root_base", mnist_root, "--output_dir", str(tmp_path), "--device",
                    "cpu", "--epochs", "2", "--max_train_samples", "256", "--max_test_samples",
                    "200", "--experiment_name", method]
                   + (["--jtt_first_epochs", "1"] if method == "jtt" else []))
    record = json.load(open(tmp_path / method / "results.json"))
    assert 0.0 <= acc <= 1.0 and record["method"] == method
    assert 0.0 <= record["test_worst_group_acc"] <= record["test_acc"]


@pytest.mark.parametrize("method", ["lnl", "blindeye"])
def test_lnl_and_blindeye_train_on_lff_cmnist_their_bias_head_reading_the_colour(
        method, mnist_root, tmp_path):
    """LNL meets LfF on LfF's ground (issue #33, 4): h reads the image-level colour label (one of
    ten) from f's features, so it learns it well above chance while g learns the digit."""
    cli.main(["--config", "configs/lff_cmnist.yaml", "--method", method, "--data_root_base",
              mnist_root, "--output_dir", str(tmp_path), "--device", "cpu",
              "--max_train_samples", "2000", "--max_test_samples", "300", "--batch_size", "64",
              "--epochs", "8", "--experiment_name", method])
    rows = [json.loads(line) for line in open(tmp_path / method / "metrics.jsonl")]
    assert rows[-1]["bias_acc"] > 0.3  # chance: 0.1
    assert max(r["train_acc"] for r in rows) > 0.3  # BlindEye's confusion term makes it wander
