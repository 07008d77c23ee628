"""LNL's stage 2 starts as the authors' trainer does: f, g's weights and optimizer state from the
stage-1 checkpoint (momentum, and its lr for the first epoch), then the usual schedule."""
import pytest
import torch
from torch import nn

import lifecycle
import main as cli
from runtime import Runtime
from solver import Solver
from data_handler import Batch
from safe_files import save_torch
from utils import UserError

STAGE1_LR = 0.0042  # a decayed stage-1 lr, distinct from stage 2's --lr 0.001
X, Y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])


def solver(*flags):
    torch.manual_seed(0)
    nets = nn.ModuleDict({"f": nn.Linear(4, 5), "g": nn.Linear(5, 3), "h": nn.Linear(5, 2)})
    _, args = cli.parse_args(["--method", "baseline", "--lr_decay_period", "1",
                              "--lr_decay_rate", "0.5", "--device", "cpu", *flags])
    return Solver(args, nets, None, None, Runtime(args))


def init_from(s, path):
    """Stage 2's start as main.py makes it: lifecycle reads and checks the checkpoint, then
    hands its state to the Solver."""
    args = lifecycle.with_values(s.args, init_checkpoint=path)
    lifecycle.restore(s, lifecycle.init_start(cli.build_parser(), args))


@pytest.fixture
def stage1(tmp_path):
    s = solver("--lr", "0.01")
    for _ in range(2):  # momentum buffers that are not the last gradient
        s.step(Batch({"x": X, "y": Y}))
    for group in s.optimizers["main"].param_groups:
        group["lr"] = STAGE1_LR
    path = str(tmp_path / "stage1.pth")
    save_torch(s.state(), path)
    return s, path


def params(s):
    return [p for k in ("f", "g") for p in s.nets[k].parameters()]


def test_stage_two_carries_momentum_and_the_checkpoints_lr_for_the_first_epoch(stage1):
    old, path = stage1
    s = solver("--lr", "0.001")
    init_from(s, path)
    opt = s.optimizers["main"]
    assert [g["lr"] for g in opt.param_groups] == [STAGE1_LR]
    bufs = [opt.optimizer.state[p]["momentum_buffer"].clone() for p in params(s)]
    old_bufs = [old.optimizers["main"].optimizer.state[p]["momentum_buffer"] for p in params(old)]
    assert all(torch.equal(a, b) for a, b in zip(bufs, old_bufs))
    # the first step is SGD's: buf <- 0.9 buf + grad + wd p; p <- p - lr_checkpoint * buf
    before = [p.detach().clone() for p in params(s)]
    s.step(Batch({"x": X, "y": Y}))
    for p, p0, buf in zip(params(s), before, bufs):
        expect = p0 - STAGE1_LR * (0.9 * buf + p.grad + 5e-4 * p0)
        assert torch.allclose(p.detach(), expect, atol=1e-7)
    # from epoch 1 on the schedule runs on this run's --lr: 0.001 * 0.5 ** 1
    for sched in s.schedulers.values():
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0005)


def test_fresh_optimizer_flag_takes_the_weights_only(stage1):
    old, path = stage1
    s = solver("--lr", "0.001", "--init_fresh_optimizer")
    init_from(s, path)
    assert all(torch.equal(p, q) for p, q in zip(params(s), params(old)))
    assert s.optimizers["main"].param_groups[0]["lr"] == 0.001
    assert not s.optimizers["main"].optimizer.state


def test_another_optimizer_type_names_the_fresh_flag(stage1):
    _, path = stage1
    with pytest.raises(UserError, match="--init_fresh_optimizer"):
        init_from(solver("--lr", "0.001", "--optimizer", "adam"), path)
