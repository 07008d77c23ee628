"""The fast path (--fast auto) computes what the plain path computes: the device-resident loader
yields the DataLoader's batches, a recorded-and-replayed step equals the eager step, and whole
runs give the same numbers. The CUDA-graph test itself needs a GPU; its bookkeeping is checked
on the CPU with a stand-in recording."""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import optim

import main as cli
from colored_mnist import CMNIST_MEAN, CMNIST_STD
from data_handler import Batch, ColorImageDataset, make_loader
from fast import CapturedStep, ResidentLoader, resident
from methods import METHODS
from runtime import Runtime
from solver import GuardedOptimizer, Solver
from test_methods import make

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_colour_set(n=37):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    return ColorImageDataset(images, labels, rng.integers(0, 8, (n, 3, 14, 14)), labels,
                             CMNIST_MEAN, CMNIST_STD)


def batches(loader, epoch=0):
    if hasattr(loader.sampler, "set_epoch"):  # training samplers; evaluation keeps the order
        loader.sampler.set_epoch(epoch)
    return [{k: t.clone() for k, t in b.items()} for b in loader]


@pytest.mark.parametrize("train,drop_last,batch", [(True, False, 8), (True, True, 8),
                                                   (False, False, 10), (True, False, 0)])
def test_resident_loader_yields_the_dataloaders_batches(train, drop_last, batch):
    cpu = torch.device("cpu")
    plain = make_loader(tiny_colour_set(), batch, train, 3, 0, cpu, drop_last=drop_last)
    fast = resident(make_loader(tiny_colour_set(), batch, train, 3, 0, cpu,
                                drop_last=drop_last), cpu)
    assert isinstance(fast, ResidentLoader) and len(fast) == len(plain)
    for epoch in (0, 1):  # a new shuffle each epoch, the same in both
        want, got = batches(plain, epoch), batches(fast, epoch)
        assert len(got) == len(want) == len(plain)
        for a, b in zip(want, got):
            assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    if train and batch:
        assert not torch.equal(batches(fast, 0)[0]["y"], batches(fast, 1)[0]["y"])


class StandInRecording(CapturedStep):
    """CapturedStep whose 'graph' re-runs the recorded call on the static inputs bound at
    recording time, as a CUDA graph reads fixed addresses: the test fails if a batch is not
    copied into them, if a new learning rate is not re-recorded, or if warm-up and odd-shaped
    batches are not run eagerly."""

    def _record(self):
        inputs, raw, outputs = self.inputs, dict(self.raw), {}

        def replay():
            for k, v in self.method.update(inputs, raw).items():
                outputs.setdefault(k, torch.empty_like(v)).copy_(v)
        return replay, outputs


GRAPH_SAFE = sorted(name for name, cls in METHODS.items() if cls.graph_safe)


def twin_methods(name="lnl"):
    """The same method, nets and SGD optimizers twice (eager and recorded)."""
    nets, method, _, batch = make(name)
    twins = []
    for _ in range(2):
        m = type(method)(copy.deepcopy(nets), method.args)
        opts = {k: GuardedOptimizer(optim.SGD(v, lr=0.01, momentum=0.9, weight_decay=5e-4))
                for k, v in m.param_groups().items()}
        twins.append((m, opts))
    return twins, batch


def batch_stream(batch, device):
    """Ten batches of new examples (like the first, b with ignored positions), with a smaller
    one (an epoch's last) after the sixth."""
    gen = torch.Generator().manual_seed(0)
    x, y, b = batch["x"], batch["y"], batch["bias"]
    out = []
    for _ in range(10):
        bb = torch.randint(0, 8, b.shape, generator=gen)
        bb[b == 255] = 255
        out.append(Batch({**batch, "x": torch.randn(x.shape, generator=gen),
                          "y": torch.randint(0, 10, y.shape, generator=gen), "bias": bb}))
    out.insert(6, Batch({k: t[:5] for k, t in out[0].items()}))
    return [bt.to(device) for bt in out]


def run_both(step_cls, device, tol, method="lnl"):
    (eager, eager_opts), (fast, fast_opts) = twin_methods(method)[0]
    batch = twin_methods(method)[1]
    for m in (eager, fast):
        m.nets.to(device)
    step = step_cls(fast, fast_opts, batch_size=8, warmup=3)
    for i, bt in enumerate(batch_stream(batch, device)):
        if i == 8:  # the schedule lowers the learning rate: the recording must follow
            for opts in (eager_opts, fast_opts):
                for o in opts.values():
                    for g in o.param_groups:
                        g["lr"] *= 0.1
        want = eager.update(bt, eager_opts)
        got = step(bt)
        # rtol: the same float32 ops on two copies of the weights may round differently (the
        # CPU kernels' summation order can depend on memory alignment); a missed batch copy
        # or a stale learning rate is off by far more
        for k in want:
            assert torch.allclose(got[k], want[k], rtol=1e-5, atol=tol), (
                i, k, float((got[k] - want[k]).abs().max()))
    for p, q in zip(eager.nets.parameters(), fast.nets.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=tol)
    for p, q in zip(eager.nets.buffers(), fast.nets.buffers()):  # BatchNorm statistics
        assert torch.allclose(p.float(), q.float(), rtol=1e-5, atol=tol)
    return step


@pytest.mark.parametrize("method", GRAPH_SAFE)
def test_recorded_step_bookkeeping_matches_eager_steps_on_cpu(method):
    step = run_both(StandInRecording, torch.device("cpu"), 1e-6, method)
    # 3 warm-up steps + the odd-shaped batch ran eagerly; recorded at the first full batch
    # after warm-up and again after the learning rate changed
    assert (step.eager_steps, step.captures, step.replays) == (4, 2, 7)
    check = step.self_check()  # each recording checked itself against an eager step
    assert check["outcome"] == "passed" and check["checks"] == 2
    assert 0 <= check["largest_difference"] <= check["allowed"] and check["seconds"] > 0


class NoStep:
    """An optimizer whose step does nothing (a recording that lost the optimizer step)."""

    def __init__(self, optimizer):
        self.param_groups, self.zero_grad = optimizer.param_groups, optimizer.zero_grad

    def step(self):
        pass


class SkipsOptimizerStep(StandInRecording):
    def _record(self):
        raw, self.raw = self.raw, {k: NoStep(o) for k, o in self.raw.items()}
        try:
            return super()._record()
        finally:
            self.raw = raw


class StaleInput(StandInRecording):
    """Replays read a copy of the static inputs made at recording time, not the batch copied
    into them afterwards."""

    def _record(self):
        live, self.inputs = self.inputs, Batch({k: t.clone() for k, t in self.inputs.items()})
        try:
            return super()._record()
        finally:
            self.inputs = live


@pytest.mark.parametrize("broken", [SkipsOptimizerStep, StaleInput])
def test_self_check_catches_a_broken_recording_and_falls_back(broken, capsys):
    """run_both compares every step with the eager twin: after the check fails the run must
    still equal eager training (the eager result kept, every later step eager)."""
    step = run_both(broken, torch.device("cpu"), 1e-6)
    assert step.failed and (step.eager_steps, step.captures, step.replays) == (11, 0, 0)
    err = capsys.readouterr().err
    assert err.count("disagrees with an eager step") == 1 and "largest difference" in err
    check = step.self_check()
    assert check["outcome"] == "failed, fell back to eager steps" and check["checks"] == 1
    assert check["largest_difference"] > check["allowed"] > 0
    assert check["in"].split()[0] in ("parameter", "buffer", "optimizer", "metric")


class FailingRecording(CapturedStep):
    def _record(self):
        raise RuntimeError("operation not permitted when stream is capturing")


def test_failed_recording_warns_once_and_every_step_runs_eagerly(capsys):
    step = run_both(FailingRecording, torch.device("cpu"), 1e-6)
    assert step.failed and (step.eager_steps, step.captures, step.replays) == (11, 0, 0)
    err = capsys.readouterr().err
    assert err.count("continuing with eager steps") == 1 and "--fast off" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("method", GRAPH_SAFE)
def test_cuda_graph_step_matches_eager_steps_on_gpu(method):
    step = run_both(CapturedStep, torch.device("cuda"), 1e-5, method)
    assert (step.eager_steps, step.captures, step.replays) == (4, 2, 7)
    assert step.self_check()["outcome"] == "passed", step.self_check()


def test_fast_and_plain_runs_give_identical_results(mnist_root, tmp_path):
    """--fast auto, --fast off, and --fast auto in a copy without fast.py (the fast path is
    optional: an import of it that fails leaves the eager trainer)."""
    results = {}
    for fast in ("auto", "off", "removed"):
        argv = ["--data_root_base", mnist_root, "--output_dir", str(tmp_path), "--device",
                "cpu", "--max_train_samples", "600", "--max_test_samples", "500",
                "--method", "lnl", "--epochs", "1", "--fast", "off" if fast == "off" else "auto",
                "--experiment_name", fast]
        if fast == "removed":
            code = "import sys; sys.modules['fast'] = None; import main; main.main(sys.argv[1:])"
            subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, check=True,
                           env=dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads())))
        else:
            cli.main(argv)
        with open(os.path.join(tmp_path, fast, "metrics.jsonl")) as fh:
            results[fast] = [json.loads(line) for line in fh]
        with open(os.path.join(tmp_path, fast, "results.json")) as fh:  # the record says how
            path = json.load(fh)["provenance"]["step_path"]
        assert path == {"resident_data": fast == "auto", "cuda_graph": None,  # no GPU here
                        "self_check": {"outcome": "not applicable (eager steps)"}}
        with open(os.path.join(tmp_path, fast, "run.log")) as fh:
            assert ("steps: batches on the device, eager, fp32 on cpu" if fast == "auto" else
                    "steps: DataLoader batches, eager, fp32 on cpu") in fh.read()
    assert results["auto"] == results["off"] == results["removed"]
    assert results["auto"][0]["loss_cls"] > 0 and "test_acc" in results["auto"][0]


def test_benchmark_prints_one_json_line_on_the_cpu(capsys):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import benchmark  # in-process: the script's output, not its process, is under test
    benchmark.main(["--device", "cpu", "--train_samples", "96", "--batch_size", "32",
                    "--epochs", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["steps_per_epoch"] == 3 and set(report["results"]) == {"baseline", "lnl"}
    for row in report["results"].values():
        for path in ("eager", "fast", "eager_bf16", "fast_bf16"):  # fp32 and bf16 by default
            r = row[path]
            assert r["ms_per_step"] > 0 and r["images_per_s"] > 0
            assert r["s_per_epoch"] == pytest.approx(3 * r["ms_per_step"] / 1000, rel=1e-2)
            assert r["cuda_graph"] is False  # no GPU here
        for key, path in (("speedup", "fast"), ("speedup_fast_bf16", "fast_bf16"),
                          ("speedup_eager_bf16", "eager_bf16")):
            assert row[key] == pytest.approx(
                row["eager"]["s_per_epoch"] / row[path]["s_per_epoch"], rel=2e-2,
                abs=0.006)  # printed with two decimals


def test_bf16_step_is_close_to_fp32_but_not_the_same():
    losses = {}
    for precision in ("fp32", "bf16"):
        nets, _, _, batch = make("lnl")
        _, args = cli.parse_args(["--method", "lnl", "--precision", precision,
                                  "--device", "cpu"])
        solver = Solver(args, nets, None, None, Runtime(args))
        losses[precision] = [solver.step(batch) for _ in range(2)]  # the 2nd sees the 1st
        conv = next(m.weight for m in nets["f"].modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.is_contiguous(memory_format=torch.channels_last) == (precision == "bf16")
    for fp32, bf16 in zip(losses["fp32"], losses["bf16"]):
        for k in ("loss_cls", "loss_bias", "entropy_term"):
            assert torch.isfinite(bf16[k])
            assert float(bf16[k]) == pytest.approx(float(fp32[k]), rel=0.05)  # rounded ...
    assert float(losses["bf16"][1]["loss_cls"]) != float(losses["fp32"][1]["loss_cls"])


def test_fp32_means_ieee_float32_unless_tf32_is_asked_for():
    """cuDNN convolutions default to TF32 on Ampere+ GPUs; a run's fp32 is the reference's
    full float32 unless --tf32 on (set once by the Runtime, process-wide)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        for flag, want in (("on", True), ("off", False)):
            _, args = cli.parse_args(["--device", "cpu", "--tf32", flag])
            Runtime(args)
            assert torch.backends.cudnn.allow_tf32 is want
            assert torch.backends.cuda.matmul.allow_tf32 is want
        _, args = cli.parse_args(["--device", "cpu"])
        assert args.tf32 == "off"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
