"""Training methods behind one contract, found by --method in METHODS.

Contract (what the Solver relies on, and all it relies on):
  Method(nets, args, train_set=None)   nets: nn.ModuleDict with f, g, h (and the networks the
                                  method declares in `twins`); train_set: the training set
                                  (its size and labels; JTT evaluates it)
  param_groups() -> {name: [params]}   the Solver builds one optimizer + schedule per name
  update(batch, optimizers) -> {metric: 0-dim tensor}   one training step on a Batch, whose
                                  fields (data_handler.FIELDS) it reads by name;
                                  metrics stay on the device (no host sync inside a step)
  predict(x) -> class logits (one logit column = a binary task)
  state_dict() / load_state_dict(d)    the method's own state, saved in checkpoints
  build_networks(args, kw) (class)     the networks it trains (f, g, h and its twins by
                                  default, each by its --<role>_network_name); main.py builds
                                  them through it and checks them through check_forward(x)
  start_epoch(epoch, optimizers)       called before each epoch (and again on a resumed one)
  sampling() -> None | {"weights": w} | {"copies": c}   how the epoch draws its examples
                                  (data_handler.EpochSampler): None a plain shuffle; weights:
                                  n draws with replacement; copies: example i served c_i times
  check_args(args) (class) -> None | str   a combination of flags it cannot run, in one line

Each method declares the batch fields it reads (`reads`): "bias" (h's target), "env" (an
environment index per example: the environment for IRMColoredMNIST and SpiralSignatures, the
example for CIFAR10RandomLabels, the colour with --env_from_bias), "bias_label" (the image-level
bias label), "index" (the example's position). main.py refuses a method that reads a field its
dataset's batches lack. Full-batch training is --batch_size 0; optimizers are
--optimizer {sgd,adam}. Neither needs a method-specific hook.

To add a method: subclass Method, implement update(), declare its flags in `options`
(options.Option: name, default, help, valid range; main.py makes them an argument group and
checks the ranges) and the fields it reads in `reads`, decorate with @register("name").
A method whose update has fixed shapes and no host synchronisation sets graph_safe = True: on
CUDA the Solver then records its step once as a CUDA graph and replays it (--fast auto).
"""
import torch
import torch.nn.functional as F
from torch import nn

import metrics
from data_handler import IGNORE_INDEX
from network import build_network, grad_reverse
from options import Option

METHODS = {}


def register(name):
    def deco(cls):
        METHODS[name] = cls
        return cls
    return deco


def task_loss(logits, y):
    """Cross-entropy for class logits; binary cross-entropy for a single logit column."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
    return F.cross_entropy(logits, y)


def task_accuracy(logits, y):
    pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    return (pred == y).float().mean()


def as_heads(target):
    """An image-level bias label b of shape (N,) is one head with no positions: (N, 1)."""
    return target.view(len(target), 1) if target.dim() == 1 else target


def head_means(values, target):
    """values (N, heads, *pos) per position -> (heads,): per head, the mean over the positions
    the bias target keeps (target != IGNORE_INDEX; LNL reference: background pixels ignored)."""
    valid = (as_heads(target) != IGNORE_INDEX).to(values.dtype)
    dims = [0] + list(range(2, values.dim()))
    return (values * valid).sum(dims) / valid.sum(dims).clamp(min=1)


def bias_cross_entropy(logits, target):
    """Cross-entropy of h's logits (N, heads, K, *pos) against b (N, heads, *pos), a mean over
    the non-ignored positions of each head, summed over heads (LNL reference: R + G + B)."""
    per_position = F.cross_entropy(logits.transpose(1, 2), as_heads(target),
                                   ignore_index=IGNORE_INDEX, reduction="none")
    return head_means(per_position, target).sum()


def negative_entropy(logits):
    """mean over samples and positions of sum_k p_k log p_k, averaged over heads (LNL eq. 9's
    entropy term; minimising it pushes h's prediction towards uniform)."""
    logp = F.log_softmax(logits, dim=2)
    return (logp.exp() * logp).sum(dim=2).mean()


def bias_accuracy(logits, target):
    """Fraction of non-ignored bias positions that h predicts right."""
    target = as_heads(target)
    valid = target != IGNORE_INDEX
    hits = (logits.argmax(dim=2) == target) & valid
    return hits.sum() / valid.sum().clamp(min=1)


def all_options():
    """Every registered method's declared flags."""
    return [o for cls in METHODS.values() for o in cls.options]


def finite_floats(t):
    """Whether a tensor holds floating-point values, every one finite (a handed state's)."""
    return torch.is_floating_point(t) and bool(torch.isfinite(t).all())


def zero_all(optimizers):
    # set_to_none=False on purpose: the reference zeroed gradients in place, so a module
    # left out of a backward pass (g in the adversarial step) still takes the momentum and
    # weight-decay part of its optimizer's step.
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=False)


class Method:
    """Base: plain prediction through g(f(x)); f and g share the 'main' optimizer."""

    needs_bias_head = False  # True: h must be a real network (--h_network_name not 'none')
    graph_safe = False       # True: update() can be recorded as one CUDA graph
    supports_ddp = True      # False: the update needs the whole batch's environments at once
    reads = ("x", "y")       # the batch fields update() reads (data_handler.FIELDS); checked
    #                          against the dataset spec's before anything runs
    drop_last = False        # True: the epoch drops its last partial batch
    multiclass = False       # True: its losses need class logits (two or more classes)
    twins = ()               # more networks it trains, each built as its namesake is:
    #                          ("f_b", "g_b") are copies of f and g's architecture, checkpointed
    #                          and resumed with them
    options = ()             # the method's own flags (options.Option), read as self.args.<name>
    grid = {}                # {flag: values}: its own hyperparameters' search grid (hparams.py;
    #                          the recipe's value first), compared on validation, never test
    label = None             # its name in tables and figures (the papers'); None: its key
    variants = ()            # (key, label, test(config)): a setting of its flags that the
                             # papers name as a method of its own (ERM = IRM without penalty)
    counters = ()            # its state's whole-number counters (a step): checked on resume

    def __init__(self, nets, args, train_set=None):
        self.nets, self.args = nets, args

    @classmethod
    def build_networks(cls, args, kw):
        """The networks the method trains, each built by name with the dataset's sizes (kw):
        f, g, h as --f/g/h_network_name say, then the twins (f_b built as f is)."""
        roles = ("f", "g", "h") + tuple(cls.twins)
        return nn.ModuleDict({role: build_network(getattr(args, f"{role[0]}_network_name"),
                                                  **kw) for role in roles})

    @classmethod
    def options_read(cls):
        """Its own flags and those of the methods it extends (DFA reads LfF's q and EMA)."""
        return [o for k in cls.__mro__ for o in vars(k).get("options", ())]

    @classmethod
    def check_args(cls, args):
        """Why this method cannot run with these flags (one line), or None."""
        if cls.multiclass and args.num_main_classes < 2:
            return (f"--method {args.method} computes a cross-entropy over class logits, and "
                    f"{args.dataset_name} has one logit (a binary task, "
                    f"--num_main_classes {args.num_main_classes}); use it on a dataset with two "
                    "or more classes")
        return None

    def check_forward(self, x):
        """One forward pass through every network a step uses (main.py's pre-run check)."""
        self.predict(x)

    def start_epoch(self, epoch, optimizers):
        """Before epoch `epoch` (0-based) starts, or resumes from its middle."""

    def check_state(self, state):
        """Why a checkpoint's method state cannot be this run's (one line), or None; here,
        its counters (a checkpoint is a handed file: a string or a negative count is damage,
        never a traceback mid-run)."""
        for key in self.counters:
            value = state.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0):
                return (f"its method state {key!r} is {value!r}, not a count: the checkpoint "
                        "is damaged; pass this run's own")
        return None

    def sampling(self):
        """How the epoch draws its training examples (data_handler.EpochSampler): None, a
        plain shuffle."""
        return None

    def reported_from(self):
        """The first epoch whose weights are the model this method reports: model selection
        and the test oracle look no earlier (1: every epoch trains it)."""
        return 1

    def schedule_epoch(self, epoch):
        """The epoch the lr schedule counts at `epoch` (epochs completed): the epochs its
        current model has trained (one model: all of them)."""
        return epoch

    def param_groups(self):
        return {"main": list(self.nets["f"].parameters()) + list(self.nets["g"].parameters())}

    def predict(self, x):
        return self.nets["g"](self.nets["f"](x))

    def update(self, batch, optimizers):
        raise NotImplementedError

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@register("baseline")
class Baseline(Method):
    """Plain cross-entropy on the biased data (the paper's 'Baseline' row)."""

    label = "Baseline"

    graph_safe = True

    def update(self, batch, optimizers):
        x, y = batch["x"], batch["y"]
        zero_all(optimizers)
        logits = self.predict(x)
        loss = task_loss(logits, y)
        loss.backward()
        optimizers["main"].step()
        return {"loss_cls": loss.detach(), metrics.TRAIN: task_accuracy(logits, y)}


class _BiasHeadMethod(Method):
    """Methods with a bias head h on its own optimizer, whose first update is
    f, g <- CE(g(f(x)), y) + weight * term(h(f(x)))."""

    needs_bias_head = True
    graph_safe = True
    reads = ("x", "y", "bias")

    def param_groups(self):
        return {**super().param_groups(), "bias": list(self.nets["h"].parameters())}

    def check_forward(self, x):
        feat = self.nets["f"](x)
        self.nets["g"](feat)
        self.nets["h"](feat)

    def label_step(self, x, y, optimizers, term_fn, weight):
        zero_all(optimizers)
        feat = self.nets["f"](x)
        logits = self.nets["g"](feat)
        loss_cls = task_loss(logits, y)
        term = term_fn(self.nets["h"](feat))
        (loss_cls + weight * term).backward()
        optimizers["main"].step()
        return feat, logits, loss_cls, term

    def bias_step(self, h_input, b, optimizers, steps):
        """The second update: h learns b from h_input (f's features, reversed or detached);
        then the optimizers named in steps step."""
        zero_all(optimizers)
        bias_logits = self.nets["h"](h_input)
        loss_bias = bias_cross_entropy(bias_logits, b)
        loss_bias.backward()
        for name in steps:
            optimizers[name].step()
        return {"loss_bias": loss_bias.detach(), "bias_acc": bias_accuracy(bias_logits, b)}


@register("lnl")
class LearningNotToLearn(_BiasHeadMethod):
    """Learning Not to Learn (Kim et al., CVPR 2019, §3.3 and the authors' trainer): per batch,
    (1) f, g step on CE(g(f(x)), y) + lambda * negative entropy of h(f(x));
    (2) h learns the bias from a fresh f(x) through a gradient reversal layer (scale mu), so f
        is pushed to remove what h can read; f, g and h all step."""

    label = "LNL"

    options = (Option("lambda_entropy", 0.01, "weight of h's negative entropy in f, g's loss",
                      range=">= 0"),
               Option("mu_grl", 0.1, "gradient reversal scale", range=">= 0"))
    grid = {"lambda_entropy": (0.01, 0.1), "mu_grl": (0.1, 1.0)}

    def update(self, batch, optimizers):
        x, y, b = batch["x"], batch["y"], batch["bias"]
        _, logits, loss_cls, neg_ent = self.label_step(x, y, optimizers, negative_entropy,
                                                       self.args.lambda_entropy)
        reversed_feat = grad_reverse(self.nets["f"](x), self.args.mu_grl)  # a fresh f(x)
        return {"loss_cls": loss_cls.detach(), "entropy_term": neg_ent.detach(),
                **self.bias_step(reversed_feat, b, optimizers, ("main", "bias")),
                metrics.TRAIN: task_accuracy(logits, y)}


def confusion_loss(logits, target):
    """Cross-entropy between h's prediction and the uniform distribution (Alvi et al., 'Turning a
    Blind Eye', ECCV-W 2018), averaged over the positions the bias target keeps, as the bias
    loss is (background positions would dilute --blindeye_alpha), then over heads."""
    return head_means(-F.log_softmax(logits, dim=2).mean(dim=2), target).mean()


@register("blindeye")
class BlindEye(_BiasHeadMethod):
    """Turning a Blind Eye (Alvi et al. 2018): f, g learn the label while pushing h's
    prediction towards uniform with the confusion loss (weight --blindeye_alpha); then h
    learns the bias from f's features, detached so that f is not trained to reveal it."""

    label = "BlindEye"

    options = (Option("blindeye_alpha", 1.0, "BlindEye: weight of the confusion loss in f, g's "
                      "loss", range=">= 0"),)
    grid = {"blindeye_alpha": (1.0, 0.1, 0.01)}

    def update(self, batch, optimizers):
        x, y, b = batch["x"], batch["y"], batch["bias"]
        feat, logits, loss_cls, confusion = self.label_step(
            x, y, optimizers, lambda out: confusion_loss(out, b), self.args.blindeye_alpha)
        return {"loss_cls": loss_cls.detach(), "confusion": confusion.detach(),
                **self.bias_step(feat.detach(), b, optimizers, ("bias",)),
                metrics.TRAIN: task_accuracy(logits, y)}


def irm_penalty(logits, y):
    """IRMv1 (Arjovsky et al. 2019, eq. 5): the squared gradient of the environment's risk with
    respect to a dummy scale s multiplying the logits, at s = 1. That gradient has a closed
    form, mean_i <softmax(z_i) - onehot(y_i), z_i> (sigmoid for one logit), which is computed
    directly: the same value and gradient as double backpropagation, at a fraction of its cost."""
    if logits.shape[1] == 1:
        z = logits[:, 0]
        grad = ((torch.sigmoid(z) - y.float()) * z).mean()
    else:
        residual = torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)
        grad = (residual * logits).sum(1).mean()
    return grad.pow(2)


@register("irm")
class IRM(Method):
    """Invariant Risk Minimization, IRMv1 as in the authors' Colored-MNIST script: mean risk over
    environments + l2 * sum ||w||^2 + w_p * mean penalty, with w_p = 1 until
    --irm_anneal_iters steps and --irm_penalty_weight after, the loss divided by w_p when
    w_p > 1. --irm_penalty_weight 0 is their ERM run."""

    label = "IRM"
    counters = ("step",)
    variants = (("erm", "ERM", lambda c: c.get("irm_penalty_weight") == 0),)

    supports_ddp = False
    reads = ("x", "y", "env")
    options = (Option("irm_penalty_weight", 91257.18613115903, "IRM: penalty weight after "
                      "annealing (0 = the ERM run)", range=">= 0"),
               Option("irm_anneal_iters", 190, "IRM: steps with penalty weight 1 before "
                      "--irm_penalty_weight", range=">= 0"),
               Option("irm_l2", 0.00110794568, "IRM: weight of sum ||w||^2 in the loss",
                      range=">= 0"))

    def __init__(self, nets, args, train_set=None):
        super().__init__(nets, args)
        self.step = 0

    def update(self, batch, optimizers):
        x, y, env = batch["x"], batch["y"], batch["env"]
        zero_all(optimizers)
        logits = self.predict(x)
        risks, penalties = [], []
        for e in torch.unique(env):
            sel = env == e
            risks.append(task_loss(logits[sel], y[sel]))
            penalties.append(irm_penalty(logits[sel], y[sel]))
        risk, penalty = torch.stack(risks).mean(), torch.stack(penalties).mean()
        l2 = sum(p.pow(2).sum() for p in self.param_groups()["main"])
        weight = (self.args.irm_penalty_weight if self.step >= self.args.irm_anneal_iters
                  else 1.0)
        loss = risk + self.args.irm_l2 * l2 + weight * penalty
        if weight > 1.0:
            loss = loss / weight  # keeps gradients in a range Adam's lr was tuned for
        loss.backward()
        optimizers["main"].step()
        self.step += 1
        return {"loss_cls": risk.detach(), "irm_penalty": penalty.detach(),
                "penalty_weight": risk.new_tensor(float(weight)),
                metrics.TRAIN: task_accuracy(logits, y)}

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = state.get("step", 0)


def and_mask_combine(env_grads, tau, variant="and", rescale=False):
    """AND-mask (Parascandolo et al., ICLR 2021, §4): env_grads (E, *shape) of one parameter
    tensor -> its update direction. Entries whose gradient signs agree across at least a
    fraction tau of environments (|mean_e sign(g_e)| >= tau) keep mean_e g_e ('and') or
    sign(mean) * geometric mean of |g_e| ('geom'); the rest are zeroed. rescale divides by
    the fraction kept."""
    mask = (torch.sign(env_grads).mean(0).abs() >= tau).to(env_grads.dtype)
    mean = env_grads.mean(0)
    if variant == "and":
        direction = mean
    elif variant == "geom":
        direction = torch.sign(mean) * torch.exp(torch.log(env_grads.abs() + 1e-10).mean(0))
    else:
        raise ValueError(f"unknown AND-mask variant {variant!r}; use 'and' or 'geom'")
    out = mask * direction
    if rescale:
        out = out / (mask.mean() + 1e-10)
    return out


def per_env_gradients(method, x, y, env):
    """Per environment: a forward and backward pass on its own examples (so each backward
    touches only its share of the batch). Returns the logits in batch order, the mean loss
    over environments, the parameters and, per parameter, the stacked gradients (E, *shape)."""
    params = [p for p in method.param_groups()["main"] if p.requires_grad]
    logits, losses, grads = None, [], [[] for _ in params]
    for e in torch.unique(env):
        sel = env == e
        out = method.predict(x[sel])
        loss = task_loss(out, y[sel])
        for slot, g in zip(grads, torch.autograd.grad(loss, params)):
            slot.append(g)
        losses.append(loss.detach())
        if logits is None:
            logits = out.new_empty((len(x),) + out.shape[1:])
        logits[sel] = out.detach()
    return logits, torch.stack(losses).mean(), params, [torch.stack(g) for g in grads]


class _GradientMaskMethod(Method):
    """Shared step of the masking methods: per-environment gradients, combined per parameter
    tensor by combine(), written to .grad; the optimizer then adds weight decay and steps."""

    supports_ddp = False
    reads = ("x", "y", "env")

    def combine(self, env_grads):
        raise NotImplementedError

    def update(self, batch, optimizers):
        zero_all(optimizers)
        logits, loss, params, grads = per_env_gradients(self, batch["x"], batch["y"],
                                                        batch["env"])
        kept = []
        for p, g in zip(params, grads):
            p.grad = self.combine(g)
            kept.append((p.grad != 0).float().mean())
        optimizers["main"].step()
        return {"loss_cls": loss.detach(), "kept_fraction": torch.stack(kept).mean(),
                metrics.TRAIN: task_accuracy(logits, batch["y"])}


@register("andmask")
class ANDMask(_GradientMaskMethod):
    """AND-mask and its geometric-mean variant (--andmask_variant, --andmask_tau,
    --andmask_rescale); tau = 0 with 'and' is plain averaged-gradient descent."""

    label = "AND-mask"
    variants = (("tau0", "baseline (tau=0)", lambda c: c.get("andmask_tau") == 0),
                ("andmask_geom", "geom-mean (tau=1)",
                 lambda c: c.get("andmask_variant") == "geom"))

    options = (Option("andmask_variant", "and", "AND-mask: arithmetic mean ('and') or geometric "
                      "mean ('geom')", choices=("and", "geom")),
               Option("andmask_tau", 1.0, "AND-mask: sign-agreement threshold in [0, 1] (0 = "
                      "plain averaging)", range="[0, 1]"),
               Option("andmask_rescale", 0, "AND-mask: divide by the fraction of entries kept",
                      choices=(0, 1)))

    def combine(self, env_grads):
        return and_mask_combine(env_grads, self.args.andmask_tau, self.args.andmask_variant,
                                bool(self.args.andmask_rescale))


def gen_mask_weights(env_grads, bound=2.0):
    """GEN-mask's environment weights for one parameter tensor (ILC fork of the AND-mask code,
    jc-audet/ILC_Exploration; docs/references.md, GEN-mask): the p in [-bound, bound]^E with
    sum p = 1 maximising <sum_e p_e g_e, sum_e g_e>. The objective is linear in p, with
    coefficients s_e = <g_e, sum_e' g_e'>, so the exact optimum is a corner, found by sorting:
    from p = -bound everywhere, the environments with the largest s_e are raised to +bound in
    turn until the sum is 1, the last one only part way. Environments with equal scores share
    their total equally (still optimal, and symmetric): all-zero scores give uniform weights."""
    n = len(env_grads)
    if bound * n < 1:
        raise ValueError(f"GEN-mask: no weights in [-{bound}, {bound}]^{n} sum to 1")
    flat = env_grads.reshape(n, -1)
    score = flat @ flat.sum(0)
    order = torch.argsort(score, descending=True)
    room = 1.0 + bound * n - 2 * bound * torch.arange(n, dtype=flat.dtype, device=flat.device)
    fill = room.clamp(0, 2 * bound) - bound  # sorted-order weights: +bound, ..., part, -bound
    _, group = torch.unique(score[order], return_inverse=True)
    shared = torch.zeros(n, dtype=flat.dtype, device=flat.device).index_add_(0, group, fill)
    shared = shared / torch.bincount(group, minlength=n).clamp(min=1).to(flat.dtype)
    return torch.empty_like(fill).index_copy_(0, order, shared[group])


@register("genmask")
class GENMask(_GradientMaskMethod):
    """GEN-mask (ILC fork of the AND-mask code; docs/references.md): per parameter tensor,
    gradient = sum_e p_e g_e with the exact optimal weights of gen_mask_weights
    (--genmask_bound)."""

    label = "GEN-mask"

    # p in [-bound, bound]^E summing to 1 must exist for any number of environments E
    options = (Option("genmask_bound", 2.0, "GEN-mask: environment weights lie in [-bound, "
                      "bound] (ILC fork: 2)", range=">= 1"),)

    def combine(self, env_grads):
        p = gen_mask_weights(env_grads, self.args.genmask_bound)
        return torch.tensordot(p, env_grads, dims=1)


# --------------------------------------------------------------------------- after LNL
def per_example_ce(logits, y):
    return F.cross_entropy(logits, y, reduction="none")


def gce_loss(logits, y, q, rule="authors"):
    """LfF's generalized cross-entropy per example, as a cross-entropy weighted by the detached
    p_y^q: its gradient is p_y^q times CE's, the gradient of (1 - p_y^q) / q (Zhang & Sabuncu
    2018). rule "authors" adds their code's further factor q (alinlab/LfF module/loss.py:
    gradient q p_y^q times CE's); "paper" leaves it out."""
    p_y = torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1).detach()
    weight = p_y ** q * (q if rule == "authors" else 1.0)
    return per_example_ce(logits, y) * weight


@register("lff")
class LearningFromFailure(Method):
    """Learning from Failure (Nam et al., NeurIPS 2020; alinlab/LfF train.py): a biased twin
    (f_b, g_b) trains on the generalized cross-entropy (gce_loss), which amplifies what is easy
    (the bias); per training example an exponential moving average of each model's
    cross-entropy (--lff_ema; the first value taken whole), divided by the largest average of
    its class, gives w = ema_biased / (ema_biased + ema_debiased); the debiased f, g train on
    the mean of w x CE. Both step on one backward pass of the sum. Reads the example index."""

    label = "LfF"
    multiclass = True
    reads = ("x", "y", "index")
    twins = ("f_b", "g_b")
    options = (Option("lff_q", 0.7, "LfF: the GCE's q", range="(0, 1]"),
               Option("lff_ema", 0.7, "LfF: weight of the old value in the per-example loss "
                      "average", range="[0, 1)"),
               Option("lff_gce", "authors", "LfF: authors: the GCE gradient times q, as their "
                      "code; paper: without q", choices=("authors", "paper")))
    grid = {"lff_q": (0.7, 0.5, 0.9)}

    def __init__(self, nets, args, train_set=None):
        super().__init__(nets, args)
        self.labels = train_set.labels if train_set is not None else None
        self.ema = None  # (2, N): the biased and the debiased model's averages
        self.seen = None  # (2, N): whether an example's average holds a value yet

    def param_groups(self):
        return {**super().param_groups(),
                "biased": list(self.nets["f_b"].parameters()) + list(
                    self.nets["g_b"].parameters())}

    def _averages(self, device):
        if self.ema is None:
            self.ema = torch.zeros(2, len(self.labels), device=device)
            self.seen = torch.zeros(2, len(self.labels), device=device)
        self.labels = self.labels.to(device)
        self.ema, self.seen = self.ema.to(device), self.seen.to(device)

    def weights(self, losses, index, y):
        """Update the averages of the examples at index with their losses (2, B) and return
        w for each (LfF's re-weighting), normalised per class by the largest average."""
        a = self.args.lff_ema
        old, seen = self.ema[:, index], self.seen[:, index]
        self.ema[:, index] = a * old + (1 - a * seen) * losses
        self.seen[:, index] = 1.0
        largest = torch.zeros(2, self.args.num_main_classes, device=losses.device).scatter_reduce_(
            1, self.labels.expand(2, -1), self.ema, "amax", include_self=False)
        norm = self.ema[:, index] / largest[:, y]
        return norm[0] / (norm[0] + norm[1] + 1e-8)

    def update(self, batch, optimizers):
        x, y, index = batch["x"], batch["y"], batch["index"]
        self._averages(x.device)
        zero_all(optimizers)
        logits_b = self.nets["g_b"](self.nets["f_b"](x))
        logits_d = self.predict(x)
        ce_b, ce_d = per_example_ce(logits_b, y), per_example_ce(logits_d, y)
        w = self.weights(torch.stack([ce_b.detach(), ce_d.detach()]), index, y)
        loss_b = gce_loss(logits_b, y, self.args.lff_q, self.args.lff_gce).mean()
        loss_d = (ce_d * w).mean()
        (loss_b + loss_d).backward()
        optimizers["biased"].step()
        optimizers["main"].step()
        return {"loss_cls": ce_d.detach().mean(), "loss_biased": ce_b.detach().mean(),
                "lff_weight": w.mean(), metrics.TRAIN: task_accuracy(logits_d, y),
                f"{metrics.TRAIN}_biased": task_accuracy(logits_b, y)}

    def state_dict(self):
        return {} if self.ema is None else {"ema": self.ema.cpu(), "seen": self.seen.cpu()}

    def check_state(self, state):
        n = len(self.labels) if self.labels is not None else None
        for key in ("ema", "seen"):
            value = state.get(key)
            if value is not None and (not torch.is_tensor(value) or n is None
                                      or tuple(value.shape) != (2, n)):
                return (f"its per-example loss averages {key!r} are not of shape (2, {n}) "
                        "(this run's training set); it is another run's: pass this run's own")
            if value is not None and not finite_floats(value):
                return (f"its per-example loss averages {key!r} are not finite floats: the "
                        "checkpoint is damaged; pass this run's own")
        return super().check_state(state)

    def load_state_dict(self, state):
        self.ema, self.seen = state.get("ema"), state.get("seen")


def group_balanced_weights(groups):
    """Per example 1 / (its group's size): drawn with replacement, every group is equally
    likely in every batch (group_DRO's --reweight_groups, which all their commands pass)."""
    groups = torch.as_tensor(groups, dtype=torch.long)
    return 1.0 / torch.bincount(groups)[groups].double()


@register("groupdro")
class GroupDRO(Method):
    """Group DRO (Sagawa et al., ICLR 2020; kohpangwei/group_DRO loss.py, without its
    generalization adjustment): groups are (label, image-level bias label); per step each
    group's mean loss l_g in the batch (0 for a group absent from it), the group weights
    q_g <- q_g exp(eta l_g) renormalised, and the loss sum_g q_g l_g with the new q. The epoch
    draws its examples group-balanced, with replacement, as every command of the authors'
    README does (--groupdro_balanced 0: a plain shuffle)."""

    label = "GroupDRO"
    multiclass = True
    reads = ("x", "y", "bias_label")
    options = (Option("groupdro_eta", 0.01, "GroupDRO: step size of the group weights",
                      range=">= 0"),
               Option("groupdro_balanced", 1, "GroupDRO: 1 draws the epoch group-balanced "
                      "with replacement (the authors' --reweight_groups), 0 a plain shuffle",
                      choices=(0, 1)))
    grid = {"groupdro_eta": (0.01, 0.001, 0.1)}

    def __init__(self, nets, args, train_set=None):
        super().__init__(nets, args)
        # the bias label's values: a colour's digit on both Colored MNISTs (h's classes on
        # LNL's are colour bins, not these), an attribute on the real-image sets
        self.bias_values = (int(train_set.bias_index.max()) + 1 if train_set is not None
                            else args.num_bias_classes)
        self.groups = args.num_main_classes * self.bias_values
        self.q = torch.full((self.groups,), 1.0 / self.groups)
        self.draw = None
        if train_set is not None and args.groupdro_balanced:
            groups = (torch.as_tensor(train_set.labels).cpu() * self.bias_values
                      + torch.as_tensor(train_set.bias_index))
            self.draw = {"weights": group_balanced_weights(groups)}

    def sampling(self):
        return self.draw

    def update(self, batch, optimizers):
        x, y, b = batch["x"], batch["y"], batch["bias_label"]
        zero_all(optimizers)
        logits = self.predict(x)
        losses = per_example_ce(logits, y)
        group = y * self.bias_values + b
        counts = torch.bincount(group, minlength=self.groups).to(losses.dtype)
        sums = torch.zeros(self.groups, device=x.device, dtype=losses.dtype).index_add_(
            0, group, losses)
        group_loss = sums / counts.clamp(min=1)
        self.q = self.q.to(x.device) * torch.exp(self.args.groupdro_eta * group_loss.detach())
        self.q = self.q / self.q.sum()
        loss = group_loss @ self.q
        loss.backward()
        optimizers["main"].step()
        return {"loss_cls": losses.detach().mean(), "loss_robust": loss.detach(),
                "largest_group_weight": self.q.max(), metrics.TRAIN: task_accuracy(logits, y)}

    def state_dict(self):
        return {"q": self.q.cpu()}

    def check_state(self, state):
        q = state.get("q")
        if q is not None and (not torch.is_tensor(q) or tuple(q.shape) != (self.groups,)):
            return (f"its group weights are not {self.groups} (labels x bias labels of this "
                    "training set); it is another run's: pass this run's own")
        if q is not None and not (finite_floats(q) and (q >= 0).all() and q.sum() > 0):
            return ("its group weights are not a distribution (finite, non-negative, not all "
                    "zero): the checkpoint is damaged; pass this run's own")
        return None

    def load_state_dict(self, state):
        if "q" in state:
            self.q = state["q"]


@register("jtt")
class JustTrainTwice(Method):
    """Just Train Twice (Liu et al., ICML 2021; anniesch/jtt): plain ERM for the first
    --jtt_first_epochs epochs (T); then the training examples that model gets wrong form the
    error set, f and g start again from the run's initial weights (the seed's: a fresh model)
    with a fresh optimizer state, and train on the cross-entropy with the error set upsampled
    by --jtt_up (lambda_up) as their code does (anniesch/jtt run_expt.py: the training set
    joined with lambda_up copies of the error set, so an error-set example is served
    1 + lambda_up times an epoch); --jtt_sampling weight weights it lambda_up times in the loss
    instead (the paper's wording), normalised by the weights' sum, an epoch of the training
    set's size. Reads the example index."""

    label = "JTT"
    counters = ("examples_seen",)
    multiclass = True
    reads = ("x", "y", "index")
    options = (Option("jtt_first_epochs", 50, "JTT: epochs the first (ERM) model trains, T "
                      "(SubpopBench: half the training; half of LfF's 100 epochs)",
                      range="> 0"),
               Option("jtt_up", 10.0, "JTT: lambda_up: the error set's extra copies per epoch "
                      "(upsample, a whole number) or its weight (weight); at most 1000 (the "
                      "authors search 20-100): an epoch can grow to 1 + lambda_up times the "
                      "training set", range="[1, 1000]"),
               Option("jtt_sampling", "upsample", "JTT: upsample the error set (the authors') "
                      "or weight it in the loss", choices=("upsample", "weight")),
               Option("jtt_schedule", "restart", "JTT: restart: the second model's lr "
                      "schedule starts again at T, as a fresh run of the authors' does; "
                      "continue: it goes on from the first model's", choices=("restart",
                                                                              "continue")))
    # T and lambda_up, searched as the JTT paper does (their code: lambda_up in 20, 50, 100)
    grid = {"jtt_first_epochs": (50, 10, 1), "jtt_up": (10.0, 50.0, 100.0)}

    def __init__(self, nets, args, train_set=None):
        super().__init__(nets, args)
        self.train_set = train_set
        # the seed's initial weights: the second model starts from them (not checkpointed: a
        # resumed run builds its networks from the same seed first)
        self.initial = {k: {n: t.detach().clone() for n, t in nets[k].state_dict().items()}
                        for k in ("f", "g")}
        self.examples_seen, self.errors, self.share = 0, None, torch.zeros(())
        size = len(train_set) if train_set is not None else 0
        self.switch_at = args.jtt_first_epochs * size

    @classmethod
    def check_args(cls, args):
        problem = super().check_args(args)
        if problem:
            return problem
        if args.mode == "train" and args.jtt_first_epochs >= args.epochs:
            return (f"--jtt_first_epochs {args.jtt_first_epochs} leaves none of --epochs "
                    f"{args.epochs} to JTT's second model: the run would be plain ERM recorded "
                    "as JTT; pass a T below --epochs")
        if args.jtt_sampling == "upsample" and args.jtt_up != int(args.jtt_up):
            return (f"--jtt_up {args.jtt_up}: an upsampled error set is served a whole number "
                    "of times; pass a whole number, or --jtt_sampling weight")
        return None

    def start_epoch(self, epoch, optimizers):
        """At epoch T the first model is done: the error set, then the fresh second model."""
        if self.errors is None and epoch >= self.args.jtt_first_epochs:
            self.second_model(optimizers, next(self.nets["f"].parameters()).device)

    def sampling(self):
        if self.errors is None or self.args.jtt_sampling != "upsample":
            return None
        return {"copies": 1 + int(self.args.jtt_up) * self.errors.long().cpu()}

    def schedule_epoch(self, epoch):
        """The second model is a fresh run in the authors' code (anniesch/jtt: a second
        run_expt.py), so its lr decays as if its training began at T."""
        T = self.args.jtt_first_epochs
        return epoch - T if self.args.jtt_schedule == "restart" and epoch >= T else epoch

    def reported_from(self):
        """JTT reports the second model: epochs T + 1 on (the first T train the ERM model
        that picks the error set; Liu et al. select the second model on validation)."""
        first = self.args.jtt_first_epochs + 1
        return first if first <= self.args.epochs else 1  # too short for a second model

    @torch.no_grad()
    def error_set(self, device):
        """Whether the first model misclassifies each training example (eval mode, in order)."""
        self.nets.eval()
        wrong = torch.zeros(len(self.train_set), dtype=torch.bool, device=device)
        for start in range(0, len(self.train_set), 1000):
            batch = self.train_set.__getitems__(slice(start, start + 1000))
            x, y = batch["x"].to(device), batch["y"].to(device)
            wrong[start:start + len(y)] = self.predict(x).argmax(1) != y
        self.nets.train()
        return wrong

    def second_model(self, optimizers, device):
        """The error set, then f and g back to their initial weights, optimizer state cleared."""
        self.errors = self.error_set(device)
        self.share = self.errors.float().mean()
        for k, state in self.initial.items():
            self.nets[k].load_state_dict(state)
        getattr(optimizers["main"], "optimizer", optimizers["main"]).state.clear()

    def update(self, batch, optimizers):
        x, y, index = batch["x"], batch["y"], batch["index"]
        if self.errors is None and self.examples_seen >= self.switch_at:
            self.second_model({k: getattr(o, "optimizer", o) for k, o in optimizers.items()},
                              x.device)
        zero_all(optimizers)
        logits = self.predict(x)
        losses = per_example_ce(logits, y)
        if self.errors is None or self.args.jtt_sampling == "upsample":
            loss = losses.mean()  # upsampled: the copies are in the batch
        else:
            w = 1.0 + (self.args.jtt_up - 1.0) * self.errors.to(x.device)[index].float()
            loss = (w * losses).sum() / w.sum()
        loss.backward()
        optimizers["main"].step()
        self.examples_seen += len(y)
        return {"loss_cls": losses.detach().mean(), metrics.TRAIN: task_accuracy(logits, y),
                "error_set_share": self.share.to(x.device)}

    def state_dict(self):
        return {"examples_seen": self.examples_seen,
                "errors": None if self.errors is None else self.errors.cpu()}

    def check_state(self, state):
        errors, n = state.get("errors"), len(self.train_set) if self.train_set is not None else 0
        if errors is not None and (not torch.is_tensor(errors) or errors.dtype != torch.bool
                                   or tuple(errors.shape) != (n,)):
            return (f"its error set is not one flag per training example ({n}); it is another "
                    "run's: pass this run's own")
        return super().check_state(state)

    def load_state_dict(self, state):
        self.examples_seen = state.get("examples_seen", 0)
        self.errors = state.get("errors")
        if self.errors is not None:
            self.share = self.errors.float().mean()


@register("dfa")
class DisEnt(LearningFromFailure):
    """Learning Debiased Representation via Disentangled Feature Augmentation (DFA / DisEnt;
    Lee et al., NeurIPS 2021; kakaoenterprise/Learning-Debiased-Disentangled learner.py
    train_ours): an intrinsic encoder f and a bias encoder f_b (16-d features each); the
    intrinsic head g and the bias head g_b both read the 32-d concatenation [f(x), f_b(x)],
    each with the other half detached. LfF's per-example averages and weights w (from the two
    heads' cross-entropies); L_dis = mean w CE(g) + --dfa_lambda_dis GCE(g_b). After step
    --dfa_swap_after the bias features are permuted within the batch, adding --dfa_lambda_swap
    x (mean w CE(g, y) + --dfa_lambda_swap_align GCE(g_b, permuted y)). Both step on one
    backward pass; the lr halves every --dfa_lr_step steps from the swap's start (their
    StepLR, stepped from step 10,000 on). Prediction: g on both encoders' features."""

    label = "DFA"
    counters = ("step",)
    drop_last = True  # their loader drops the last partial batch
    options = (Option("dfa_lambda_dis", 10.0, "DFA: weight of the bias head's GCE in L_dis "
                      "(their lambda_dis_align)", range=">= 0"),
               Option("dfa_lambda_swap", 1.0, "DFA: weight of the swapped-feature loss",
                      range=">= 0"),
               Option("dfa_lambda_swap_align", 10.0, "DFA: weight of the bias head's GCE in "
                      "the swapped loss", range=">= 0"),
               Option("dfa_swap_after", 10000, "DFA: steps before the features are swapped "
                      "(their curr_step)", range=">= 0"),
               Option("dfa_lr_step", 10000, "DFA: steps between lr halvings, counted from "
                      "--dfa_swap_after", range="> 0"),
               Option("dfa_lr_gamma", 0.5, "DFA: lr factor every --dfa_lr_step steps",
                      range="(0, 1]"))
    grid = {"dfa_lambda_dis": (10.0, 1.0), "dfa_swap_after": (10000, 5000)}

    def __init__(self, nets, args, train_set=None):
        super().__init__(nets, args, train_set)
        self.step = 0

    def predict(self, x):
        return self.nets["g"](torch.cat([self.nets["f"](x), self.nets["f_b"](x)], dim=1))

    def check_forward(self, x):
        self.predict(x)
        self.nets["g_b"](torch.cat([self.nets["f"](x), self.nets["f_b"](x)], dim=1))

    def step_lr(self):
        """Their StepLR, stepped once per step from step --dfa_swap_after on."""
        a = self.args
        return a.lr * a.dfa_lr_gamma ** (max(0, self.step - a.dfa_swap_after) // a.dfa_lr_step)

    def heads(self, z_i, z_b):
        """The intrinsic head on [z_i, detached z_b] and the bias head on [detached z_i, z_b]."""
        return (self.nets["g"](torch.cat([z_i, z_b.detach()], dim=1)),
                self.nets["g_b"](torch.cat([z_i.detach(), z_b], dim=1)))

    def update(self, batch, optimizers):
        a = self.args
        x, y, index = batch["x"], batch["y"], batch["index"]
        self._averages(x.device)
        lr = self.step_lr()
        for opt in (optimizers["main"], optimizers["biased"]):
            for group in opt.param_groups:
                group["lr"] = lr
        zero_all(optimizers)
        z_i, z_b = self.nets["f"](x), self.nets["f_b"](x)
        logits_i, logits_b = self.heads(z_i, z_b)
        ce_i, ce_b = per_example_ce(logits_i, y), per_example_ce(logits_b, y)
        w = self.weights(torch.stack([ce_b.detach(), ce_i.detach()]), index, y)
        loss = (ce_i * w).mean() + a.dfa_lambda_dis * gce_loss(logits_b, y, a.lff_q).mean()
        swapped = self.step > a.dfa_swap_after  # their `step > curr_step`
        if swapped:
            perm = torch.randperm(len(y), device=x.device)
            swap_i, swap_b = self.heads(z_i, z_b[perm])
            loss_swap = ((per_example_ce(swap_i, y) * w).mean()
                         + a.dfa_lambda_swap_align * gce_loss(swap_b, y[perm], a.lff_q).mean())
            loss = loss + a.dfa_lambda_swap * loss_swap
        loss.backward()
        optimizers["main"].step()
        optimizers["biased"].step()
        self.step += 1
        return {"loss_cls": ce_i.detach().mean(), "loss_biased": ce_b.detach().mean(),
                "lff_weight": w.mean(), "swapped": ce_i.new_tensor(float(swapped)),
                "step_lr": ce_i.new_tensor(lr), metrics.TRAIN: task_accuracy(logits_i, y),
                f"{metrics.TRAIN}_biased": task_accuracy(logits_b, y)}

    def state_dict(self):
        return {**super().state_dict(), "step": self.step}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.step = state.get("step", 0)
