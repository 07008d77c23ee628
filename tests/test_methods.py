import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn, optim

from data_handler import IGNORE_INDEX
from methods import METHODS, bias_cross_entropy, negative_entropy
from network import build_network


def make(method):
    torch.manual_seed(0)
    nets = nn.ModuleDict({"f": build_network("cmnist_f"), "g": build_network("cmnist_g"),
                          "h": build_network("cmnist_h")})
    args = SimpleNamespace(lambda_entropy=0.01, mu_grl=0.1)
    m = METHODS[method](nets, args)
    opts = {k: optim.SGD(v, lr=0.01, momentum=0.9, weight_decay=5e-4)
            for k, v in m.param_groups().items()}
    x = torch.randn(8, 3, 28, 28)
    y = torch.arange(8) % 10
    b = torch.randint(0, 8, (8, 3, 14, 14))
    b[:, :, :4] = IGNORE_INDEX
    return nets, m, opts, (x, y, b)


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(module, before):
    return any(not torch.equal(p, q) for p, q in zip(module.parameters(), before))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_update_changes_parameters_and_returns_finite_floats(method):
    nets, m, opts, batch = make(method)
    before = {k: snapshot(v) for k, v in nets.items()}
    stats = m.update(batch, opts)
    assert stats and all(isinstance(v, float) and math.isfinite(v) for v in stats.values())
    assert changed(nets["f"], before["f"]) and changed(nets["g"], before["g"])
    assert m.predict(batch[0]).shape == (8, 10)


def test_baseline_leaves_the_bias_head_alone():
    nets, m, opts, batch = make("baseline")
    before = snapshot(nets["h"])
    m.update(batch, opts)
    assert not changed(nets["h"], before)


def test_lnl_trains_the_bias_head_and_reports_its_losses():
    nets, m, opts, batch = make("lnl")
    before = snapshot(nets["h"])
    stats = m.update(batch, opts)
    assert changed(nets["h"], before)
    assert {"loss_cls", "entropy_term", "loss_bias", "bias_acc", "train_acc"} <= set(stats)
    assert -math.log(8) - 1e-5 <= stats["entropy_term"] <= 0


def test_lnl_adversarial_step_reverses_the_gradient_into_f():
    """In the second update f's gradient is -mu times the one h's loss would give it."""
    nets, m, opts, (x, y, b) = make("lnl")
    from network import grad_reverse
    f, h = nets["f"], nets["h"]
    grads = []
    for scale in (None, 0.1):
        f.zero_grad(), h.zero_grad()
        feat = f(x)
        feat = feat if scale is None else grad_reverse(feat, scale)
        bias_cross_entropy(h(feat), b).backward()
        grads.append(f[1].weight.grad.clone())
    assert torch.allclose(grads[1], -0.1 * grads[0], atol=1e-6)


def test_negative_entropy_of_uniform_and_confident_predictions():
    uniform = torch.zeros(2, 3, 8, 4, 4)
    assert abs(negative_entropy(uniform).item() + math.log(8)) < 1e-6
    confident = torch.full((2, 3, 8, 4, 4), -1e4)
    confident[:, :, 0] = 1e4
    assert abs(negative_entropy(confident).item()) < 1e-6


def test_bias_cross_entropy_ignores_background_and_sums_heads():
    logits = torch.zeros(1, 3, 8, 2, 2)
    logits[:, :, 5] = 10.0  # confident in bin 5 everywhere
    target = torch.full((1, 3, 2, 2), 5)
    good = bias_cross_entropy(logits, target).item()
    target_bg = target.clone()
    target_bg[0, :, 0, 0] = IGNORE_INDEX
    logits_bad = logits.clone()
    logits_bad[0, :, :, 0, 0] = 0  # wrong-ish only where the target is ignored
    assert abs(bias_cross_entropy(logits_bad, target_bg).item() - good) < 1e-6
    one_head = torch.nn.functional.cross_entropy(torch.zeros(1, 8, 2, 2),
                                                 torch.full((1, 2, 2), 5)).item()
    assert abs(bias_cross_entropy(torch.zeros(1, 3, 8, 2, 2), target).item()
               - 3 * one_head) < 1e-5
