"""The fast path (--fast auto, and --precision bf16): optional speed, never other numbers.

- resident(): an in-memory dataset lives on the device and each batch is one indexing op
  there (ResidentLoader), in the order the DataLoader would give;
- CapturedStep: on a GPU, a graph-safe method's whole update is recorded once as a CUDA graph
  and replayed (a small network at batch 128 is bound by kernel launches; a replay is one);
- autocast() and channels_last(): bfloat16 matmuls and convolutions, NHWC conv weights.

Only runtime.py imports this module. Without it every run takes the plain path (DataLoader
batches, eager fp32 steps), as --fast off does today.
"""
import math
import sys
import time

import torch
from torch.utils.data import SequentialSampler

from data_handler import ArrayDataset, Batch


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
    if not isinstance(loader.dataset, ArrayDataset):
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


# The self-check's tolerance: a recorded step and an eager step from the same state run the same
# float32 kernels, but summation order may differ (atomics in cuDNN's backward, the CPU kernels'
# alignment-dependent blocking), so a value may differ by a rounding of the update that produced
# it: SELF_CHECK_RTOL of how much the eager step changed that tensor, plus a few ulps of the value
# itself. A stale input or a skipped optimizer step is off by the whole update (a ratio near 1).
# Under bf16 autocast gradients are rounded to 8 bits of mantissa first, hence the looser figure.
SELF_CHECK_RTOL = {False: 1e-3, True: 3e-2}  # keyed by bf16
ULPS = 4 * torch.finfo(torch.float32).eps


class CapturedStep:
    """The training step on a GPU: the method's whole update (forward, backward, optimizer
    steps) recorded once as a CUDA graph and replayed for every full batch.
    - The first `warmup` steps run eagerly on a side stream, so optimizer state (momentum
      buffers) and cuDNN's choices exist before recording (PyTorch's whole-network recipe).
    - Every recording checks itself (self_check): one eager step from the same state on the
      same batch, then the state is put back and the first replay must land on the same
      networks, optimizer state and metrics. On a mismatch a warning names the largest
      difference, the eager result is kept and every later step runs eagerly.
    - Batches of another size (an epoch's last) run eagerly.
    - The recorded optimizer steps keep the learning rates of recording time, so a schedule
      change records again (and checks again).
    - Non-finite gradients are not screened inside the graph: the Solver checks the step's
      metrics after each replay.
    - If recording fails, a warning says why and every later step runs eagerly."""

    def __init__(self, method, optimizers, batch_size, warmup=3, bf16=False):
        # at least one eager step: the optimizer state a first step creates must exist before
        # the self-check puts the state back and the recording reads it
        self.method, self.optimizers, self.warmup = method, optimizers, max(warmup, 1)
        self.batch_size, self.rtol = batch_size, SELF_CHECK_RTOL[bool(bf16)]
        self.raw = {k: o.optimizer for k, o in optimizers.items()}
        self.replay = self._graph = self.key = self.inputs = self.outputs = None
        self.stream, self.failed = None, False
        self.eager_steps = self.replays = self.captures = 0
        self.checks = []  # one per recording: passed, the worst difference, seconds

    def _key(self, batch):
        lrs = tuple(g["lr"] for o in self.raw.values() for g in o.param_groups)
        return tuple((k, t.shape, t.dtype) for k, t in batch.items()), lrs

    def __call__(self, batch):
        key = self._key(batch)
        if key == self.key:
            for name, t in batch.items():
                self.inputs[name].copy_(t)
            self.replay()
            self.replays += 1
            return self.outputs
        if (self.failed or self.eager_steps < self.warmup
                or batch.size != self.batch_size):
            return self._eager(batch)
        return self._capture(batch, key)

    def _eager(self, batch, optimizers=None, count=True):
        optimizers = optimizers or self.optimizers
        if not batch["x"].is_cuda:
            out = self.method.update(batch, optimizers)
        else:
            self.stream = self.stream or torch.cuda.Stream(batch["x"].device)
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                out = self.method.update(batch, optimizers)
            torch.cuda.current_stream().wait_stream(self.stream)
        self.eager_steps += count
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
        started = time.perf_counter()
        before = self._state()
        expected_out = clone(self._eager(batch, self.raw, count=False))
        expected = self._state()
        restore(self._tensors(), before)
        sync(batch["x"])
        extra = time.perf_counter() - started
        # the static inputs hold other values while recording (images negated, labels rolled
        # one place, all still valid), so a replay that kept reading recording-time data (a
        # stale input) differs from the eager step below; a permuted batch alone would not
        self.inputs = Batch({k: 0.5 - t if t.is_floating_point() else torch.roll(t, 1, 0)
                             for k, t in batch.items()})
        try:
            self.replay, self.outputs = self._record()
        except Exception as exc:  # a method that is not graph-safe after all, a driver limit
            restore(self._tensors(), expected)
            self._give_up()
            print(f"warning: recording the training step as a CUDA graph failed ({exc}); "
                  "continuing with eager steps (pass --fast off to skip the attempt).",
                  file=sys.stderr)
            self.eager_steps += 1
            return expected_out
        for name, t in batch.items():
            self.inputs[name].copy_(t)
        self.replay()
        check = self._check(before, expected, expected_out, extra)
        if not check["passed"]:
            restore(self._tensors(), expected)  # the eager step's result: the run stays correct
            self._give_up()
            print(f"warning: the recorded training step (CUDA graph) disagrees with an eager "
                  f"step from the same state: largest difference {check['difference']:.3g} in "
                  f"{check['in']} (allowed {check['allowed']:.3g}); this step keeps the eager "
                  "result and every later step runs eagerly (correct, slower). Please report it "
                  "with results.json's step_path; --fast off skips the recording.",
                  file=sys.stderr)
            self.eager_steps += 1
            return expected_out
        self.key = key
        self.captures += 1
        self.replays += 1
        return self.outputs

    def _give_up(self):
        self.failed, self.key = True, None
        self.replay = self._graph = None

    # ------------------------------------------------------------------ the self-check
    def _tensors(self):
        """Every tensor a step may change, by name: the networks' parameters and buffers (BatchNorm
        statistics) and the optimizers' state (momentum buffers)."""
        nets = self.method.nets
        names = {id(p): n for n, p in nets.named_parameters()}
        out = {f"parameter {n}": p for n, p in nets.named_parameters()}
        out.update({f"buffer {n}": b for n, b in nets.named_buffers()})
        for key, opt in self.raw.items():
            for p, state in opt.state.items():
                for k, v in state.items():
                    if torch.is_tensor(v):
                        out[f"optimizer {key}: {k} of {names.get(id(p), '?')}"] = v
        return out

    def _state(self):
        return {n: t.detach().clone() for n, t in self._tensors().items()}

    def _check(self, before, expected, expected_out, extra):
        """Compare the first replay's state and metrics with the eager step's (SELF_CHECK_RTOL);
        record the outcome, the largest difference relative to what it was allowed, and the check's
        own cost (the eager step, the state copies and this comparison: `extra` + its time)."""
        started = time.perf_counter()
        sync(self.inputs["x"])
        got, worst = self._tensors(), (0.0, 0.0, 0.0, "(all equal)")
        for name in expected.keys() | got.keys() | expected_out.keys() | self.outputs.keys():
            is_metric = name in expected_out
            want = expected_out.get(name) if is_metric else expected.get(name)
            have = self.outputs.get(name) if is_metric else got.get(name)
            if want is None or have is None or want.shape != have.shape:
                worst = (math.inf, math.inf, 0.0, f"{name} (missing or reshaped)")
                break
            want, have = want.detach().double(), have.detach().double()
            scale = want.abs().max() if want.numel() else want.new_zeros(())
            if is_metric:  # no 'before' for a metric: relative to the value itself
                allowed = self.rtol * scale
            else:
                prior = before.get(name)
                change = ((want - prior.double()).abs().max() if prior is not None
                          and want.numel() else scale)
                allowed = self.rtol * change + ULPS * scale
            diff = float((have - want).abs().max()) if want.numel() else 0.0
            diff = math.inf if math.isnan(diff) else diff
            allowed = float(allowed)
            ratio = diff / allowed if allowed > 0 else (0.0 if diff == 0 else math.inf)
            if ratio > worst[0]:
                worst = (ratio, diff, allowed, ("metric " if is_metric else "") + name)
        ratio, diff, allowed, name = worst
        check = {"passed": ratio <= 1.0, "difference": diff, "allowed": allowed, "in": name,
                 "seconds": round(extra + time.perf_counter() - started, 4)}
        self.checks.append(check)
        return check

    def self_check(self):
        """The outcome for the run's record (provenance step_path)."""
        if not self.checks:
            return {"outcome": "not run (no step was recorded)"}
        failed = [c for c in self.checks if not c["passed"]]
        worst = failed[0] if failed else max(
            self.checks, key=lambda c: c["difference"] / c["allowed"] if c["allowed"] else 0)
        return {"outcome": "failed, fell back to eager steps" if failed else "passed",
                "checks": len(self.checks), "largest_difference": worst["difference"],
                "allowed": worst["allowed"], "in": worst["in"], "rtol": self.rtol,
                "seconds": round(sum(c["seconds"] for c in self.checks), 4)}


def sync(t):
    """Wait for the device's queued work (timing, and reading a replay's results)."""
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


def clone(outputs):
    return {k: v.detach().clone() for k, v in outputs.items()}


def restore(tensors, saved):
    """Put saved values back into the same tensors (a recording reads fixed addresses); state
    that appeared since (a momentum buffer a first step creates) is not in saved and stays."""
    with torch.no_grad():
        for name, t in tensors.items():
            if name in saved:
                t.copy_(saved[name])
