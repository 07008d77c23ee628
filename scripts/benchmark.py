"""Time training epochs of the plain (eager) and fast paths; print one JSON line.

For each method (baseline, lnl by default) and each path, a Solver is built exactly as
main.py builds it (the reference Colored-MNIST networks, batch 128, SGD) and trains
--epochs timed epochs after one untimed warm-up epoch:
  eager: DataLoader batches, the method's update run op by op  (--fast off)
  fast:  the dataset on the device, the step recorded as a CUDA graph on a GPU (--fast auto)
each in fp32 (IEEE float32: --tf32 off, the default) and in bf16 (--precision bf16; rows
<path>_bf16). speedup: eager fp32 / fast fp32; speedup_<row>: eager fp32 / that row.
The data are synthetic coloured 28x28 images of Colored-MNIST's shape (the timing does not
depend on pixel values), so no download is needed. Defaults give the issue's setting: 60,000
images, batch 128 (469 steps per epoch). On the CPU pass a small --train_samples.

    python scripts/benchmark.py                        # GPU: the full-size measurement
    python scripts/benchmark.py --device cpu --train_samples 512 --epochs 1   # smoke run

--runs N adds, per method and path, N runs (seeds seed..seed+N-1) trained as one sweep (one
step of each in turn, each on its own CUDA stream on a GPU: sweep.py) against the same N runs
one after another: model-epochs per second of each, their ratio, and on a GPU the sweep's peak
memory.

    python scripts/benchmark.py --runs 21 --methods lnl --paths fast      # GPU: the sweep
    python scripts/benchmark.py --device cpu --train_samples 512 --epochs 1 --runs 3
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
import types

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from colored_mnist import CMNIST_MEAN, CMNIST_STD, color_bin_target  # noqa: E402
from data_handler import ColorImageDataset, make_loader  # noqa: E402
import main as cli  # noqa: E402
from runtime import Runtime, resolve_device  # noqa: E402
from solver import Solver  # noqa: E402
import sweep  # noqa: E402
from utils import set_seed  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--methods", nargs="+", default=["baseline", "lnl"])
    p.add_argument("--paths", nargs="+", default=["eager", "fast"], choices=("eager", "fast"))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"),
                   help="--precision of the timed runs; bf16 rows are keyed <path>_bf16")
    p.add_argument("--train_samples", type=int, default=60000)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=1,
                   help="N > 1: also time N runs as one sweep against N runs one by one")
    opts = p.parse_args(argv)
    if opts.runs < 1:
        p.error(f"--runs must be at least 1; got {opts.runs}")
    return opts


def synthetic_cmnist(n, seed):
    """Random digit-like coloured images with Colored MNIST's shapes, labels and per-pixel b."""
    rng = np.random.default_rng(seed)
    images = (rng.random((n, 28, 28, 3)) < 0.2) * rng.integers(0, 256, (n, 28, 28, 3))
    images = images.astype(np.uint8)
    labels = rng.integers(0, 10, n)
    return ColorImageDataset(images, labels, color_bin_target(images), labels, CMNIST_MEAN,
                             CMNIST_STD)


def build_solver(method, path, opts, device, out_dir, seed=None, precision="fp32"):
    """A Solver as main.py would build it for --method method --fast {off,auto} --precision."""
    seed = opts.seed if seed is None else seed
    _, args = cli.parse_args([
        "--method", method, "--batch_size", str(opts.batch_size), "--seed", str(seed),
        "--fast", "off" if path == "eager" else "auto", "--output_dir", out_dir,
        "--experiment_name", f"{method}_{path}_{precision}_{seed}", "--num_workers", "0",
        "--device", str(device), "--precision", precision])
    runtime = Runtime(args)
    set_seed(seed)
    data = synthetic_cmnist(opts.train_samples, seed)
    nets = cli.build_nets(args, data.input_shape)
    loader = make_loader(data, args.batch_size, True, args.seed, 0, runtime.device)
    return Solver(args, nets, runtime.loader(loader), None, runtime)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epochs(solver, epochs, device):
    """Seconds per epoch, after one untimed epoch (allocations, graph recording, autotuning)."""
    solver.train_epoch()
    times = []
    for _ in range(epochs):
        solver.epoch += 1
        sync(device)
        start = time.perf_counter()
        solver.train_epoch()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def sweep_epochs(members, epochs, device):
    """Seconds per epoch of all members together (one step of each in turn), after one
    untimed epoch."""
    times = []
    for n in range(epochs + 1):
        for member in members:
            member.solver.epoch = n
            member.steps = member.solver.epoch_steps()
        sync(device)
        start = time.perf_counter()
        sweep.interleave(members)
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def time_runs(method, path, opts, device, out_dir):
    """N runs one after another against the same N runs as a sweep: model-epochs per second
    of each, their ratio, and the sweep's peak GPU memory."""
    seeds = range(opts.seed, opts.seed + opts.runs)
    alone = sum(time_epochs(build_solver(method, path, opts, device, out_dir, s), opts.epochs,
                            device) for s in seeds)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    members = []
    for s in seeds:
        member = sweep.Member(types.SimpleNamespace(experiment_name=f"{method}_{path}_{s}"))
        if device.type == "cuda":
            member.stream = torch.cuda.Stream(device)
        with member.turn():
            member.solver = build_solver(method, path, opts, device, out_dir, s)
        members.append(member)
    together = sweep_epochs(members, opts.epochs, device)
    row = {"runs": opts.runs, "sweep_model_epochs_per_s": round(opts.runs / together, 3),
           "one_by_one_model_epochs_per_s": round(opts.runs / alone, 3),
           "ratio": round(alone / together, 2)}
    if device.type == "cuda":
        row["sweep_peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return row


def main(argv=None):
    opts = parse_args(argv)
    device = resolve_device(opts.device)
    results = {}
    with tempfile.TemporaryDirectory() as out_dir:
        for method in opts.methods:
            row = {}
            for precision in opts.precisions:
                for path in opts.paths:
                    key = path if precision == "fp32" else f"{path}_{precision}"
                    solver = build_solver(method, path, opts, device, out_dir, None, precision)
                    steps = len(solver.train_loader)
                    sec = time_epochs(solver, opts.epochs, device)
                    row[key] = {"ms_per_step": round(1000 * sec / steps, 3),
                                "s_per_epoch": round(sec, 4),
                                "images_per_s": round(steps * opts.batch_size / sec, 1),
                                "cuda_graph": solver.captured is not None}
                    if opts.runs > 1 and precision == "fp32":
                        row[key]["sweep"] = time_runs(method, path, opts, device, out_dir)
            # speed-ups against the reference setting (eager, fp32)
            for key in ("fast", "eager_bf16", "fast_bf16"):
                if "eager" in row and key in row:
                    name = "speedup" if key == "fast" else f"speedup_{key}"
                    row[name] = round(row["eager"]["s_per_epoch"] / row[key]["s_per_epoch"], 2)
            results[method] = row
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu ({platform.processor() or platform.machine()}, "
                 f"{torch.get_num_threads()} threads)")
    print(json.dumps({"device": name, "torch": torch.__version__,
                      "train_samples": opts.train_samples, "batch_size": opts.batch_size,
                      "steps_per_epoch": -(-opts.train_samples // opts.batch_size),
                      "timed_epochs": opts.epochs, "runs": opts.runs,
                      "tf32": bool(torch.backends.cudnn.allow_tf32),
                      "results": results}))


if __name__ == "__main__":
    main()
