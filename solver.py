"""The Solver: the training loop, evaluation and resuming around a training method.

Optimizers and schedule follow the LNL reference (Kim et al., CVPR 2019, authors' trainer):
SGD with momentum and weight decay (or Adam, --optimizer adam, for the IRM and AND-mask
benchmarks), one optimizer per parameter group the method names, and lr x lr_decay_rate every
lr_decay_period epochs.

Under torchrun the networks are wrapped in DistributedDataParallel (one wrapper per network, so
each of LNL's two backward passes reduces exactly the networks it used) and training metrics are
averaged over ranks. What is written (checkpoints, metrics, TensorBoard, results, predictions)
goes through the run folder it is handed (run_folder.RunFolder), by rank 0 only; the fast path
comes in through the Runtime. Where a run starts (fresh, stage 2, resumed, tested) is decided
before the Solver exists (lifecycle.py), which then hands it the starting state.
"""
import contextlib
import math
import os
import signal
import time

import torch
import torch.distributed as dist
from torch import nn, optim
from torch.nn.parallel import DistributedDataParallel

import metrics
import records
from methods import METHODS
from utils import BadInput, EpochPace, RunStopped, format_duration, log, progress, rng_state, set_rng_state


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

    def averages(self, device, world):
        """({metric: mean per example}, steps skipped), over every rank's examples."""
        sums = self.sums()
        keys = sorted(sums)
        totals = torch.tensor([sums[k] for k in keys] + [self.count, self.skipped],
                              dtype=torch.float64, device=device)
        if world > 1:
            dist.all_reduce(totals)
        *totals, count, skipped = totals.tolist()
        return {k: t / max(count, 1) for k, t in zip(keys, totals)}, skipped


def training_labels(dataset):
    """(labels, bias_index) of a training set as numpy arrays (a device-resident copy too)."""
    return tuple(torch.as_tensor(getattr(dataset, k)).cpu().numpy()
                 for k in ("labels", "bias_index"))


def wrap_for_ddp(nets, device):
    """One DistributedDataParallel per network that has parameters (LNL's second update uses
    f and h but not g; separate wrappers keep every reduction complete)."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.ModuleDict({k: DistributedDataParallel(m, device_ids=ids)
                          if any(p.requires_grad for p in m.parameters()) else m
                          for k, m in nets.items()})


@contextlib.contextmanager
def stop_signals(handler):
    """SIGINT and SIGTERM call handler instead of stopping the process, inside the block."""
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_to_end(steps):
    """Advance a generator to its end; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


class Solver:
    """Trains and evaluates one experiment; `run` (its run folder) writes the files."""

    def __init__(self, args, nets, train_loader, test_loader, runtime, run=None,
                 extra_loaders=None, data_sha256=None):
        self.args, self.runtime, self.device = args, runtime, runtime.device
        self.world, self.is_main = runtime.world, runtime.is_main
        self.nets = runtime.place(nets)
        train_nets = wrap_for_ddp(self.nets, self.device) if self.world > 1 else self.nets
        self.train_loader, self.test_loader = train_loader, test_loader
        self.extra_loaders = extra_loaders or {}
        self.run = run
        self.data_sha256 = data_sha256  # records.data_digest of the sets the loaders serve
        self.last_eval = None  # (labels, preds, bias, n_classes) of the latest test evaluation
        self.collapsed = False  # whether the latest evaluation named one class (records.collapse)
        self.last_groups = {}  # {extra set: records.group_counts of its latest evaluation}
        train_set = train_loader.dataset if train_loader is not None else None
        self.method = METHODS[args.method](train_nets, args, train_set=train_set)
        # evaluation reads the plain networks: no collective calls outside training steps
        self.eval_method = METHODS[args.method](self.nets, args)
        self.optimizers = {name: GuardedOptimizer(self._optimizer(params))
                           for name, params in self.method.param_groups().items()}
        decay = lambda epoch: args.lr_decay_rate ** (self.method.schedule_epoch(epoch)
                                                     // args.lr_decay_period)
        self.schedulers = {name: optim.lr_scheduler.LambdaLR(opt.optimizer, decay)
                           for name, opt in self.optimizers.items()}
        self.epoch = 0           # epochs completed
        self.step_in_epoch = 0   # steps completed in the current epoch
        self.partial = None      # EpochMeter of the current epoch so far
        self.epoch_share = 1.0   # the part of the last epoch's steps this process ran
        self.stop_signal = 0
        self.init_source = None  # the checkpoint a stage-2 run started from (path, epoch, hash)
        self.started, self.seconds_before = None, 0.0  # for train_seconds()
        self.captured = runtime.recorded_step(self.method, self.optimizers, train_loader)
        # the (label, bias) cells of the training correlation: test examples in them are
        # 'aligned', the rest 'conflicting' (records.bias_cells)
        self.cells = (records.bias_cells(*training_labels(train_loader.dataset))
                      if train_loader is not None and records.has_bias_attribute(args) else None)

    def _optimizer(self, params):
        a = self.args
        if a.optimizer == "adam":
            return optim.Adam(params, lr=a.lr, weight_decay=a.weight_decay)
        return optim.SGD(params, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)

    # ------------------------------------------------------------------ the training loop
    def training(self, last=None):
        """Train from the current position to --epochs, one step at a time: a generator that
        yields after every step (a sweep advances several in turn) and returns the final test
        accuracy. `last`: the metrics of the last epoch done (a resumed run's). A signal
        finishes the step in flight, saves a checkpoint and raises RunStopped."""
        args, run, last = self.args, self.run, last or {}
        self.started = time.time()
        self.pace = EpochPace(self.started)  # for the ETA: the recent epochs' pace
        log(f"steps: {self.step_path_text()}; {records.code_text()}")
        try:
            while self.epoch < args.epochs:
                lr = self.optimizers["main"].param_groups[0]["lr"]  # the lr it trains at
                stats = yield from self.epoch_steps()
                if stats is None:  # a signal: the step in flight finished, nothing is lost
                    raise self._stopped_by_signal()
                for s in self.schedulers.values():
                    s.step()
                self.epoch += 1
                last = {**stats, "lr": lr}
                if self.epoch % args.eval_every == 0 or self.epoch == args.epochs:
                    last.update(self.evaluate_all())
                self._report(last, self.epoch_share)
                run.save_checkpoint(self.state())
            if metrics.FINAL not in last or self.last_eval is None:
                # nothing was left to train: evaluate the finished run (its figures need it)
                last.update(self.evaluate_all())
            last.pop("epoch", None)
            if self.is_main:
                self._finish(last)
        except BadInput as err:  # keep every step done so far
            run.save_checkpoint(self.state(), force=True)
            raise BadInput(f"{err} Progress up to epoch {self.epoch + 1}, step "
                           f"{self.step_in_epoch} is saved in {run.checkpoints}; after "
                           "fixing the input, continue with the same command plus "
                           "--resume.") from None
        finally:
            run.close()
        return last[metrics.FINAL]

    def train_epoch(self):
        """Train from the current position in the epoch to its end: the epoch's mean step
        metrics, or None when a stop signal came first."""
        return run_to_end(self.epoch_steps())

    def epoch_steps(self):
        """train_epoch() as a generator that yields after every step."""
        self.nets.train()
        loader = self.train_loader
        self.method.start_epoch(self.epoch, self.optimizers)
        # the order depends on (seed, epoch) and the method's state only, so a resumed epoch
        # skips the steps it did
        loader.sampler.set_sampling(self.method.sampling())
        loader.sampler.set_epoch(self.epoch)
        loader.sampler.set_start(self.step_in_epoch * loader.batch_size)
        meter = self.partial = self.partial or EpochMeter()  # checkpointed with the position
        resumed_at = self.step_in_epoch
        bar = progress(loader, desc=f"epoch {self.epoch + 1}/{self.args.epochs}")
        for batch in bar:
            batch = self._to_device(batch)
            stats = self.step(batch)
            keys = tuple(stats)
            values = torch.stack([stats[k].float() for k in keys])  # no host sync per step
            if self._nonfinite(values):
                if not self.args.skip_nonfinite:
                    raise self._diverged(stats)
                meter.skipped += 1
            else:
                meter.add(keys, values, batch.size)
            self.step_in_epoch += 1
            if not bar.disable and self.step_in_epoch % 20 == 0:  # a read syncs the device
                bar.set_postfix(loss=f"{float(stats.get('loss_cls', 0.0)):.3f}")
            if self._stop_requested():
                return None
            yield
        # a resumed epoch's first steps ran in an earlier process: this one's pace is its share
        self.epoch_share = 1.0 - resumed_at / max(self.step_in_epoch, 1)
        self.step_in_epoch, self.partial = 0, None
        means, skipped = meter.averages(self.device, self.world)
        if self.args.skip_nonfinite:
            means["nonfinite_skipped"] = skipped
        return means

    def step(self, batch):
        """One training step through the method (replayed from a CUDA graph when recorded)."""
        with self.runtime.autocast():
            if self.captured is not None:
                return self.captured(batch)
            return self.method.update(batch, self.optimizers)

    # ------------------------------------------------------------------ around the loop
    def _to_device(self, batch):
        return batch.to(self.device)

    def on_signal(self, signum, frame):
        """A stop signal's handler (lifecycle.train installs it): stop after this step."""
        self.stop_signal = signum

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
        values = ", ".join(f"{k}={float(v):.4g}" for k, v in stats.items())
        weights = ("no non-finite gradient reached the weights" if self.captured is None else
                   "the recorded step had already updated the weights")
        lrs = [g["lr"] for o in self.optimizers.values() for g in o.param_groups]
        # the method's own step sizes and weights can diverge too (GroupDRO's eta on q)
        own = [f"--{o.name}" for o in type(self.method).options_read()
               if isinstance(o.default, float)]
        advice = ("the learning rate itself is not finite: start again with a finite --lr "
                  "(and --overwrite)" if not all(map(math.isfinite, lrs)) else
                  "Start it again with a lower --lr" + (f" or a milder {', '.join(own)}"
                                                         if own else "")
                  + " (the same command with --overwrite; a resumed run keeps its recorded "
                  "lr), or --resume with --skip_nonfinite to skip such steps")
        return RunStopped(
            f"stopped: non-finite loss at epoch {self.epoch + 1}, "
            f"step {self.step_in_epoch + 1} "
            f"({values}); {weights}. Last good checkpoint: {self.run.last_checkpoint()}. "
            f"{advice}.", 1)

    def _stopped_by_signal(self):
        self.run.save_checkpoint(self.state(), force=True)
        name = signal.Signals(self.stop_signal).name
        return RunStopped(
            f"stopped by {name} at epoch {self.epoch + 1}, step {self.step_in_epoch}; "
            f"checkpoint saved in {self.run.checkpoints}. Continue with the same command "
            "plus --resume.", 128 + self.stop_signal)

    def _report(self, stats, share=1.0):
        """An epoch's metrics into the run folder, and its line (with the ETA) in the log;
        `share`: the part of the epoch's steps this process ran (less after a resume)."""
        self.run.log_epoch(self.epoch, stats)
        if not self.is_main:
            return
        self.pace.tick(time.time(), share)
        pace = self.pace.seconds()
        log(f"epoch {self.epoch}/{self.args.epochs} "
            + " ".join(f"{k}={v:.4g}" for k, v in stats.items())
            + f" ({pace:.1f} s/epoch, ETA {format_duration(pace * (self.args.epochs - self.epoch))})")

    def step_path(self):
        """How this process ran its steps, for the record: batches served from the device
        (ResidentLoader) or a DataLoader, the CUDA-graph counts (None: eager steps) and the
        recorded step's self-check (fast.CapturedStep: passed, or failed and fell back)."""
        c = self.captured
        return {"resident_data": type(self.train_loader).__name__ == "ResidentLoader",
                "cuda_graph": None if c is None else {
                    "captures": c.captures, "replays": c.replays, "eager_steps": c.eager_steps,
                    "failed": c.failed},
                "self_check": ({"outcome": "not applicable (eager steps)"} if c is None
                               else c.self_check())}

    def step_path_text(self):
        data = ("batches on the device" if self.step_path()["resident_data"]
                else "DataLoader batches")
        step = (f"recorded as a CUDA graph after {self.captured.warmup} eager steps, each "
                "recording checked against an eager step"
                if self.captured is not None else "eager")
        precision = "bf16 autocast" if self.runtime.bf16 else (
            "fp32 (TF32 on)" if self.args.tf32 == "on" and self.device.type == "cuda"
            else "fp32")
        layout = ", NHWC weights" if self.runtime.nhwc else ""
        return f"{data}, {step}, {precision}{layout} on {records.device_text(self.device)}"

    def _finish(self, last):
        """results.json and the final TensorBoard record (one event file per run)."""
        args = self.args
        labels, preds = self.last_eval[:2]
        history = self.run.history()
        final = {**last, **records.selection(history, self.method.reported_from()),
                 "collapse": records.collapse(history),
                 **{metrics.groups(name): groups for name, groups in self.last_groups.items()},
                 "hparam_selection": getattr(args, "hparam_selection", None)}
        record = records.results_record(args, self.device, self.started, self.epoch, final,
                                        self.world, self.train_seconds(), self.step_path(),
                                        correct=labels == preds,
                                        data_sha256=self.data_sha256,
                                        init=self.init_source)
        panels = records.confusion_panels(args, *self.last_eval, epoch=self.epoch,
                                          checkpoint="final weights")
        self.run.write_results(record, panels, self.epoch)
        collapsed = final["collapse"]  # never a bare accuracy when it is a class's share
        log(f"final {metrics.FINAL}={final[metrics.FINAL]:.4f} ({args.experiment_name}, "
            f"epoch {self.epoch}" + (f"; {records.collapse_text(collapsed)}" if collapsed
                                     else "") + f") -> {self.run.path}")

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict_all(self, loader):
        """Class probabilities and labels over a loader, in order."""
        self.nets.eval()
        probs, labels = [], []
        for batch in progress(loader, desc="eval"):
            batch = self._to_device(batch)
            x, y = batch["x"], batch["y"]
            with self.runtime.autocast():
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
        out = {metrics.FINAL: float((preds == labels).mean()),
               metrics.TOP_CLASS: records.top_class_share(preds, probs.shape[1])}
        collapsed = out[metrics.TOP_CLASS] >= records.COLLAPSE_SHARE
        if collapsed != self.collapsed:  # said when it happens and when it ends
            self.collapsed = collapsed
            log(f"warning: epoch {self.epoch}: {out[metrics.TOP_CLASS]:.0%} of the test "
                "predictions name one class: the run has collapsed to one class (its record "
                "will say so)" if collapsed else f"epoch {self.epoch}: the predictions spread "
                "over the classes again (the collapse stays in the record)")
        agreement = records.bias_agreement(preds, bias, probs.shape[1])
        if agreement is not None:
            out[metrics.AGREEMENT] = agreement
        if self.cells is not None:
            out.update(records.aligned_accuracies(self.cells, labels, preds, bias))
            out[metrics.worst_group()] = records.worst_group_accuracy(labels, preds, bias)
        for name, loader in self.extra_loaders.items():
            out.update(self.scores(name, loader))
        return out

    def scores(self, name, loader):
        """An extra evaluation set's accuracy ({name}_acc) and, on a dataset with a bias
        attribute, its worst-group accuracy ({name}_worst_group_acc) and its accuracy on the
        images off the training correlation ({name}_acc_conflicting): the test-free criteria
        of hparams.py. Its per-group counts are kept for the run's record (their intervals)."""
        probs, labels = self.predict_all(loader)
        preds = probs.argmax(1)
        out = {metrics.accuracy(name): float((preds == labels).mean())}
        if self.cells is not None:
            bias = loader.dataset.bias_index[:len(labels)]
            out[metrics.worst_group(name)] = records.worst_group_accuracy(labels, preds, bias)
            split = records.aligned_accuracies(self.cells, labels, preds, bias)
            if metrics.conflicting() in split:
                out[metrics.conflicting(name)] = split[metrics.conflicting()]
            self.last_groups[name] = records.group_counts(labels, preds, bias, self.cells)
        return out

    def test(self, path, epoch):
        """Evaluate the loaded weights (from checkpoint `path`, at `epoch`) on the (unbiased)
        test set; save the predictions (a structured .npy at --test_output_npy, one row per
        example) and their summary (<stem>.json: accuracy, checkpoint, confusion matrices)."""
        args = self.args
        probs, labels = self.predict_all(self.test_loader)
        preds = probs.argmax(1)
        acc = float((preds == labels).mean())
        out = args.test_output_npy  # resolved before any write: inside --output_dir, a .npy
        bias = self.test_loader.dataset.bias_index[:len(labels)]
        panels = dict(records.confusion_panels(args, labels, preds, bias, probs.shape[1],
                                               epoch, os.path.basename(path)))
        summary = {"predictions": os.path.basename(out), "accuracy": acc, "checkpoint": path,
                   "confusion_label": panels["label"][0].tolist(),
                   "confusion_bias": panels["bias"][0].tolist()}
        self.run.write_predictions(
            out, records.prediction_rows(labels, preds, bias, probs), summary, panels,
            f"{metrics.FINAL}={acc:.4f} ({len(labels)} images, checkpoint {path})")
        return acc

    # ------------------------------------------------------------------ checkpoints
    def state(self):
        """What a checkpoint holds (its keys are a file format: old checkpoints must load)."""
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "partial": self.partial.state() if self.partial else None,
                "args": vars(self.args),
                "nets": {k: m.state_dict() for k, m in self.nets.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "method": self.method.state_dict(), "rng": rng_state(),
                "init": self.init_source, "train_seconds": self.train_seconds()}

    def train_seconds(self):
        """Seconds this run has trained, over every process that resumed it."""
        return self.seconds_before + (time.time() - self.started if self.started else 0.0)

    def load_weights(self, nets, modules=None):
        """Networks' weights from a checkpoint's "nets" (those of `modules` it holds; all of
        this run's networks, twins included, when None)."""
        for k in modules or self.nets.keys():
            if k in nets:
                self.nets[k].load_state_dict(nets[k])

    def take_optimizer_state(self, name, state):
        """An optimizer's state (momentum buffers and learning rate) from a checkpoint, under
        this run's other hyperparameters: stage 2 starts from stage 1's as the LNL authors'
        trainer does (docs/references.md); the saved lr holds for the first epoch, until the
        schedule (base --lr) sets it. Returns that lr."""
        opt = self.optimizers[name]
        current = [{k: v for k, v in g.items() if k not in ("params", "lr")}
                   for g in opt.param_groups]
        opt.load_state_dict(state)
        for group, hyper in zip(opt.param_groups, current):
            group.update(hyper)  # keeps the checkpoint's lr; initial_lr stays this run's --lr
        return opt.param_groups[0]["lr"]

    def load_state(self, state):
        """Everything state() saved: the Solver continues exactly where it stopped."""
        self.load_weights(state["nets"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.method.load_state_dict(state.get("method", {}))
        set_rng_state(state["rng"])
        self.epoch = state["epoch"]
        self.step_in_epoch = state.get("step_in_epoch", 0)
        partial = state.get("partial")
        self.partial = EpochMeter(partial) if partial else None
        self.init_source = self.init_source or state.get("init")
        self.seconds_before = state.get("train_seconds", 0.0)  # absent before 2026-11-23
