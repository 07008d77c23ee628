"""DFA (DisEnt; Lee et al., NeurIPS 2021) as kakaoenterprise/Learning-Debiased-Disentangled's
train_ours computes it: one step written out by hand on a tiny batch, before and after the
feature swap; its lr schedule; a short run on LfF's Colored MNIST that learns and resumes."""
import json

import torch
import torch.nn.functional as F
from torch import nn, optim

import main as cli
from data_handler import Batch
from methods import METHODS


def tiny(**flags):
    """Encoders 3 -> 2 (linear), heads 4 -> 2 over the concatenation; 4 examples of 6."""
    torch.manual_seed(0)
    _, args = cli.parse_args(["--config", "configs/dfa_cmnist.yaml", "--num_main_classes", "2",
                              "--num_bias_classes", "2"])
    vars(args).update(flags)
    nets = nn.ModuleDict({"f": nn.Linear(3, 2), "f_b": nn.Linear(3, 2), "g": nn.Linear(4, 2),
                          "g_b": nn.Linear(4, 2), "h": nn.Identity()})
    train = type("Train", (), {"labels": torch.tensor([0, 1, 0, 1, 0, 1]),
                               "__len__": lambda self: 6})()
    m = METHODS["dfa"](nets, args, train_set=train)
    opts = {k: optim.SGD(v, lr=args.lr) for k, v in m.param_groups().items()}
    batch = Batch({"x": torch.randn(4, 3), "y": torch.tensor([0, 1, 0, 1]),
                   "index": torch.tensor([0, 1, 2, 3])})
    return m, nets, opts, batch


def by_hand(nets, batch, perm=None, q=0.7):
    """The loss of their Eq. 4 on the first step (the averages take each loss whole), and the
    weights w, computed from the networks with plain torch ops."""
    x, y = batch["x"], batch["y"]
    zi, zb = nets["f"](x), nets["f_b"](x)
    li = nets["g"](torch.cat([zi, zb.detach()], 1))
    lb = nets["g_b"](torch.cat([zi.detach(), zb], 1))
    ce = lambda logits, t: F.cross_entropy(logits, t, reduction="none")
    gce = lambda logits, t: ce(logits, t) * q * torch.softmax(logits, 1).gather(
        1, t[:, None])[:, 0].detach() ** q
    ema_i, ema_b = ce(li, y).detach(), ce(lb, y).detach()  # first values taken whole
    # per class, divided by the largest average of the class (only these 4 examples have one)
    norm = lambda e: e / torch.stack([e[y == c].max() for c in y])
    w = norm(ema_b) / (norm(ema_b) + norm(ema_i) + 1e-8)
    loss = (ce(li, y) * w).mean() + 10 * gce(lb, y).mean()
    if perm is not None:
        si = nets["g"](torch.cat([zi, zb[perm].detach()], 1))
        sb = nets["g_b"](torch.cat([zi.detach(), zb[perm]], 1))
        loss = loss + 1.0 * ((ce(si, y) * w).mean() + 10 * gce(sb, y[perm]).mean())
    return loss, w


def stepped(nets, loss, lr):
    grads = torch.autograd.grad(loss, list(nets.parameters()), allow_unused=True)
    return [p.detach() - lr * (g if g is not None else 0) for p, g in zip(nets.parameters(),
                                                                          grads)]


def test_a_step_before_the_swap_by_hand():
    m, nets, opts, batch = tiny()
    loss, w = by_hand(nets, batch)
    expect = stepped(nets, loss, 0.01)
    stats = m.update(batch, opts)
    assert torch.isclose(stats["lff_weight"], w.mean())
    assert float(stats["swapped"]) == 0.0 and m.step == 1
    for p, e in zip(nets.parameters(), expect):
        assert torch.allclose(p, e, atol=1e-7)


def test_a_step_after_the_swap_by_hand_permutes_the_bias_features_and_their_labels():
    m, nets, opts, batch = tiny(dfa_swap_after=0)
    m.step = 1  # their `step > curr_step`: the second step swaps
    torch.manual_seed(5)
    perm = torch.randperm(4)
    assert not torch.equal(perm, torch.arange(4))
    loss, _ = by_hand(nets, batch, perm)
    expect = stepped(nets, loss, 0.01)
    torch.manual_seed(5)
    stats = m.update(batch, opts)
    assert float(stats["swapped"]) == 1.0
    for p, e in zip(nets.parameters(), expect):
        assert torch.allclose(p, e, atol=1e-7)


def test_each_encoder_learns_only_through_its_own_head():
    """The other half is detached: the intrinsic encoder's gradient is the CE terms', the bias
    encoder's the GCE terms'."""
    m, nets, opts, batch = tiny(dfa_lambda_dis=0.0)
    m.update(batch, opts)
    assert all(float(p.grad.abs().sum()) == 0 for p in nets["f_b"].parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in nets["f"].parameters())


def test_the_lr_halves_every_10k_steps_from_step_20k():
    m, *_ = tiny()
    lrs = {}
    for step in (0, 10000, 19999, 20000, 29999, 30000, 40000, 49999):
        m.step = step
        lrs[step] = m.step_lr()
    assert lrs == {0: 0.01, 10000: 0.01, 19999: 0.01, 20000: 0.005, 29999: 0.005,
                   30000: 0.0025, 40000: 0.00125, 49999: 0.00125}


def test_dfa_trains_on_lff_cmnist_predicting_through_both_encoders_and_resumes(mnist_root,
                                                                             tmp_path):
    common = ["--config", "configs/dfa_cmnist.yaml", "--data_root_base", mnist_root,
              "--output_dir", str(tmp_path), "--device", "cpu", "--max_train_samples", "1000",
              "--max_test_samples", "300", "--batch_size", "64", "--dfa_swap_after", "10",
              "--lff_input_scale", "unit", "--lr", "0.001"]
    torch.set_num_threads(1)
    cli.main(common + ["--epochs", "3", "--experiment_name", "straight"])
    cli.main(common + ["--epochs", "1", "--experiment_name", "pieces"])
    cli.main(common + ["--epochs", "3", "--experiment_name", "pieces", "--resume"])
    rows = {n: [json.loads(line) for line in open(tmp_path / n / "metrics.jsonl")]
            for n in ("straight", "pieces")}
    assert rows["straight"] == rows["pieces"]
    assert rows["straight"][-1]["swapped"] == 1.0 and rows["straight"][0]["swapped"] < 1
    assert rows["straight"][-1]["train_acc"] > 0.3  # it learns (chance 0.1)
    ckpt = torch.load(tmp_path / "straight" / "checkpoints" / "last.pth", weights_only=True)
    assert ckpt["method"]["step"] == 3 * (900 // 64)  # the last partial batch dropped
