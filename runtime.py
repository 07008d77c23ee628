"""Where and how a run computes: the one reading of --device, --fast, --precision and --tf32.

main.py resolves them once into a Runtime; the loaders, the Solver and the fast path receive
it. The fast path (fast.py) is optional: without that module every run takes the plain path
(DataLoader batches, eager steps), as --fast off does.
"""
import contextlib
import os
import re
import sys

import torch

from utils import ArgError, UserError, dist_rank, dist_world

try:
    import fast
except ImportError:  # the fast path removed: the eager trainer still runs
    fast = None

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?$")


def resolve_device(name, local_rank=0):
    """Turn --device {auto,cpu,cuda[:N]} into a torch.device once; everything else receives it.
    Under torchrun each process takes the GPU of its local rank."""
    if not DEVICE_PATTERN.match(name):
        raise ArgError(f"--device {name} is not a device; use auto, cpu, cuda or cuda:N.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; "
                        "use --device cpu (or auto).")
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise ArgError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) are "
                       "visible (cuda:0 ...); pick one of them.")
    return device


def set_tf32(enabled):
    """Float32 convolutions and matmuls in full precision unless --tf32 on. PyTorch lets cuDNN
    convolutions use TF32 by default on Ampere and later GPUs; the reference trained on GPUs
    without it, so fp32 means IEEE float32 here. Process-wide, set once per run (no effect on
    the CPU)."""
    # the long-standing switches (torch 2.11 and 2.14 alike): torch's newer fp32_precision
    # switches make any later read of these raise once the two are mixed
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled


def cpu_has_bf16():
    """Whether oneDNN computes bfloat16 natively on this CPU (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def init_distributed(device_name):
    """Join the process group torchrun set up (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs.
    Returns the local rank (0 without torchrun)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return local_rank


class Runtime:
    """The device, the processes, and which fast-path pieces a run uses."""

    def __init__(self, args, local_rank=0):
        if args.precision == "bf16" and fast is None:
            raise ArgError("--precision bf16 needs the fast path (fast.py), which this copy "
                           "lacks; pass --precision fp32.")
        self.device = resolve_device(args.device, local_rank)
        if args.precision == "bf16" and self.device.type == "cpu" and not cpu_has_bf16():
            print(f"warning: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native "
                  "bfloat16, so --precision bf16 runs about 10x slower than fp32 here "
                  "(docs/speed.md); pass --precision fp32.", file=sys.stderr)
        self.rank, self.world = dist_rank(), dist_world()
        self.is_main = self.rank == 0
        self.fast = args.fast == "auto" and fast is not None
        self.bf16 = args.precision == "bf16"
        set_tf32(args.tf32 == "on")
        # NHWC conv weights for bf16 (the layout tensor cores read). Not for fp32 on the CPU:
        # measured on a 2-core AVX2 CPU, NHWC changed nothing beyond noise (docs/speed.md)
        self.nhwc = self.bf16
        # a recorded step: a CUDA device, one process, SGD (its update has no host-side state)
        # and no --skip_nonfinite (skipping a step needs a host decision inside it)
        self.graphs = (self.fast and self.device.type == "cuda" and self.world == 1
                       and args.optimizer == "sgd" and not args.skip_nonfinite)

    def loader(self, loader):
        """--fast auto: an in-memory dataset's batches are served from the device."""
        return fast.resident(loader, self.device) if self.fast else loader

    def place(self, nets):
        """The networks on the device, conv weights NHWC where that is faster (self.nhwc)."""
        nets = nets.to(self.device)
        return fast.channels_last(nets) if self.nhwc else nets

    def autocast(self):
        """bf16 autocast for training and evaluation; fp32 (the reference) by default."""
        return fast.autocast(self.device) if self.bf16 else contextlib.nullcontext()

    def recorded_step(self, method, optimizers, train_loader):
        """The method's update recorded as a CUDA graph (fast.CapturedStep) when it is
        graph-safe (fixed shapes, no host sync) and the run allows it; else None (eager)."""
        if self.graphs and method.graph_safe:
            return fast.CapturedStep(method, optimizers, train_loader.batch_size,
                                    bf16=self.bf16)
        return None
