"""The bias left in f: a frozen-feature probe (`python main.py --mode probe --experiment_name RUN`).

LNL's claim (Kim et al., CVPR 2019, §3) is stronger than an accuracy: after training, f's
features hold no information about the bias, so that no h can read it from them. The probe
tests the claim on a finished run: it freezes the run's f (eval mode: BatchNorm statistics
fixed too), trains a freshly initialised bias head of the run's h architecture on the training
set's bias target with the LNL bias loss, and reports that head's bias accuracy on the test
set, beside the accuracy of always predicting the most frequent bias class. A baseline's f
should let the probe read the colour easily; LNL's should not.

The probe recipe (PROBE_EPOCHS, PROBE_LR; SGD with momentum 0.9 and weight decay 5e-4, as the
reference trains h) applies unless --epochs or --lr is given; the record states the recipe.
"""
import os

import torch
from torch import optim

import metrics
from methods import IGNORE_INDEX, as_heads, bias_cross_entropy
from safe_files import PROBE, small_json, write_json
from utils import log, progress

PROBE_EPOCHS = 5
PROBE_LR = 0.01


def probe_path(folder):
    return os.path.join(folder, PROBE)


@torch.no_grad()
def features(f, x):
    return f(x)


def train_head(f, h, loader, device, epochs, lr):
    """h learns the bias target from the frozen f's features (the LNL bias loss)."""
    opt = optim.SGD(h.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    f.eval()
    for epoch in range(epochs):
        h.train()
        loader.sampler.set_epoch(epoch)
        loader.sampler.set_start(0)
        total, count = 0.0, 0
        for batch in progress(loader, desc=f"probe epoch {epoch + 1}/{epochs}"):
            x, b = batch["x"].to(device), batch["bias"].to(device)
            loss = bias_cross_entropy(h(features(f, x)), b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(x), count + len(x)
        log(f"probe epoch {epoch + 1}/{epochs} loss_bias={total / max(count, 1):.4f}")


@torch.no_grad()
def bias_scores(f, h, loader, device):
    """(accuracy of h on the non-ignored bias positions, accuracy of always predicting each
    head's most frequent class)."""
    f.eval()
    h.eval()
    hits = valid_total = 0
    counts = None  # per head, per class: how often the target takes it
    for batch in loader:
        x, target = batch["x"].to(device), as_heads(batch["bias"].to(device).long())
        logits = h(features(f, x))
        valid = target != IGNORE_INDEX
        hits += int(((logits.argmax(dim=2) == target) & valid).sum())
        valid_total += int(valid.sum())
        k = logits.shape[2]
        per_head = torch.stack([torch.bincount(t[v], minlength=k)[:k] for t, v in
                                zip(target.transpose(0, 1), valid.transpose(0, 1))])
        counts = per_head if counts is None else counts + per_head
    if not valid_total:
        return float("nan"), float("nan")
    return hits / valid_total, float(counts.max(dim=1).values.sum()) / valid_total


def run_probe(args, f, h, train_loader, test_loader, device, checkpoint, folder):
    """Train the probe, write <run>/probe.json and return its record."""
    torch.manual_seed(args.seed)
    f, h = f.to(device), h.to(device)
    for p in f.parameters():
        p.requires_grad_(False)
    train_head(f, h, train_loader, device, args.epochs, args.lr)
    acc, chance = bias_scores(f, h, test_loader, device)
    record = {metrics.PROBE: acc, "chance": chance,
              "recipe": {"epochs": args.epochs, "lr": args.lr, "optimizer": "sgd",
                         "momentum": 0.9, "weight_decay": 5e-4, "seed": args.seed,
                         "head": args.h_network_name, "loss": "LNL bias cross-entropy",
                         "f": "frozen, eval mode"},
              "checkpoint": checkpoint, "train_examples": len(train_loader.dataset),
              "test_examples": len(test_loader.dataset)}
    root = getattr(args, "output_dir", None) or os.path.dirname(os.path.abspath(folder))
    write_json(probe_path(folder), record, root)
    log(f"{metrics.PROBE}={acc:.4f} (chance {chance:.4f}; f of {checkpoint['path']}, epoch "
        f"{checkpoint['epoch']}) -> {probe_path(folder)}")
    return record


def is_probe_record(path):
    """Whether path is a probe.json this tool wrote (never replace another file)."""
    data = small_json(path, 1 << 16)
    return data is not None and metrics.PROBE in data
