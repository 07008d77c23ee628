"""The fast path (--fast auto, and --precision bf16): optional speed, never other numbers.

- resident(): an in-memory dataset lives on the device and each batch is one indexing op
  there (ResidentLoader), in the order the DataLoader would give;
- CapturedStep: on a GPU, a graph-safe method's whole update is recorded once as a CUDA graph
  and replayed (a small network at batch 128 is bound by kernel launches; a replay is one);
- autocast() and channels_last(): bfloat16 matmuls and convolutions, NHWC conv weights.

Only runtime.py imports this module. Without it every run takes the plain path (DataLoader
batches, eager fp32 steps), as --fast off does today.
"""
import sys

import torch
from torch.utils.data import SequentialSampler

from data_handler import TripletDataset


class ResidentLoader:
    """The whole dataset moved to the device once; each batch is one indexing op there, with no
    DataLoader, worker or host-to-device copy per step. It yields the batches a DataLoader with
    the same sampler would, in the same order, and offers the same attributes the Solver reads."""

    def __init__(self, dataset, batch_size, sampler, device, drop_last=False):
        self.dataset = dataset.to(device)
        self.batch_size, self.sampler, self.device = batch_size, sampler, device
        self.drop_last = drop_last

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        if self.sampler is None:  # evaluation: the stored order
            for start in range(0, len(self.dataset), self.batch_size):
                yield self.dataset.__getitems__(slice(start, start + self.batch_size))
            return
        order = torch.tensor(list(self.sampler), dtype=torch.long, device=self.device)
        for k in range(len(self)):
            yield self.dataset.__getitems__(order[k * self.batch_size:(k + 1) * self.batch_size])


def resident(loader, device):
    """The DataLoader's batches served from the device when its dataset is in memory (a
    ResidentLoader); a file-backed dataset keeps its DataLoader."""
    if not isinstance(loader.dataset, TripletDataset):
        return loader
    sampler = None if isinstance(loader.sampler, SequentialSampler) else loader.sampler
    return ResidentLoader(loader.dataset, loader.batch_size, sampler, device, loader.drop_last)


def autocast(device):
    """--precision bf16: matmuls and convolutions in bfloat16, losses and weights in float32
    (torch.autocast). The cache of cast weights is off: it would outlive a recorded CUDA
    graph's step."""
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


def channels_last(nets):
    """Conv weights in NHWC, the layout bfloat16 tensor cores read."""
    return nets.to(memory_format=torch.channels_last)


class CapturedStep:
    """The training step on a GPU: the method's whole update (forward, backward, optimizer
    steps) recorded once as a CUDA graph and replayed for every full batch.
    - The first `warmup` steps run eagerly on a side stream, so optimizer state (momentum
      buffers) and cuDNN's choices exist before recording (PyTorch's whole-network recipe).
    - Batches of another size (an epoch's last) run eagerly.
    - The recorded optimizer steps keep the learning rates of recording time, so a schedule
      change records again.
    - Non-finite gradients are not screened inside the graph: the Solver checks the step's
      metrics after each replay.
    - If recording fails, a warning says why and every later step runs eagerly."""

    def __init__(self, method, optimizers, batch_size, warmup=3):
        self.method, self.optimizers, self.warmup = method, optimizers, warmup
        self.batch_size = batch_size
        self.raw = {k: o.optimizer for k, o in optimizers.items()}
        self.replay = self._graph = self.key = self.inputs = self.outputs = None
        self.stream, self.failed = None, False
        self.eager_steps = self.replays = self.captures = 0

    def _key(self, batch):
        lrs = tuple(g["lr"] for o in self.raw.values() for g in o.param_groups)
        return tuple((t.shape, t.dtype) for t in batch), lrs

    def __call__(self, batch):
        key = self._key(batch)
        if key == self.key:
            for static, t in zip(self.inputs, batch):
                static.copy_(t)
            self.replay()
            self.replays += 1
            return self.outputs
        if (self.failed or self.eager_steps < self.warmup
                or batch[0].shape[0] != self.batch_size):
            return self._eager(batch)
        return self._capture(batch, key)

    def _eager(self, batch):
        if not batch[0].is_cuda:
            out = self.method.update(batch, self.optimizers)
        else:
            self.stream = self.stream or torch.cuda.Stream(batch[0].device)
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                out = self.method.update(batch, self.optimizers)
            torch.cuda.current_stream().wait_stream(self.stream)
        self.eager_steps += 1
        return out

    def _record(self):
        """Record one update on the static inputs; returns (replay, static outputs). Nothing
        runs while recording. It records on the warm-up stream, whose library handles and
        workspaces already exist; thread_local: a DataLoader's pin-memory thread may allocate
        meanwhile."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            outputs = self.method.update(self.inputs, self.raw)
        self._graph = graph  # keeps the recording (and its memory pool) alive
        return graph.replay, outputs

    def _capture(self, batch, key):
        self.replay = self._graph = None  # frees the previous recording (a new learning rate)
        self.inputs = [t.clone() for t in batch]
        try:
            self.replay, self.outputs = self._record()
        except Exception as exc:  # a method that is not graph-safe after all, a driver limit
            self.failed, self.key = True, None
            print(f"warning: recording the training step as a CUDA graph failed ({exc}); "
                  "continuing with eager steps (pass --fast off to skip the attempt).",
                  file=sys.stderr)
            return self._eager(batch)
        self.key = key
        self.captures += 1
        self.replay()
        self.replays += 1
        return self.outputs
