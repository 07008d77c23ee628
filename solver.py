"""The Solver: epoch loop, evaluation, logging and checkpoints around a training method.

Optimizers and schedule follow the LNL reference (Kim et al., CVPR 2019, authors' trainer):
SGD with momentum and weight decay (or Adam, --optimizer adam, for the IRM and AND-mask
benchmarks), one optimizer per parameter group the method names, and lr x lr_decay_rate every
lr_decay_period epochs.

Under torchrun the networks are wrapped in DistributedDataParallel (one wrapper per network, so
each of LNL's two backward passes reduces exactly the networks it used), training metrics are
averaged over ranks, and only rank 0 writes files.
"""
import json
import math
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch import nn, optim
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

import records
from checkpoints import (check_compatible, check_init_optimizer, newest_readable,
                         read_checkpoint)
from methods import METHODS
from run_folder import checkpoint_dir, experiment_dir
from utils import (BadInput, RunStopped, atomic_json_dump, atomic_np_save, atomic_torch_save,
                   dist_rank, dist_world, format_duration, log, matrix_figure,
                   progress, rng_state, save_matrix_png, set_rng_state)

def trim_metrics(path, epoch):
    """Drop metric lines past the checkpoint a run resumes from (they will be redone);
    return the last line kept, {} when there is none."""
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    rows = [r for r in rows if r["epoch"] <= epoch]
    with open(path, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return rows[-1] if rows else {}


class GuardedOptimizer:
    """An optimizer whose step() refuses non-finite gradients (and records that it did), so a
    diverging step never reaches the weights."""

    def __init__(self, optimizer):
        self.optimizer, self.skipped = optimizer, False

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none=False):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self):
        grads = [p.grad for group in self.param_groups for p in group["params"]
                 if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            self.skipped = True
            return
        self.optimizer.step()

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state)


class EpochMeter:
    """Example-weighted sums of the step metrics over an epoch. They stay on the device (one
    in-place add per step, read once per epoch) and are checkpointed as plain floats, so an
    epoch can resume from its middle."""

    def __init__(self, state=None):
        state = state or {}
        if isinstance(state, (tuple, list)):  # checkpoints before 2026-11-23: (sums, count)
            sums = dict(state[0])
            state = {"sums": sums, "count": state[1], "skipped": sums.pop("nonfinite_skipped", 0)}
        self.saved = dict(state.get("sums", {}))
        self.count, self.skipped = state.get("count", 0), state.get("skipped", 0)
        self.keys, self.acc = None, None

    def add(self, keys, values, n):
        if self.acc is None or keys != self.keys:
            # float64, as the Python floats of a resumed epoch's saved sums
            self.saved, self.keys = self.sums(), keys
            self.acc = torch.zeros_like(values, dtype=torch.float64)
        self.acc.add_(values, alpha=n)
        self.count += n

    def sums(self):
        out = dict(self.saved)
        if self.acc is not None:
            for k, v in zip(self.keys, self.acc.tolist()):
                out[k] = out.get(k, 0.0) + v
        return out

    def state(self):
        return {"sums": self.sums(), "count": self.count, "skipped": self.skipped}


class CapturedStep:
    """The fast path's training step on a GPU (--fast auto): the method's whole update (forward,
    backward, optimizer steps) recorded once as a CUDA graph and replayed for every full batch.
    A small network at batch 128 is bound by kernel launches, and a replay is one launch.
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


def wrap_for_ddp(nets, device):
    """One DistributedDataParallel per network that has parameters (LNL's second update uses
    f and h but not g; separate wrappers keep every reduction complete)."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.ModuleDict({k: DistributedDataParallel(m, device_ids=ids)
                          if any(p.requires_grad for p in m.parameters()) else m
                          for k, m in nets.items()})


def use_cuda_graph(args, device, method, world):
    """Whether training steps are recorded as CUDA graphs: --fast auto, a CUDA device, one
    process, a graph-safe method (fixed shapes, no host sync), SGD (its update has no host-side
    state), and no --skip_nonfinite (skipping a step needs a host decision inside it)."""
    return (args.fast == "auto" and device.type == "cuda" and world == 1
            and method.graph_safe and args.optimizer == "sgd" and not args.skip_nonfinite)


class Solver:
    """Owns data, epoch loop, evaluation, TensorBoard logs and checkpoints for one experiment."""

    def __init__(self, args, nets, train_loader, test_loader, device, extra_loaders=None):
        self.args, self.device = args, device
        self.rank, self.world = dist_rank(), dist_world()
        self.is_main = self.rank == 0
        self.nets = nets.to(device)
        if args.precision == "bf16":
            self.nets.to(memory_format=torch.channels_last)  # conv weights NHWC: tensor cores
        train_nets = wrap_for_ddp(self.nets, device) if self.world > 1 else self.nets
        self.train_loader, self.test_loader = train_loader, test_loader
        self.extra_loaders = extra_loaders or {}
        self.last_eval = None  # (labels, preds, bias, n_classes) of the latest test evaluation
        self.method = METHODS[args.method](train_nets, args)
        # evaluation reads the plain networks: no collective calls outside training steps
        self.eval_method = METHODS[args.method](self.nets, args)
        self.optimizers = {name: GuardedOptimizer(self._optimizer(params))
                           for name, params in self.method.param_groups().items()}
        decay = lambda epoch: args.lr_decay_rate ** (epoch // args.lr_decay_period)
        self.schedulers = {name: optim.lr_scheduler.LambdaLR(opt.optimizer, decay)
                           for name, opt in self.optimizers.items()}
        self.epoch = 0           # epochs completed
        self.step_in_epoch = 0   # steps completed in the current epoch
        self.partial = None      # EpochMeter of the current epoch so far
        self.stop_signal = 0
        self.init_source = None  # the checkpoint a stage-2 run started from (path, epoch, hash)
        self.captured = (CapturedStep(self.method, self.optimizers, train_loader.batch_size)
                         if use_cuda_graph(args, device, self.method, self.world) else None)

    def _optimizer(self, params):
        a = self.args
        if a.optimizer == "adam":
            return optim.Adam(params, lr=a.lr, weight_decay=a.weight_decay)
        return optim.SGD(params, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)

    # ------------------------------------------------------------------ batches and eval
    def _to_device(self, batch):
        return tuple(t.to(self.device, non_blocking=True) for t in batch)

    @torch.no_grad()
    def predict_all(self, loader):
        """Class probabilities and labels over a loader, in order."""
        self.nets.eval()
        probs, labels = [], []
        for batch in progress(loader, desc="eval"):
            x, y, _ = self._to_device(batch)
            with self.autocast():
                logits = self.eval_method.predict(x).float()
            if logits.shape[1] == 1:  # binary task: one logit -> P(y=0), P(y=1)
                p1 = torch.sigmoid(logits)
                probs.append(torch.cat([1 - p1, p1], dim=1).cpu())
            else:
                probs.append(torch.softmax(logits, dim=1).cpu())
            labels.append(y.cpu())
        return torch.cat(probs).numpy(), torch.cat(labels).numpy()

    def evaluate(self, loader):
        probs, labels = self.predict_all(loader)
        return float((probs.argmax(1) == labels).mean())

    def evaluate_all(self):
        """Test accuracy, the paper's bias diagnostic on the test set (records.bias_agreement)
        and the accuracy on every extra evaluation set; the test predictions are kept for the
        confusion figures."""
        probs, labels = self.predict_all(self.test_loader)
        preds = probs.argmax(1)
        bias = self.test_loader.dataset.bias_index[:len(labels)]
        self.last_eval = (labels, preds, bias, probs.shape[1])
        out = {"test_acc": float((preds == labels).mean())}
        agreement = records.bias_agreement(preds, bias, probs.shape[1])
        if agreement is not None:
            out["bias_agreement"] = agreement
        out.update({f"{n}_acc": self.evaluate(l) for n, l in self.extra_loaders.items()})
        return out

    # ------------------------------------------------------------------ training steps
    def _stop_requested(self):
        """A signal on any rank stops every rank after the same step."""
        flag = self.stop_signal
        if self.world > 1:
            t = torch.tensor([flag], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = int(t.item())
        self.stop_signal = flag
        return flag != 0

    def _nonfinite(self, values):
        skipped = any(o.skipped for o in self.optimizers.values())
        for o in self.optimizers.values():
            o.skipped = False
        return skipped or not bool(torch.isfinite(values).all())

    def _diverged(self, stats):
        last = os.path.join(checkpoint_dir(self.args), "last.pth")
        good = last if os.path.exists(last) else "none written yet"
        values = ", ".join(f"{k}={float(v):.4g}" for k, v in stats.items())
        weights = ("no non-finite gradient reached the weights" if self.captured is None else
                   "the recorded step had already updated the weights")
        lrs = [g["lr"] for o in self.optimizers.values() for g in o.param_groups]
        advice = ("the learning rate itself is not finite: start again with a finite --lr "
                  "(and --overwrite)" if not all(map(math.isfinite, lrs)) else
                  "Lower --lr and --resume, or pass --skip_nonfinite to skip such steps")
        return RunStopped(
            f"stopped: non-finite loss at epoch {self.epoch + 1}, "
            f"step {self.step_in_epoch + 1} "
            f"({values}); {weights}. Last good checkpoint: {good}. {advice}.", 1)

    def autocast(self):
        """--precision bf16: matmuls and convolutions in bfloat16, losses and weights in
        float32 (torch.autocast). Off (fp32, the reference) by default. The cache of cast
        weights is off: it would outlive a recorded CUDA graph's step."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False,
                              enabled=self.args.precision == "bf16")

    def step(self, batch):
        """One training step through the method (replayed from a CUDA graph when captured)."""
        with self.autocast():
            if self.captured is not None:
                return self.captured(batch)
            return self.method.update(batch, self.optimizers)

    def train_epoch(self):
        """Train from the current position in the epoch to its end (or to a stop signal)."""
        self.nets.train()
        sampler = self.train_loader.sampler
        sampler.set_epoch(self.epoch)
        sampler.set_start(self.step_in_epoch * self.train_loader.batch_size)
        meter = self.partial or EpochMeter()
        bar = progress(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.args.epochs}")
        for batch in bar:
            batch = self._to_device(batch)
            stats = self.step(batch)
            keys = tuple(stats)
            values = torch.stack([stats[k].float() for k in keys])
            if self._nonfinite(values):
                if not self.args.skip_nonfinite:
                    raise self._diverged(stats)
                meter.skipped += 1
            else:
                meter.add(keys, values, batch[0].shape[0])
            self.step_in_epoch += 1
            if not bar.disable and self.step_in_epoch % 20 == 0:  # a read syncs the device
                bar.set_postfix(loss=f"{float(stats.get('loss_cls', 0.0)):.3f}")
            self.partial = meter
            if self._stop_requested():
                return None
        self.step_in_epoch, self.partial = 0, None
        sums = meter.sums()
        keys = sorted(sums)
        totals = torch.tensor([sums[k] for k in keys] + [meter.count, meter.skipped],
                              dtype=torch.float64, device=self.device)
        if self.world > 1:  # average over every rank's examples
            dist.all_reduce(totals)
        totals = totals.tolist()
        count, skipped = totals[-2], totals[-1]
        out = {k: totals[i] / max(count, 1) for i, k in enumerate(keys)}
        if self.args.skip_nonfinite:
            out["nonfinite_skipped"] = skipped
        return out

    # ------------------------------------------------------------------ checkpoints
    def state(self):
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "partial": self.partial.state() if self.partial else None,
                "args": vars(self.args),
                "nets": {k: m.state_dict() for k, m in self.nets.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "method": self.method.state_dict(), "rng": rng_state(),
                "init": self.init_source}

    def save_checkpoint(self, force=False):
        """last.pth every --checkpoint_every epochs (and when forced), epoch_XXXX.pth every
        --save_every epochs and at the end; rank 0 only."""
        if not self.is_main:
            return
        folder = checkpoint_dir(self.args)
        state = self.state()
        final = self.epoch == self.args.epochs and not self.step_in_epoch
        if force or final or self.epoch % self.args.checkpoint_every == 0:
            atomic_torch_save(state, os.path.join(folder, "last.pth"))
        if not self.step_in_epoch and (self.epoch % self.args.save_every == 0 or final):
            atomic_torch_save(state, os.path.join(folder, f"epoch_{self.epoch:04d}.pth"))

    def load_nets(self, path, modules=("f", "g", "h"), ckpt=None):
        ckpt = ckpt or read_checkpoint(path)
        check_compatible(ckpt.get("args", {}), self.args, path)
        for k in modules:
            if k in ckpt["nets"]:
                self.nets[k].load_state_dict(ckpt["nets"][k])
        return ckpt

    def init_from(self, path):
        """Stage 2's start, as in the LNL authors' trainer (docs/references.md): f, g's weights
        from a stage-1 checkpoint and, unless --init_fresh_optimizer, their optimizer's state
        too: momentum buffers, and the saved learning rate, which holds for the first epoch
        until the schedule (base --lr) sets it from epoch 1 on. The other hyperparameters are
        the current flags'; h and its optimizer start fresh."""
        ckpt = self.load_nets(path, modules=("f", "g"))
        if self.args.init_fresh_optimizer:
            log(f"initialised f, g from {path} (fresh optimizer)")
            return
        check_init_optimizer(ckpt, self.args, path)  # main.py checked it before any write
        opt = self.optimizers["main"]
        current = [{k: v for k, v in g.items() if k not in ("params", "lr")}
                   for g in opt.param_groups]
        opt.load_state_dict(ckpt["optimizers"]["main"])
        for group, hyper in zip(opt.param_groups, current):
            group.update(hyper)  # keeps the checkpoint's lr; initial_lr stays this run's --lr
        log(f"initialised f, g and their optimizer state from {path} "
            f"(lr {opt.param_groups[0]['lr']:.3g} for the first epoch)")

    def resume(self):
        """Continue from the newest readable checkpoint of this experiment (main.py has checked
        that one exists and belongs to this run); an unreadable one is reported by name and
        the next older one is tried."""
        path, ckpt = newest_readable(checkpoint_dir(self.args), lambda m: log(m, err=True))
        if ckpt is None:
            log(f"no checkpoint to resume from in {checkpoint_dir(self.args)}: starting a new run")
            return False
        self.load_nets(path, ckpt=ckpt)
        for k, o in self.optimizers.items():
            o.load_state_dict(ckpt["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(ckpt["schedulers"][k])
        self.method.load_state_dict(ckpt.get("method", {}))
        set_rng_state(ckpt["rng"])
        self.epoch = ckpt["epoch"]
        self.step_in_epoch = ckpt.get("step_in_epoch", 0)
        partial = ckpt.get("partial")
        self.partial = EpochMeter(partial) if partial else None
        self.init_source = ckpt.get("init")
        where = f", {self.step_in_epoch} steps into the next" if self.step_in_epoch else ""
        log(f"resumed from {path} (epoch {self.epoch} of {self.args.epochs} done{where})")
        return True

    # ------------------------------------------------------------------ train / test
    def _on_signal(self, signum, frame):
        self.stop_signal = signum

    def train(self):
        """Train to --epochs (continuing or initialising as asked); write results.json.
        SIGINT/SIGTERM finish the current step, save a checkpoint and raise RunStopped."""
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._train()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)

    def _train(self):
        args, out = self.args, experiment_dir(self.args)
        started = time.time()
        resumed = args.resume and self.resume()
        if not resumed and args.init_checkpoint:
            self.init_from(args.init_checkpoint)
        metrics_path = os.path.join(out, "metrics.jsonl")
        last = trim_metrics(metrics_path, self.epoch) if resumed and self.is_main else {}
        writer = (SummaryWriter(os.path.join(out, "logs"), purge_step=self.epoch + 1)
                  if self.is_main else None)
        self.clock = (time.time(), self.epoch)  # for the ETA: this process's pace
        try:
            while self.epoch < args.epochs:
                stats = self.run_epoch()
                if stats is None:
                    raise self._interrupted()
                last = stats
                if self.is_main:
                    self._log(writer, metrics_path, last)
                self.save_checkpoint()
            if "test_acc" not in last or self.last_eval is None:
                # nothing was left to train: evaluate the finished run (its figures need it)
                last.update(self.evaluate_all())
            last.pop("epoch", None)
            if self.is_main:  # one event file per run: the final record goes to the same writer
                record = records.results_record(args, self.device, started, self.epoch, last,
                                                self.world)
                atomic_json_dump(record, os.path.join(out, "results.json"))
                self._log_final(writer, record)
                log(f"final test_acc={last['test_acc']:.4f} ({args.experiment_name}, "
                    f"epoch {self.epoch}) -> {out}")
        except BadInput as err:  # keep every step done so far
            self.save_checkpoint(force=True)
            raise BadInput(f"{err} Progress up to epoch {self.epoch + 1}, step "
                           f"{self.step_in_epoch} is saved in {checkpoint_dir(args)}; after "
                           "fixing the input, continue with the same command plus --resume.") \
                from None
        finally:
            if writer is not None:
                writer.close()
        return last["test_acc"]

    def _log_final(self, writer, record):
        """TensorBoard: the run's configuration and final metrics in the HPARAMS view, and the
        final epoch's confusion matrices as figures."""
        metrics = {k: v for k, v in record.items() if k.endswith("_acc")
                   or k in ("bias_agreement", "epochs")}
        records.log_hparams(writer, record["config"], metrics, self.epoch)
        for name, panel in records.confusion_panels(
                self.args, *self.last_eval, epoch=self.epoch, checkpoint="final weights"):
            writer.add_figure(f"confusion/{name}", matrix_figure(*panel), self.epoch)

    def _interrupted(self):
        self.save_checkpoint(force=True)
        name = signal.Signals(self.stop_signal).name
        return RunStopped(
            f"stopped by {name} at epoch {self.epoch + 1}, step {self.step_in_epoch}; "
            f"checkpoint saved in {checkpoint_dir(self.args)}. Continue with the same command "
            "plus --resume.", 128 + self.stop_signal)

    def _log(self, writer, metrics_path, stats):
        for k, v in stats.items():
            writer.add_scalar(self._tag(k), v, self.epoch)
        writer.flush()
        with open(metrics_path, "a") as fh:
            fh.write(json.dumps({"epoch": self.epoch, **stats}) + "\n")
        start, first = self.clock
        pace = (time.time() - start) / max(self.epoch - first, 1)
        log(f"epoch {self.epoch}/{self.args.epochs} "
            + " ".join(f"{k}={v:.4g}" for k, v in stats.items())
            + f" ({pace:.1f} s/epoch, ETA {format_duration(pace * (self.args.epochs - self.epoch))})")

    def run_epoch(self):
        """One epoch of training, the schedule step, and evaluation when it is due; None when
        a stop signal ended the epoch early."""
        lr = self.optimizers["main"].param_groups[0]["lr"]
        stats = self.train_epoch()
        if stats is None:
            return None
        for s in self.schedulers.values():
            s.step()
        self.epoch += 1
        stats["lr"] = lr
        if self.epoch % self.args.eval_every == 0 or self.epoch == self.args.epochs:
            stats.update(self.evaluate_all())
        return stats

    def _tag(self, key):
        if key == "test_acc":
            return "test/acc"
        if key == "bias_agreement":
            return "test/bias_agreement"
        if key.endswith("_acc") and key[:-4] in self.extra_loaders:
            return f"test/{key}"
        return f"train/{key}"

    def test(self):
        """Evaluate a checkpoint on the (unbiased) test set and save predictions as a dict .npy."""
        args = self.args
        path = args.load_checkpoint_path or os.path.join(checkpoint_dir(args), "last.pth")
        ckpt = self.load_nets(path)
        probs, labels = self.predict_all(self.test_loader)
        preds = probs.argmax(1)
        acc = float((preds == labels).mean())
        # main.py resolved the target: inside --output_dir, never a checkpoint or a folder
        out = args.test_output_npy or os.path.join(experiment_dir(args), "test_predictions.npy")
        bias = self.test_loader.dataset.bias_index[:len(labels)]
        panels = dict(records.confusion_panels(args, labels, preds, bias, probs.shape[1],
                                               ckpt.get("epoch"), os.path.basename(path)))
        if self.is_main:
            atomic_np_save({"true_label": labels, "pred_label": preds, "probabilities": probs,
                            "bias_index": bias, "accuracy": acc, "checkpoint": path,
                            "confusion_label": panels["label"][0],
                            "confusion_bias": panels["bias"][0]}, out)
            stem = os.path.splitext(out)[0]
            for name, panel in panels.items():
                save_matrix_png(panel[0], f"{stem}_confusion_{name}.png", *panel[1:])
            log(f"test_acc={acc:.4f} ({len(labels)} images, checkpoint {path}) -> {out}, "
                f"{stem}_confusion_{{label,bias}}.png")
        return acc
