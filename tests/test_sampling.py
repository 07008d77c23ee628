"""A method owns its sampling (issue #41, 1): GroupDRO's group-balanced draw with replacement,
JTT's upsampled error set, each an epoch the sampler serves in an order fixed by (seed, epoch,
the method's state), so a run stopped mid-epoch resumes bit-exactly."""
import json

import numpy as np
import pytest
import torch

import main as cli
from data_handler import EpochSampler
from methods import METHODS


def fake_train(labels, bias):
    """What a method reads of its training set: labels, the bias label, a length."""
    return type("Train", (), {"labels": torch.as_tensor(labels),
                              "bias_index": np.asarray(bias),
                              "__len__": lambda self: len(labels)})()


def method(name, train, *flags):
    _, args = cli.parse_args(["--method", name, "--dataset_name", "LfFColoredMNIST", *flags])
    nets = torch.nn.ModuleDict({k: torch.nn.Linear(2, 2) for k in ("f", "g", "h")})
    return METHODS[name](nets, args, train_set=train)


def epoch_of(sampler, epoch):
    sampler.set_epoch(epoch)
    sampler.set_start(0)
    return list(sampler)


def test_group_dro_draws_every_group_equally_often_with_replacement():
    """Groups of 900, 90, 9 and 1 examples: each of the epoch's 1000 draws picks a group with
    probability 1/4, so every group's count lies within 5 binomial standard deviations of 250
    (a plain shuffle serves the 900-group 900 times). The epoch keeps the set's size."""
    sizes = (900, 90, 9, 1)
    labels = np.repeat([0, 0, 1, 1], sizes)
    bias = np.repeat([0, 1, 0, 1], sizes)
    m = method("groupdro", fake_train(labels, bias))
    sampler = EpochSampler(len(labels), seed=3)
    sampler.set_sampling(m.sampling())
    for epoch in range(3):
        order = epoch_of(sampler, epoch)
        assert len(order) == len(labels) == len(sampler)
        groups = labels[order] * 2 + bias[order]
        counts = np.bincount(groups, minlength=4)
        sd = np.sqrt(1000 * 0.25 * 0.75)
        assert np.all(np.abs(counts - 250) < 5 * sd), counts
        assert len(set(order)) < len(order)  # with replacement: the single example repeats
    off = method("groupdro", fake_train(labels, bias), "--groupdro_balanced", "0")
    assert off.sampling() is None


def test_a_jtt_error_set_example_is_served_one_plus_lambda_up_times_an_epoch():
    """Their code joins the training set with lambda_up copies of the error set."""
    labels = np.arange(20) % 2
    m = method("jtt", fake_train(labels, labels), "--jtt_up", "6")
    assert m.sampling() is None  # the first model: a plain shuffle
    m.errors = torch.zeros(20, dtype=torch.bool)
    m.errors[[3, 7, 11]] = True
    sampler = EpochSampler(20, seed=0)
    sampler.set_sampling(m.sampling())
    order = epoch_of(sampler, 0)
    counts = np.bincount(order, minlength=20)
    assert counts[[3, 7, 11]].tolist() == [7, 7, 7] and set(np.delete(counts, [3, 7, 11])) == {1}
    assert len(sampler) == 20 + 3 * 6
    weighted = method("jtt", fake_train(labels, labels), "--jtt_sampling", "weight")
    weighted.errors = m.errors
    assert weighted.sampling() is None  # weighted in the loss instead


def test_an_upsampled_lambda_must_be_whole(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--method", "jtt", "--jtt_up", "2.5"])
    assert "--jtt_up 2.5" in capsys.readouterr().err
    cli.parse_args(["--method", "jtt", "--jtt_up", "2.5", "--jtt_sampling", "weight"])


def test_a_drawn_epoch_resumed_from_its_middle_serves_the_rest_of_the_same_order():
    sampler = EpochSampler(50, seed=1)
    sampler.set_sampling({"weights": torch.arange(1, 51, dtype=torch.float64)})
    whole = epoch_of(sampler, 4)
    sampler.set_start(17)
    assert list(sampler) == whole[17:] and len(sampler) == 33
    assert epoch_of(sampler, 5) != whole  # another epoch, another draw


@pytest.mark.parametrize("name", ["groupdro", "jtt"])
def test_a_run_stopped_mid_epoch_in_its_drawn_epochs_resumes_bit_exactly(
        name, mnist_root, tmp_path, monkeypatch, stop_after):
    """GroupDRO draws every epoch; JTT upsamples from epoch 2 (T = 1), an epoch longer than the
    training set. Stopped in epoch 2's middle and resumed, each ends with the metrics and
    weights of the run never stopped."""
    common = ["--config", "configs/lff_cmnist.yaml", "--method", name, "--data_root_base",
              mnist_root, "--output_dir", str(tmp_path), "--device", "cpu",
              "--max_train_samples", "600", "--max_test_samples", "200", "--batch_size", "32",
              "--epochs", "3"] + (["--jtt_first_epochs", "1", "--jtt_up", "4"] if name == "jtt"
                                  else [])
    torch.set_num_threads(1)
    cli.main(common + ["--experiment_name", "straight"])
    steps = 17 + 5  # epoch 1: 540 training images in batches of 32, then 5 steps into epoch 2
    stop_after(steps)
    with pytest.raises(SystemExit):
        cli.main(common + ["--experiment_name", "pieces"])
    monkeypatch.undo()
    ckpt = torch.load(tmp_path / "pieces" / "checkpoints" / "last.pth", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["step_in_epoch"] == 5
    cli.main(common + ["--experiment_name", "pieces", "--resume"])
    rows = {n: [json.loads(line) for line in open(tmp_path / n / "metrics.jsonl")]
            for n in ("straight", "pieces")}
    assert rows["straight"] == rows["pieces"]
    end = {n: torch.load(tmp_path / n / "checkpoints" / "last.pth", weights_only=False)
           for n in ("straight", "pieces")}
    for net, state in end["straight"]["nets"].items():
        assert all(torch.equal(v, end["pieces"]["nets"][net][k]) for k, v in state.items())
    if name == "jtt":
        share = rows["straight"][-1]["error_set_share"]
        assert 0 < share < 1  # an error set was drawn from


def test_a_sweep_member_with_its_own_draw_equals_the_run_alone(mnist_root, tmp_path):
    """Two GroupDRO runs trained together in one process (sweep.py), each drawing its own
    group-balanced epochs, end with the metrics of each run alone."""
    torch.set_num_threads(1)
    common = ["--config", "configs/lff_cmnist.yaml", "--method", "groupdro", "--data_root_base",
              mnist_root, "--device", "cpu", "--max_train_samples", "600",
              "--max_test_samples", "200", "--batch_size", "32", "--epochs", "2"]
    cli.main(common + ["--output_dir", str(tmp_path / "sweep"), "--seed", "0", "1",
                       "--experiment_name", "s"])
    for seed in ("0", "1"):
        cli.main(common + ["--output_dir", str(tmp_path / "alone"), "--seed", seed,
                           "--experiment_name", f"seed{seed}"])
        folder = next(p for p in (tmp_path / "sweep" / "s").iterdir() if p.name.endswith(seed))
        rows = [open(d / "metrics.jsonl").read() for d in (folder, tmp_path / "alone" /
                                                           f"seed{seed}")]
        assert rows[0] == rows[1]


@pytest.mark.parametrize("schedule, second", [("restart", [1e-3, 5e-4]),
                                              ("continue", [2.5e-4, 1.25e-4])])
def test_jtts_second_model_starts_its_lr_schedule_again_at_t(schedule, second, mnist_root,
                                                              tmp_path):
    """The authors train JTT's second model as a fresh run, so its lr decays from T as the
    first model's did from 0 (lr halved every epoch here, T = 2 of 4); --jtt_schedule continue
    keeps the first model's decayed lr."""
    torch.set_num_threads(1)
    cli.main(["--config", "configs/lff_cmnist.yaml", "--method", "jtt", "--data_root_base",
              mnist_root, "--output_dir", str(tmp_path), "--device", "cpu",
              "--max_train_samples", "300", "--max_test_samples", "100", "--epochs", "4",
              "--lr_decay_rate", "0.5", "--lr_decay_period", "1", "--jtt_first_epochs", "2",
              "--jtt_schedule", schedule, "--experiment_name", schedule])
    rows = [json.loads(line) for line in open(tmp_path / schedule / "metrics.jsonl")]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 5e-4] + second)
