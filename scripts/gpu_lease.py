"""The GPU-first plan (issue #11) as steps of at most 10 minutes that resume where the last
one stopped: a lent GPU machine is bare, has its own python3 and torch (2.11), no internet,
and goes back after each lease, so every step carries its inputs in and its results out.

On the GPU machine (one device-tool call each; everything is written under --out, which
defaults to $OUT there):
  prove   tests/test_fast.py with CUDA visible (the real CUDA-graph test must pass, not skip),
          then every method trained on CUDA with --fast auto and --fast off: baseline, LNL and
          BlindEye on Colored MNIST (1 epoch each), IRM and AND-mask on IRM's Colored MNIST
          (their presets). Writes prove.md / prove.json.
  bench   scripts/benchmark.py at its full-size defaults (eager and fast, fp32 and bf16), then
          the sweep (LNL, fast path) at --sweep_runs runs. Writes bench.json, bench_sweep.jsonl.
  table   the Colored-MNIST table at full length: the reference recipe (100 + 100 epochs),
          baseline and LNL, seeds 0..--seeds-1 (1), sigma^2 in the issue's order, --group
          sigma^2 per sweep,
          for --budget seconds; then every run stops at its next step with a checkpoint and the
          runs are packed into state_<k>.tar.gz for the next call. Exit 3: call again.
Here, on the development machine (no GPU):
  collect FOLDER  what a call brought back (the device tool's files_at): state_*.tar.gz go to
          .lease/ (the next table call carries them) and are unpacked into
          outputs/lease_state/; finished runs go into the committed ledger results/cmnist/,
          the table and plot are rebuilt from the ledger alone (results/cmnist_table/), and the
          prove/bench records are kept in results/gpu/.

Inputs travel in .lease/ (ignored by git; name it in the call's carry): .lease/mnist holds
MNIST's four idx files (`python scripts/gpu_lease.py stage` puts them there), and
.lease/state_*.tar.gz the table's state. docs/gpu_lease.md has the calls to make, in order.

--tiny rehearses any step on the CPU in a minute or two (600 training images, 1 epoch per
stage, short presets): the commands a lease will run, tried at small size first.
"""
import argparse
import fnmatch
import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(ROOT)  # data_handler's MNIST file names (imported where used: it loads torch)
from options import sigma2  # noqa: E402  (argparse types only)
PY = sys.executable
ISSUE_ORDER = ["0.020", "0.050", "0.035", "0.025", "0.045", "0.030", "0.040"]
TINY = ["--max_train_samples", "600", "--max_test_samples", "500"]
STATE_GLOB = "cmnist_var*_seed*_*"  # the table's run folders, as run_cmnist_table.sh names them


def say(out, text):
    """A progress line on the terminal and in --out's lease.log."""
    line = f"[{time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    with open(os.path.join(out, "lease.log"), "a") as fh:
        fh.write(line + "\n")


def group_alive(pgid):
    """Whether any live (not zombie) process is left in process group pgid."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def run(out, cmd, log_name, timeout, env=None):
    """A command in its own process group, its output appended to --out/log_name. Past
    `timeout` seconds the whole group gets SIGTERM (a training run finishes its step and
    writes its checkpoint), and SIGKILL if anything is left 90 s later. Returns once no
    process of the group is left (a run's checkpoint is complete by then): (exit code of the
    command, seconds)."""
    start = time.time()
    with open(os.path.join(out, log_name), "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            code = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            code = proc.wait()
        deadline = time.time() + 90
        while group_alive(proc.pid):  # the shell may end before the runs it started
            if time.time() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.5)
    return code, round(time.time() - start, 1)


def mnist_env(opts):
    """The environment the run scripts and tests need to find MNIST without the internet."""
    from data_handler import MNIST_FILES, find_idx
    src = os.path.join(opts.lease_dir, "mnist")
    if not all(find_idx(src, f) for f in MNIST_FILES.values()):
        raise SystemExit(f"MNIST is not in {src}; run `python scripts/gpu_lease.py stage` on "
                         "the development machine and name .lease in the call's carry")
    return {"MNIST_FROM": src, "MNIST_DIR": src, "DATA_ROOT": opts.data_root,
            "PYTHON": PY, "PYTHONUNBUFFERED": "1"}


def device_line():
    import torch
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": name,
            "python": sys.version.split()[0]}


def ensure_mnist(out, env, opts):
    if not glob.glob(os.path.join(opts.data_root, "MNIST", "raw", "t10k-labels-idx1-ubyte*")):
        code, _ = run(out, [PY, "fetch_data.py", "mnist", "--from", env["MNIST_FROM"],
                            "--data_root_base", opts.data_root], "prove_runs.log", 300, env)
        if code:
            raise SystemExit(f"importing MNIST failed (exit {code}); see {out}/prove_runs.log")


# --------------------------------------------------------------------------- prove
def prove_runs(opts):
    """Every method briefly, with --fast auto and --fast off: (label, argv) pairs."""
    cmnist = ["--dataset_name", "ColoredMNIST", "--color_var", "0.020", "--epochs", "1",
              "--seed", "0"]
    tiny = TINY if opts.tiny else []
    for fast in ("auto", "off"):
        root = os.path.join("outputs", "lease_prove", fast)
        common = ["--device", opts.device, "--fast", fast, "--data_root_base", opts.data_root,
                  "--output_dir", root, "--overwrite", *tiny]
        base = os.path.join(root, "baseline", "checkpoints", "last.pth")
        yield f"baseline/{fast}", [*cmnist, *common, "--method", "baseline", "--lr", "0.01",
                                   "--experiment_name", "baseline"]
        for m in ("lnl", "blindeye"):
            yield f"{m}/{fast}", [*cmnist, *common, "--method", m, "--lr", "0.001",
                                  "--init_checkpoint", base, "--experiment_name", m]
        for m in ("irm", "andmask"):
            steps = ["--epochs", "5", "--eval_every", "5"] if opts.tiny else []
            yield f"{m}/{fast}", ["--config", f"configs/irm_cmnist_{m}.yaml", *common, *steps,
                                  "--experiment_name", m]


def cmd_prove(opts, out):
    env = mnist_env(opts)
    info = device_line()
    say(out, f"prove on {info}")
    ensure_mnist(out, env, opts)
    code, sec = run(out, [PY, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                          "tests/test_fast.py"], "prove_pytest.log", 300, env)
    text = open(os.path.join(out, "prove_pytest.log")).read()
    graph_test = "PASSED tests/test_fast.py::test_cuda_graph_step_matches_eager_steps_on_gpu"
    tests = {"exit": code, "seconds": sec, "cuda_graph_test_passed": graph_test in text,
             "summary": text.strip().splitlines()[-1] if text.strip() else ""}
    say(out, f"tests/test_fast.py: exit {code} in {sec} s; {tests['summary']}; real CUDA-graph "
             f"test passed: {tests['cuda_graph_test_passed']}")
    rows = []
    for label, argv in prove_runs(opts):
        code, sec = run(out, [PY, "main.py", *argv], "prove_runs.log", 300, env)
        name = argv[argv.index("--experiment_name") + 1]
        folder = os.path.join(ROOT, argv[argv.index("--output_dir") + 1], name)
        rec = {}
        if os.path.exists(os.path.join(folder, "results.json")):
            rec = json.load(open(os.path.join(folder, "results.json")))
        step = rec.get("provenance", {}).get("step_path", {})
        graph = step.get("cuda_graph") or {}
        rows.append({"run": label, "exit": code, "seconds": sec,
                     "test_acc": rec.get("test_acc"), "device": rec.get("config", {}).get(
                         "device"), "resident_data": step.get("resident_data"),
                     "graph_replays": graph.get("replays"), "graph_failed": graph.get("failed")})
        say(out, "  ".join(f"{k}={v}" for k, v in rows[-1].items()))
    want_graph = info["gpu"] != "no CUDA GPU"
    failed = [r["run"] for r in rows if r["exit"] != 0 or r["test_acc"] is None
              or (want_graph and r["run"].split("/")[0] in ("baseline", "lnl", "blindeye")
                  and r["run"].endswith("/auto") and not r["graph_replays"])]
    if tests["exit"]:
        failed.append(f"tests/test_fast.py (exit {tests['exit']})")
    if want_graph and not tests["cuda_graph_test_passed"]:
        failed.append("the real CUDA-graph test did not pass")
    report = {**info, "tests": tests, "runs": rows, "failed": failed}
    with open(os.path.join(out, "prove.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    head = list(rows[0]) if rows else []
    with open(os.path.join(out, "prove.md"), "w") as fh:
        fh.write(f"# prove: {info}\n\ntests/test_fast.py: {tests['summary']} (real CUDA-graph "
                 f"test passed: {tests['cuda_graph_test_passed']})\n\n"
                 f"| {' | '.join(head)} |\n|{'---|' * len(head)}\n")
        for r in rows:
            fh.write(f"| {' | '.join(str(r[k]) for k in head)} |\n")
        fh.write(f"\nfailed: {', '.join(failed) or 'nothing'}\n")
    say(out, f"prove: {'FAILED: ' + ', '.join(failed) if failed else 'all passed'}")
    return 1 if failed else 0


# --------------------------------------------------------------------------- bench
def cmd_bench(opts, out):
    small = (["--device", "cpu", "--train_samples", "256", "--epochs", "1"] if opts.tiny
             else ["--device", opts.device])
    say(out, f"bench on {device_line()}")
    code, sec = run(out, [PY, "scripts/benchmark.py", *small], "bench.log",
                    min(400, opts.budget - (time.time() - opts.t0)))
    lines = [ln for ln in open(os.path.join(out, "bench.log")).read().splitlines()
             if ln.startswith("{")]
    if code or not lines:
        say(out, f"benchmark failed (exit {code}); see {out}/bench.log")
        return 1
    with open(os.path.join(out, "bench.json"), "w") as fh:
        fh.write(lines[-1] + "\n")
    say(out, f"benchmark ({sec} s): {lines[-1]}")
    for n in opts.sweep_runs:
        code, sec = run(out, [PY, "scripts/benchmark.py", *small, "--methods", "lnl", "--paths",
                              "fast", "--precisions", "fp32", "--runs", str(n)], "bench.log",
                        max(opts.budget - (time.time() - opts.t0), 1))
        line = open(os.path.join(out, "bench.log")).read().splitlines()[-1]
        if code or not line.startswith("{"):
            say(out, f"sweep benchmark at {n} runs: exit {code} after {sec} s (budget); stop")
            return 0 if n != opts.sweep_runs[0] else 1
        with open(os.path.join(out, "bench_sweep.jsonl"), "a") as fh:
            fh.write(line + "\n")
        say(out, f"sweep benchmark, {n} runs ({sec} s): {line}")
    return 0


# --------------------------------------------------------------------------- table
def state_dir(opts, rehearsal):
    """Where the table's carried state lives: .lease/ for a lease, .lease/rehearsal/ for a
    CPU rehearsal's (so that a lease never resumes a rehearsal's small runs)."""
    return os.path.join(opts.lease_dir, "rehearsal") if rehearsal else opts.lease_dir


def restore_state(out, outputs, lease_dir):
    """A fresh machine: unpack the carried state, unless this machine already holds runs."""
    tars = sorted(glob.glob(os.path.join(lease_dir, "state_*.tar.gz")))
    if glob.glob(os.path.join(outputs, STATE_GLOB)) or not tars:
        return
    for tar in tars:
        try:
            with tarfile.open(tar) as tf:
                members = safe_members(tf)
                tf.extractall(outputs, members=members)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise SystemExit(f"state archive {tar} is damaged ({str(exc)[:120]}); remove it "
                             "to start the table afresh, or restore it from where it came")
        say(out, f"restored {len(members)} files from {tar}")


def safe_members(tf):
    """The archive's members if every one is a plain file or folder inside a table run folder;
    else refuse (an archive is never allowed to write outside its destination)."""
    members = tf.getmembers()
    for m in members:
        parts = m.name.split("/")
        if (m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir())
                or not fnmatch.fnmatch(parts[0], STATE_GLOB)):
            raise SystemExit(f"refusing state archive: member {m.name!r} is not a file of a "
                             "table run folder")
    return members


def pack_state(out, outputs, chunk_mib=12):
    """The table's run folders (without the kept epoch_*.pth: last.pth resumes) into
    --out/state_<k>.tar.gz, whole run folders per archive and about chunk_mib MiB each at
    most: a file brought back from the device machine may hold 16 MiB (weights barely
    compress)."""
    def kept(name):
        return not (name.startswith("epoch_") and name.endswith(".pth"))

    chunks, total = [[]], 0
    for folder in sorted(glob.glob(os.path.join(outputs, STATE_GLOB))):
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder)
                   for f in files if kept(f))
        if chunks[-1] and total + size > chunk_mib * 2**20:
            chunks.append([])
            total = 0
        chunks[-1].append(folder)
        total += size
    for old in glob.glob(os.path.join(out, "state_*.tar.gz")):
        os.remove(old)
    for k, folders in enumerate(chunks):
        path = os.path.join(out, f"state_{k}.tar.gz")
        with tarfile.open(path + ".tmp", "w:gz") as tf:
            for folder in folders:
                tf.add(folder, arcname=os.path.basename(folder),
                       filter=lambda m: m if kept(os.path.basename(m.name)) else None)
        os.replace(path + ".tmp", path)
        mib = os.path.getsize(path) / 2**20
        say(out, f"packed {len(folders)} run folders into {path} ({mib:.1f} MiB"
                 f"{'; OVER the 16 MiB a file may bring back' if mib > 16 else ''})")


def table_state(outputs, sigmas, seeds=1):
    """{sigma2: {method: epochs done by its least advanced seed}} from the run folders."""
    import results  # scripts/results.py, beside this file: how far a run folder has got
    return {s: {m: min(results.epochs_done(os.path.join(outputs, f"cmnist_var{s}_seed{k}_{m}"))
                       for k in range(seeds))
                for m in ("baseline", "lnl")} for s in sigmas}


def cmd_table(opts, out):
    env = mnist_env(opts)
    outputs = os.path.join(ROOT, opts.runs_dir)
    os.makedirs(outputs, exist_ok=True)
    restore_state(out, outputs, state_dir(opts, opts.tiny))
    epochs = opts.epochs
    env.update({"SEEDS": str(opts.seeds), "METHODS": "baseline lnl", "EPOCHS": str(epochs),
                "DEVICE": opts.device, "OUTPUT_DIR": outputs,
                "EXTRA": " ".join(TINY) if opts.tiny else ""})
    sigmas = opts.sigmas
    groups = [sigmas[i:i + opts.group] for i in range(0, len(sigmas), opts.group)]
    say(out, f"table on {device_line()}: {len(sigmas)} sigma^2 in {len(groups)} sweep(s), "
             f"{epochs} + {epochs} epochs, budget {opts.budget} s")
    for group in groups:
        left = opts.budget - (time.time() - opts.t0)
        state = table_state(outputs, group, opts.seeds)
        if all(d["lnl"] >= epochs for d in state.values()):
            continue
        if left < 30:
            break
        say(out, f"sigma^2 {' '.join(group)}: {state}; {left:.0f} s left")
        code, sec = run(out, ["bash", "scripts/run_cmnist_table.sh"], "table.log", left,
                        {**env, "SIGMAS": " ".join(group)})
        say(out, f"sigma^2 {' '.join(group)}: exit {code} after {sec} s: "
                 f"{table_state(outputs, group, opts.seeds)}")
    with open(os.path.join(out, "table.log"), "a") as fh:  # few files may come back: one log
        for log in sorted(glob.glob(os.path.join(outputs, ".cmnist_table_*.log"))):
            fh.write(f"\n==> {log} <==\n" + open(log).read())
    pack_state(out, outputs)
    state = table_state(outputs, sigmas, opts.seeds)
    with open(os.path.join(out, "table_state.json"), "w") as fh:
        json.dump({**device_line(), "epochs": epochs, "seeds": opts.seeds, "state": state}, fh,
                  indent=1)
    left = [s for s, d in state.items() if d["lnl"] < epochs]
    say(out, f"table: {len(sigmas) - len(left)}/{len(sigmas)} sigma^2 finished"
             + (f"; to do: {' '.join(left)} (call table again, carrying .lease with this "
                "call's state_*.tar.gz: `collect` puts them there)" if left else ""))
    return 3 if left else 0


# --------------------------------------------------------------------------- here
def cmd_stage(opts, out):
    """Copy MNIST's four idx files into .lease/mnist (the device machine has no internet)."""
    from data_handler import MNIST_FILES, find_idx
    dest = os.path.join(opts.lease_dir, "mnist")
    os.makedirs(dest, exist_ok=True)
    for f in MNIST_FILES.values():  # each gzip'd (.gz) or raw
        src = find_idx(opts.mnist_from, f)
        if src is None:
            raise SystemExit(f"{os.path.join(opts.mnist_from, f)}[.gz] is missing: pass "
                             "--mnist_from a folder with MNIST's four idx files (e.g. "
                             "../shared/data/mnist)")
        shutil.copy(src, os.path.join(dest, os.path.basename(src)))
    ignored = subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", opts.lease_dir],
                             capture_output=True).returncode
    print(f"MNIST staged in {dest}" + ("" if ignored == 0 else
                                      f"; WARNING: {opts.lease_dir} is not ignored by git"))
    return 0


def from_gpu(path):
    """Whether a prove/bench record was made on a CUDA GPU (a CPU rehearsal's is not)."""
    try:
        text = open(path).read()
        first = json.loads(text.splitlines()[0] if path.endswith(".jsonl") else text)
    except (OSError, ValueError, IndexError):
        return False
    return first.get("gpu", first.get("device", "")) not in ("no CUDA GPU", "") and not str(
        first.get("device", "")).startswith("cpu")


def cmd_collect(opts, out):
    """Keep what a call brought back: records into results/, the state for the next call.
    Only GPU records of full-length runs enter the committed results/ (a rehearsal passes
    --records_dir and --ledger elsewhere, with --allow_cpu)."""
    src = opts.folder
    names = [n for n in ("prove.json", "prove.md", "bench.json", "bench_sweep.jsonl",
                         "table_state.json", "lease.log") if os.path.exists(os.path.join(src, n))]
    gpu = any(from_gpu(os.path.join(src, n)) for n in names if n.endswith(("json", "jsonl")))
    if names and not (gpu or opts.allow_cpu):
        print(f"records not kept: those in {src} were not made on a CUDA GPU (a rehearsal? "
              "pass --allow_cpu with --records_dir and --ledger elsewhere)")
        names = []
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for name in names:
        stem, ext = os.path.splitext(name)
        os.makedirs(opts.records_dir, exist_ok=True)
        dest = os.path.join(opts.records_dir, f"{stamp}_{stem}{ext}")
        shutil.copy(os.path.join(src, name), dest)
        print(f"kept {dest}")
    tars = sorted(glob.glob(os.path.join(src, "state_*.tar.gz")))
    if not tars:
        return 0
    unpacked = opts.unpack_dir
    mark = os.path.join(unpacked, ".written_by_gpu_lease")
    if os.path.exists(unpacked) and not os.path.exists(mark):
        raise SystemExit(f"{unpacked} exists and was not written by this script; move it aside")
    archives = []
    for tar in tars:  # every archive is checked before anything is replaced
        try:
            with tarfile.open(tar) as tf:
                archives.append((tar, safe_members(tf)))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise SystemExit(f"state archive {tar} is damaged ({str(exc)[:120]}); nothing was "
                             "collected; fetch the call's files again")
    keep = state_dir(opts, not gpu)
    os.makedirs(keep, exist_ok=True)
    for old in glob.glob(os.path.join(keep, "state_*.tar.gz")):
        os.remove(old)
    shutil.rmtree(unpacked, ignore_errors=True)
    os.makedirs(unpacked)
    open(mark, "w").close()
    for tar, members in archives:
        shutil.copy(tar, os.path.join(keep, os.path.basename(tar)))
        with tarfile.open(tar) as tf:
            tf.extractall(unpacked, members=members)
    print(f"state for the next table call: {keep}/state_*.tar.gz ({len(tars)} archives); "
          f"unpacked into {unpacked}")
    if not glob.glob(os.path.join(unpacked, "*", "results.json")):
        print("no run has finished yet: nothing for the ledger")
        return 0
    results = [PY, os.path.join(ROOT, "scripts", "results.py")]
    where = ["dataset_name=ColoredMNIST", f"epochs={opts.epochs}"]
    if not opts.allow_cpu:
        where.append("device=cuda*")
    finished = subprocess.run([*results, "ledger", unpacked, "--where", *where, "--into",
                               opts.ledger])
    if finished.returncode:
        print("nothing added to the ledger (no finished run matches "
              f"{' '.join(where)}), or a record there differs (listed above)")
        return finished.returncode
    subprocess.run([*results, "cmnist", opts.ledger, "--where", f"epochs={opts.epochs}",
                    "--out", opts.ledger.rstrip("/") + "_table"], check=True)
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("steps", nargs="+", metavar="step",
                   help="prove, bench, table (one or more, in this order, sharing --budget); "
                        "or stage; or collect FOLDER (the folder a call's files came back to)")
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "outputs",
                                                                          "lease"),
                   help="where the step writes its records (default: $OUT, else outputs/lease)")
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a rehearsal")
    p.add_argument("--tiny", action="store_true", help="a small CPU rehearsal of the step")
    p.add_argument("--budget", type=float, default=510,
                   help="seconds of work before the step stops cleanly (a call may run 600)")
    p.add_argument("--epochs", type=int, default=None,
                   help="table, collect: epochs per stage (default 100; 1 with --tiny)")
    p.add_argument("--sigmas", nargs="+", type=sigma2, default=ISSUE_ORDER, help="table: in this order")
    p.add_argument("--group", type=int, default=7, help="table: sigma^2 per sweep")
    p.add_argument("--seeds", type=int, default=1,
                   help="table: seeds 0..N-1 (finished runs are kept: raise N to add seeds)")
    p.add_argument("--sweep_runs", type=int, nargs="+", default=[7, 21],
                   help="bench: sweep sizes timed after the main benchmark")
    p.add_argument("--runs_dir", default=None,
                   help="table: the --output_dir of its runs (default: outputs, as "
                        "run_cmnist_table.sh; with --tiny: outputs/lease_tiny)")
    p.add_argument("--lease_dir", default=os.path.join(ROOT, ".lease"),
                   help="what travels to the GPU machine (name it in the call's carry): "
                        "mnist/ and the table's state_*.tar.gz")
    p.add_argument("--data_root", default="./data")
    p.add_argument("--mnist_from", default=os.path.join(ROOT, "..", "shared", "data", "mnist"),
                   help="stage: the folder holding MNIST's four gzip idx files")
    p.add_argument("--ledger", default=os.path.join(ROOT, "results", "cmnist"),
                   help="collect: the committed ledger folder (the table goes to <ledger>_table)")
    p.add_argument("--unpack_dir", default=os.path.join(ROOT, "outputs", "lease_state"),
                   help="collect: where the state's run folders are unpacked (replaced each time)")
    p.add_argument("--records_dir", default=os.path.join(ROOT, "results", "gpu"),
                   help="collect: where the prove/bench records are kept")
    p.add_argument("--allow_cpu", action="store_true",
                   help="collect: keep CPU records too (a rehearsal, into other folders)")
    opts = p.parse_args(argv)
    opts.folder = None
    if opts.steps[0] == "collect":
        if len(opts.steps) != 2:
            p.error("collect takes one FOLDER: the files_at folder of the call's reply")
        opts.steps, opts.folder = ["collect"], opts.steps[1]
    elif opts.steps == ["stage"]:
        pass
    elif not set(opts.steps) <= {"prove", "bench", "table"} or len(set(opts.steps)) < len(
            opts.steps):
        p.error(f"steps: prove, bench and/or table (each once), or stage, or collect FOLDER; "
                f"got {' '.join(opts.steps)}")
    if not (opts.budget > 0 and math.isfinite(opts.budget)):
        p.error(f"--budget must be a positive number of seconds; got {opts.budget}")
    for name in ("group", "seeds"):
        if getattr(opts, name) < 1:
            p.error(f"--{name} must be at least 1; got {getattr(opts, name)}")
    if opts.epochs is not None and opts.epochs < 1:
        p.error(f"--epochs must be at least 1; got {opts.epochs}")
    if any(n < 1 for n in opts.sweep_runs):
        p.error(f"--sweep_runs must be at least 1 each; got {opts.sweep_runs}")
    if opts.tiny:
        opts.device = "cpu"
    if not opts.epochs:
        opts.epochs = 1 if opts.tiny else 100
    if opts.runs_dir is None:
        opts.runs_dir = os.path.join("outputs", "lease_tiny") if opts.tiny else "outputs"
    opts.t0 = time.time()
    return opts


def main(argv=None):
    """Run the steps asked for in order; the exit code is the first failing step's (prove
    and bench 1; table 3 while sigma^2 are left), else 0."""
    opts = parse_args(argv)
    steps = {"prove": cmd_prove, "bench": cmd_bench, "table": cmd_table, "stage": cmd_stage,
             "collect": cmd_collect}
    if opts.steps[0] not in ("stage", "collect"):
        os.makedirs(opts.out, exist_ok=True)
    codes = [steps[step](opts, opts.out) for step in opts.steps]
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    sys.exit(main())
