"""A method builds its own networks (issue #41, 1): a toy method whose networks have shapes of
their own (a feature vector of 7 read by two heads, one over the features doubled) is one
class registered with methods.register plus its builders registered with network.register;
main.py trains, checkpoints, resumes and tests it with nothing else changed, and its pre-run
check goes through the method's own forward pass."""
import json

import pytest
import torch
from torch import nn

import main as cli
import methods
import network


class Doubled(nn.Module):
    def forward(self, z):
        return torch.cat([z, z], dim=1)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(network.NETWORKS, "toy_f", lambda in_features=1, **_: nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, 7), nn.ReLU()))
    monkeypatch.setitem(network.NETWORKS, "toy_g", lambda num_main_classes=10, **_: nn.Sequential(
        Doubled(), nn.Linear(14, num_main_classes)))

    class Toy(methods.Method):
        """f (7 features) with a label head g over [f(x), f(x)]; plain cross-entropy."""

        @classmethod
        def build_networks(cls, args, kw):
            return nn.ModuleDict({"f": network.build_network("toy_f", **kw),
                                  "g": network.build_network("toy_g", **kw)})

        def update(self, batch, optimizers):
            methods.zero_all(optimizers)
            logits = self.predict(batch["x"])
            loss = methods.task_loss(logits, batch["y"])
            loss.backward()
            optimizers["main"].step()
            return {"loss_cls": loss.detach(),
                    "train_acc": methods.task_accuracy(logits, batch["y"])}

    monkeypatch.setitem(methods.METHODS, "toy", Toy)
    return Toy


def test_a_method_with_networks_of_its_own_shape_trains_resumes_and_tests(toy, mnist_root,
                                                                           tmp_path):
    common = ["--config", "configs/lff_cmnist.yaml", "--method", "toy", "--data_root_base",
              mnist_root, "--output_dir", str(tmp_path), "--device", "cpu",
              "--max_train_samples", "600", "--max_test_samples", "200", "--batch_size", "32",
              "--lff_input_scale", "unit"]
    cli.main(common + ["--epochs", "2", "--experiment_name", "straight"])
    cli.main(common + ["--epochs", "1", "--experiment_name", "pieces"])
    cli.main(common + ["--epochs", "2", "--experiment_name", "pieces", "--resume"])
    rows = {n: [json.loads(line) for line in open(tmp_path / n / "metrics.jsonl")]
            for n in ("straight", "pieces")}
    assert rows["straight"] == rows["pieces"] and rows["straight"][-1]["train_acc"] > 0.3
    ckpt = torch.load(tmp_path / "straight" / "checkpoints" / "last.pth", weights_only=True)
    assert set(ckpt["nets"]) == {"f", "g"}
    assert ckpt["nets"]["g"]["1.weight"].shape == (10, 14)
    acc = cli.main(["--mode", "test", "--config", "configs/lff_cmnist.yaml", "--method", "toy",
                    "--output_dir", str(tmp_path), "--data_root_base", mnist_root,
                    "--max_test_samples", "200", "--lff_input_scale", "unit",
                    "--experiment_name", "straight", "--device", "cpu"])
    assert acc == json.load(open(tmp_path / "straight" / "results.json"))["test_acc"]


def test_the_pre_run_check_goes_through_the_methods_forward(toy, mnist_root, tmp_path,
                                                             monkeypatch, capsys):
    """A head that cannot read the method's features fails before any folder is written."""
    monkeypatch.setitem(network.NETWORKS, "toy_g", lambda num_main_classes=10, **_: nn.Sequential(
        Doubled(), nn.Linear(15, num_main_classes)))
    with pytest.raises(SystemExit) as exc:
        cli.main(["--config", "configs/lff_cmnist.yaml", "--method", "toy", "--data_root_base",
                  mnist_root, "--output_dir", str(tmp_path), "--device", "cpu",
                  "--max_train_samples", "100", "--max_test_samples", "50",
                  "--experiment_name", "bad"])
    assert exc.value.code == 2
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
