"""probe.py on deterministic data: a head reads the bias almost perfectly from features that
carry it, and no better than chance from features that do not."""
import argparse

import torch
from torch import nn

import probe
from data_handler import ArrayDataset, make_loader

HEADS, K, SIDE = 3, 8, 4


class Head(nn.Module):
    """A 1x1 convolution to HEADS x K logits per position (N, heads, K, H, W)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(HEADS * K, HEADS * K, 1)

    def forward(self, feat):
        return self.conv(feat).view(len(feat), HEADS, K, SIDE, SIDE)


def one_hot_world(n, seed):
    """Inputs that are the one-hot code of their bias target b (N, heads, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    b = torch.randint(0, K, (n, HEADS, SIDE, SIDE), generator=gen)
    x = nn.functional.one_hot(b, K).permute(0, 1, 4, 2, 3).reshape(n, HEADS * K, SIDE, SIDE)
    return ArrayDataset(x.float(), torch.zeros(n, dtype=torch.long), b, torch.zeros(n))


def probe_with(f, tmp_path):
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    train = make_loader(one_hot_world(512, 0), 64, True, 0, 0, cpu)
    test = make_loader(one_hot_world(256, 1), 256, False, 0, 0, cpu)
    args = argparse.Namespace(seed=0, epochs=30, lr=0.5, h_network_name="test head")
    checkpoint = {"path": "none", "epoch": 0, "sha256": ""}
    return probe.run_probe(args, f, Head(), train, test, cpu, checkpoint, str(tmp_path))


class Blind(nn.Module):
    """Features that carry nothing of the bias."""

    def forward(self, x):
        return torch.zeros_like(x)


def test_a_probe_reads_a_bias_the_features_carry_and_not_one_they_do_not(tmp_path):
    reads = probe_with(nn.Identity(), tmp_path / "reads")
    assert reads["probe_bias_acc"] > 0.95
    blind = probe_with(Blind(), tmp_path / "blind")
    assert blind["probe_bias_acc"] < blind["chance"] + 0.05 and blind["chance"] < 0.2
    assert probe.is_probe_record(str(tmp_path / "blind" / "probe.json"))
