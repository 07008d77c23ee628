"""Training methods behind one contract, found by --method in METHODS.

Contract (what the Solver relies on, and all it relies on):
  Method(nets, args)              nets: nn.ModuleDict with f, g, h
  param_groups() -> {name: [params]}   the Solver builds one optimizer + schedule per name
  update(batch, optimizers) -> {metric: float}   one training step on batch = (x, y, b)
  predict(x) -> class logits

To add a method: subclass Method, implement update(), decorate with @register("name").
"""
import torch
import torch.nn.functional as F

from data_handler import IGNORE_INDEX
from network import grad_reverse

METHODS = {}


def register(name):
    def deco(cls):
        METHODS[name] = cls
        cls.name = name
        return cls
    return deco


def bias_cross_entropy(logits, target):
    """Cross-entropy of h's logits (N, heads, K, *pos) against b (N, heads, *pos), a mean over
    the non-ignored positions of each head, summed over heads (LNL reference: R + G + B)."""
    total = logits.new_zeros(())
    for k in range(logits.shape[1]):
        t = target[:, k]
        valid = (t != IGNORE_INDEX).sum().clamp(min=1)
        total = total + F.cross_entropy(logits[:, k], t, ignore_index=IGNORE_INDEX,
                                        reduction="sum") / valid
    return total


def negative_entropy(logits):
    """mean over samples and positions of sum_k p_k log p_k, averaged over heads (LNL eq. 9's
    entropy term; minimising it pushes h's prediction towards uniform)."""
    logp = F.log_softmax(logits, dim=2)
    return (logp.exp() * logp).sum(dim=2).mean()


def bias_accuracy(logits, target):
    """Fraction of non-ignored bias positions that h predicts right."""
    valid = target != IGNORE_INDEX
    hits = (logits.argmax(dim=2) == target) & valid
    return hits.sum().item() / max(valid.sum().item(), 1)


def zero_all(optimizers):
    # set_to_none=False on purpose: the reference zeroed gradients in place, so a module
    # left out of a backward pass (g in the adversarial step) still takes the momentum and
    # weight-decay part of its optimizer's step.
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=False)


class Method:
    """Base: plain prediction through g(f(x)); f and g share the 'main' optimizer."""

    def __init__(self, nets, args):
        self.nets, self.args = nets, args

    def param_groups(self):
        return {"main": list(self.nets["f"].parameters()) + list(self.nets["g"].parameters())}

    def predict(self, x):
        return self.nets["g"](self.nets["f"](x))

    def update(self, batch, optimizers):
        raise NotImplementedError


@register("baseline")
class Baseline(Method):
    """Plain cross-entropy on the biased data (the paper's 'Baseline' row)."""

    def update(self, batch, optimizers):
        x, y, _ = batch
        zero_all(optimizers)
        logits = self.predict(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizers["main"].step()
        return {"loss_cls": loss.item(),
                "train_acc": (logits.argmax(1) == y).float().mean().item()}


@register("lnl")
class LearningNotToLearn(Method):
    """Learning Not to Learn (Kim et al., CVPR 2019, §3.3 and the authors' trainer): per batch,
    (1) f, g step on CE(g(f(x)), y) + lambda * negative entropy of h(f(x));
    (2) h learns the bias from f(x) through a gradient reversal layer (scale mu), so f is
        pushed to remove what h can read; f, g and h all step."""

    def param_groups(self):
        return {**super().param_groups(), "bias": list(self.nets["h"].parameters())}

    def update(self, batch, optimizers):
        x, y, b = batch
        f, g, h = self.nets["f"], self.nets["g"], self.nets["h"]

        zero_all(optimizers)
        feat = f(x)
        logits = g(feat)
        loss_cls = F.cross_entropy(logits, y)
        neg_ent = negative_entropy(h(feat))
        (loss_cls + self.args.lambda_entropy * neg_ent).backward()
        optimizers["main"].step()

        zero_all(optimizers)
        bias_logits = h(grad_reverse(f(x), self.args.mu_grl))
        loss_bias = bias_cross_entropy(bias_logits, b)
        loss_bias.backward()
        optimizers["main"].step()
        optimizers["bias"].step()

        return {"loss_cls": loss_cls.item(), "entropy_term": neg_ent.item(),
                "loss_bias": loss_bias.item(), "bias_acc": bias_accuracy(bias_logits, b),
                "train_acc": (logits.argmax(1) == y).float().mean().item()}
