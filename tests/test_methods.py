import itertools
import math
import types

import pytest
import torch
from torch import nn, optim

import main as cli
from data_handler import IGNORE_INDEX, Batch
from methods import METHODS, bias_cross_entropy, confusion_loss, negative_entropy
from network import build_network

ENV_METHODS = ("irm", "andmask", "genmask")


class Sized:
    """A stand-in training set: its attributes, and a length."""

    def __init__(self, attrs, n):
        self.__dict__.update(vars(attrs))
        self.n = n

    def __len__(self):
        return self.n


def make(method, **overrides):
    """Reference nets, the method with the CLI's default arguments, SGD, and a tiny batch whose
    b is LNL's per-pixel target, or two environments for the environment methods."""
    torch.manual_seed(0)
    nets = nn.ModuleDict({"f": build_network("cmnist_f"), "g": build_network("cmnist_g"),
                          "h": build_network("cmnist_h")})
    for twin in METHODS[method].twins:  # LfF's biased copy
        nets[twin] = build_network(f"cmnist_{twin[0]}")
    if method == "dfa":  # heads over both encoders' features: DFA's own networks
        nets.update({k: build_network(f"dfa_mlp_{k[0]}") for k in ("f", "g", "f_b", "g_b")})
    _, args = cli.parse_args([])
    vars(args).update(overrides)
    train = types.SimpleNamespace(labels=torch.arange(8) % 10,
                                  bias_index=((torch.arange(8) + 1) % 10).numpy())
    m = METHODS[method](nets, args, train_set=Sized(train, 8))
    opts = {k: optim.SGD(v, lr=0.01, momentum=0.9, weight_decay=5e-4)
            for k, v in m.param_groups().items()}
    x = torch.randn(8, 3, 28, 28)
    y = torch.arange(8) % 10
    batch = Batch({"x": x, "y": y, "bias_label": (torch.arange(8) + 1) % 10,
                   "index": torch.arange(8)})
    if method in ENV_METHODS:
        batch["env"] = torch.arange(8) % 2
    else:
        b = torch.randint(0, 8, (8, 3, 14, 14))
        b[:, :, :4] = IGNORE_INDEX
        batch["bias"] = b
    return nets, m, opts, batch


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(module, before):
    return any(not torch.equal(p, q) for p, q in zip(module.parameters(), before))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_update_changes_parameters_and_returns_finite_scalars(method):
    # tau = 0.5 so that AND-mask keeps some entries with only two environments
    nets, m, opts, batch = make(method, andmask_tau=0.5)
    before = {k: snapshot(v) for k, v in nets.items()}
    stats = m.update(batch, opts)
    # metrics stay 0-dim tensors on the device: a step never waits for the host
    assert stats and all(torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad
                         and math.isfinite(float(v)) for v in stats.values())
    assert changed(nets["f"], before["f"]) and changed(nets["g"], before["g"])
    assert m.predict(batch["x"]).shape == (8, 10)


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
    nets, m, opts, batch = make("lnl")
    x, b = batch["x"], batch["bias"]
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


# ----------------------------------------------------------------------------- IRM
from methods import and_mask_combine, gen_mask_weights, irm_penalty


def test_irm_penalty_is_zero_for_a_per_environment_optimal_model_and_positive_otherwise():
    torch.manual_seed(0)
    y = (torch.rand(400) < 0.3).long()
    rate = y.float().mean()
    optimal = torch.full((400, 1), torch.logit(rate).item())
    assert irm_penalty(optimal, y).item() < 1e-10
    # the same constant model is not optimal in an environment with another label rate
    y2 = (torch.rand(400) < 0.7).long()
    assert irm_penalty(optimal, y2).item() > 1e-3
    # nor is an over-confident model in the first environment
    assert irm_penalty(optimal * 3, y).item() > 1e-3


@pytest.mark.parametrize("classes", [1, 4])
def test_irm_penalty_closed_form_matches_double_backpropagation(classes):
    from methods import task_loss
    torch.manual_seed(1)
    w = torch.randn(5, classes, requires_grad=True)
    x = torch.randn(64, 5)
    y = torch.randint(0, max(classes, 2), (64,))
    scale = torch.ones((), requires_grad=True)
    grad, = torch.autograd.grad(task_loss((x @ w) * scale, y), [scale], create_graph=True)
    reference = grad.pow(2)
    ours = irm_penalty(x @ w, y)
    assert torch.allclose(ours, reference, atol=1e-7)
    # and its gradient with respect to the model, which is what training uses
    g_ref, = torch.autograd.grad(reference, [w])
    g_ours, = torch.autograd.grad(ours, [w])
    assert torch.allclose(g_ours, g_ref, atol=1e-6)


def test_irm_anneals_the_penalty_weight_and_counts_steps():
    nets, m, opts, batch = make("irm", irm_anneal_iters=2, irm_penalty_weight=1000.0)
    weights = [float(m.update(batch, opts)["penalty_weight"]) for _ in range(3)]
    assert weights == [1.0, 1.0, 1000.0]
    assert m.state_dict() == {"step": 3}
    m.load_state_dict({"step": 0})
    assert float(m.update(batch, opts)["penalty_weight"]) == 1.0


# ----------------------------------------------------------------------------- AND-mask
def test_and_mask_with_tau_one_zeroes_exactly_the_disagreeing_coordinates():
    g = torch.tensor([[1.0, -2.0, 3.0, 0.5, -1.0],
                      [2.0, -1.0, -3.0, 0.5, 1.0],
                      [3.0, -4.0, 1.0, 0.5, -1.0]])
    out = and_mask_combine(g, tau=1.0, variant="and")
    expected = torch.tensor([2.0, -7.0 / 3, 0.0, 0.5, 0.0])
    assert torch.allclose(out, expected)
    # tau = 0 keeps everything: plain averaged gradient
    assert torch.allclose(and_mask_combine(g, tau=0.0), g.mean(0))
    # tau = 1/3: coordinates where 2 of 3 agree (|mean sign| = 1/3) are kept too
    assert torch.allclose(and_mask_combine(g, tau=1 / 3), g.mean(0))
    # rescale divides by the kept fraction (3 of 5)
    assert torch.allclose(and_mask_combine(g, 1.0, "and", rescale=True), expected / 0.6)


def test_geometric_mean_variant_matches_a_hand_computation():
    g = torch.tensor([[1.0, -2.0, 4.0],
                      [4.0, -8.0, -1.0]])
    out = and_mask_combine(g, tau=1.0, variant="geom")
    assert torch.allclose(out, torch.tensor([2.0, -4.0, 0.0]), atol=1e-6)  # sqrt(1*4), sqrt(2*8)


def test_and_mask_update_leaves_disagreeing_parameters_alone():
    """Two environments pulling one weight in opposite directions: AND-mask does not move it."""
    f = nn.Linear(2, 1, bias=False)
    nn.init.ones_(f.weight)
    _, args = cli.parse_args([])
    m = METHODS["andmask"](nn.ModuleDict({"f": f, "g": nn.Identity()}), args)
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0]])  # env 0 and env 1 disagree on w[1]
    m.update(Batch({"x": x, "y": torch.tensor([1, 1]), "env": torch.tensor([0, 1])}),
             {"main": optim.SGD(f.parameters(), lr=0.1)})
    assert f.weight[0, 1].item() == 1.0 and f.weight[0, 0].item() > 1.0


def brute_force_lp(score, bound):
    """max <p, score> over p in [-bound, bound]^E, sum p = 1, by trying every vertex: all but
    one coordinate at a bound, that one set by the sum."""
    n, best = len(score), None
    for free in range(n):
        for corner in itertools.product((-bound, bound), repeat=n - 1):
            p = list(corner[:free]) + [0.0] + list(corner[free:])
            p[free] = 1.0 - sum(corner)
            if abs(p[free]) <= bound + 1e-9:
                value = sum(a * b for a, b in zip(p, score))
                best = value if best is None else max(best, value)
    return best


@pytest.mark.parametrize("n_envs,bound", [(1, 2.0), (2, 2.0), (3, 2.0), (5, 2.0), (6, 0.5)])
def test_gen_mask_weights_reach_the_lp_optimum(n_envs, bound):
    """ILC fork's GEN-mask problem, solved exactly (a projected ascent from uniform does not
    reach the corner: its weights stayed within about [-0.45, 0.56])."""
    torch.manual_seed(n_envs)
    for _ in range(5):
        g = torch.randn(n_envs, 4, 3, dtype=torch.float64)
        p = gen_mask_weights(g, bound)
        assert abs(p.sum().item() - 1) < 1e-9 and p.abs().max().item() <= bound + 1e-12
        score = (g.reshape(n_envs, -1) @ g.reshape(n_envs, -1).sum(0)).tolist()
        assert abs(torch.dot(p, torch.tensor(score, dtype=p.dtype)).item()
                   - brute_force_lp(score, bound)) < 1e-9


def test_gen_mask_weights_are_a_corner_in_the_order_of_alignment():
    g = torch.tensor([[1.0, 0.0], [3.0, 0.0], [-1.0, 0.0], [2.0, 0.0]])  # scores 5, 15, -5, 10
    assert gen_mask_weights(g).tolist() == [-1.0, 2.0, -2.0, 2.0]


def test_gen_mask_weights_share_equally_among_ties_and_are_uniform_for_zero_scores():
    ones = torch.ones(4, 3)
    assert torch.allclose(gen_mask_weights(ones), torch.full((4,), 0.25))
    assert torch.allclose(gen_mask_weights(torch.zeros(3, 2)), torch.full((3,), 1 / 3))
    # two tied leaders share 2 + (-1): a tie-break would be as good, but arbitrary
    g = torch.tensor([[2.0], [2.0], [-1.0]])  # scores 6, 6, -3
    assert torch.allclose(gen_mask_weights(g), torch.tensor([1.5, 1.5, -2.0]))
    with pytest.raises(ValueError):
        gen_mask_weights(torch.ones(2, 1), bound=0.4)


# ----------------------------------------------------------------------------- BlindEye
def test_confusion_loss_averages_over_the_positions_the_bias_target_keeps():
    """Alvi et al.'s confusion loss, over the same positions as the bias loss: background
    positions (IGNORE_INDEX) must not dilute it."""
    logits = torch.zeros(2, 3, 8, 2, 2)            # uniform: CE to uniform = log 8
    logits[:, :, 0, 0, 0] = 50.0                   # confident, but only at one position...
    target = torch.full((2, 3, 2, 2), 3)
    target[:, :, 0, 0] = IGNORE_INDEX              # ...which the target ignores
    assert abs(confusion_loss(logits, target).item() - math.log(8)) < 1e-5
    target[:, 0] = IGNORE_INDEX                    # a head with nothing kept adds 0
    assert abs(confusion_loss(logits, target).item() - 2 / 3 * math.log(8)) < 1e-5
    # image-level targets (N,) with logits (N, 1, K): every example counts
    assert abs(confusion_loss(torch.zeros(4, 1, 2), torch.tensor([0, 1, 1, 0])).item()
               - math.log(2)) < 1e-6


def test_blindeye_trains_h_on_detached_features():
    nets, m, opts, batch = make("blindeye")
    before_h = snapshot(nets["h"])
    stats = m.update(batch, opts)
    assert changed(nets["h"], before_h)
    assert stats["confusion"] >= math.log(8) - 1e-5  # CE to uniform is at least log K
