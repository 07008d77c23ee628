"""A GPU lease that trains (issues #24, #34: 15 minutes of GPU in all, the machine's start
included, in commands of at most 10 minutes). A lent machine is bare, has its own python3 and
torch, no internet, and goes back after the lease, so each call carries its inputs in (.lease/
and the committed results/) and brings its records out ($OUT).

On the GPU machine (everything is written under --out, which defaults to $OUT there):
  lease   the plan of docs/gpu_lease.md in one call: smoke; prove only when the training code
          changed since the last passing prove (results/gpu/*_prove.json names its code's
          sha256 and commit); then long, which measures the layouts first.
  smoke   at most a minute: CUDA visible, one recorded step per graph-safe method with its
          self-check passing (tests/test_fast.py's real CUDA-graph tests). smoke.json.
  prove   tests/test_fast.py with CUDA visible, then every method for a few hundred steps on
          CUDA with --fast auto and --fast off: baseline, LNL and BlindEye on Colored MNIST
          (300 steps; stage 2 from the baseline), IRM and AND-mask on IRM's Colored MNIST.
          prove.md / prove.json, naming the training code's sha256 and commit.
  bench   scripts/benchmark.py at full size, then the sweep at --sweep_runs runs (on demand:
          a lease measures its layouts on the plan itself). bench.json, bench_sweep.jsonl.
  long    the CPU's long runs (long_runs.py, beside this file: the same plan, resume points, ledger)
          continued on the GPU: the Colored-MNIST sets built in parallel first; each candidate
          layout (--layouts: N processes, or one process training N runs together on their own
          CUDA streams) trains the plan for --measure_s while its throughput is measured; the
          fastest trains the rest of the budget. long.json holds every candidate's figure.
          Resume points and records are packed into --out as long_runs.tar.gz.00, .01, ...
          (the device tool brings back at most 8 files, 2 folders down: a resume point is 3).
Here, on the development machine (no GPU):
  stage   MNIST's four idx files into .lease/mnist and the commit into .lease/code.json.
  collect FOLDER  what a call brought back (the device tool's files_at): smoke, prove, bench and
          long records into results/gpu/; resume points further along than ours (their
          checkpoint loaded, weights only, and its epoch checked) into results/in_progress/,
          ours kept aside; finished runs' records the ledger lacks into results/cmnist/.

--tiny rehearses any step on the CPU (600 training images, short presets; a long rehearsal
trains its own tiny plan, never the committed resume points). docs/gpu_lease.md has the calls.
"""
import argparse
import glob
import hashlib
import json
import math
import os
import shutil
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(ROOT)  # colored_mnist's MNIST file names (imported where used: it loads torch)
sys.path.append(os.path.join(ROOT, "scripts"))  # plans and plan_runs: the plan it continues
sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # keep, long_runs: beside it
import keep  # noqa: E402  (short_lived/keep.py, beside this file: resume points through git)
import ledger  # noqa: E402
from errors import UserError  # noqa: E402
from safe_files import (LAST, append_text, held, read_bytes, read_json,  # noqa: E402
                        read_jsonl, read_run, read_text, whole, write_bytes, write_json,
                        write_text, write_with)
PY = sys.executable
TINY = ["--max_train_samples", "600", "--max_test_samples", "500"]
KEEP, LEDGER = (os.path.join(ROOT, "results", d) for d in ("in_progress", "cmnist"))
PROVE_STEPS = 300  # training steps per Colored-MNIST prove run (batch 128)
# What the device tool brings back from $OUT (its README, "Limits"): at most 8 files, 16 MiB
# each, 64 MiB together, none more than 2 folders down. A resume point is 3 folders down
# (in_progress/<run>/checkpoints/last.pth) and a plan holds dozens of files, so a long call
# packs its resume points and records into one archive, cut into parts that fit.
RETURN_FILES, RETURN_FILE_BYTES, RETURN_TOTAL_BYTES, RETURN_DEPTH = 8, 16 << 20, 64 << 20, 2
ARCHIVE, PART_BYTES = "long_runs.tar.gz", 15 << 20
# the steps' logs, packed into the archive (logs/<name>); collect keeps them beside the records
LOG_FILES = ("smoke.log", "prove_pytest.log", "prove_runs.log", "bench.log", "long.log",
             "prove.md")
# what collect reads from an archive it is handed (untrusted): caps before any byte is written
MEMBER_BYTES, UNPACKED_BYTES, MEMBERS = 64 << 20, 512 << 20, 2000
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def say(out, text):
    """A progress line on the terminal and in --out's lease.log."""
    line = f"[{time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    append_text(os.path.join(out, "lease.log"), line + "\n", out)


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
    from colored_mnist import MNIST_FILES, find_idx
    src = os.path.join(opts.lease_dir, "mnist")
    if not all(find_idx(src, f) for f in MNIST_FILES.values()):
        raise SystemExit(f"MNIST is not in {src}; run `python short_lived/gpu_lease.py stage` on "
                         "the development machine and name .lease in the call's carry")
    return {"MNIST_FROM": src, "MNIST_DIR": src, "DATA_ROOT": opts.data_root,
            "PYTHON": PY, "PYTHONUNBUFFERED": "1"}


def device_line():
    import torch
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": name,
            "python": sys.version.split()[0]}


def ensure_mnist(out, env, opts):
    code, _ = run(out, [PY, "fetch_data.py", "mnist", "--if_missing", "--from", env["MNIST_FROM"],
                        "--data_root_base", opts.data_root], "prove_runs.log", 300, env)
    if code:
        raise SystemExit(f"importing MNIST failed (exit {code}); see {out}/prove_runs.log")


# --------------------------------------------------------------------------- prove
def seconds_left(opts):
    return opts.budget - (time.time() - opts.t0)


def prove_runs(opts):
    """Every method for a few hundred steps, with --fast auto and --fast off: (label, argv)."""
    steps = (["--max_train_samples", str(128 * PROVE_STEPS), "--max_test_samples", "2000"]
             if not opts.tiny else TINY)
    cmnist = ["--dataset_name", "ColoredMNIST", "--color_var", "0.020", "--epochs", "1",
              "--seed", "0", *steps]
    for fast in ("auto", "off"):
        root = os.path.join("outputs", "lease_prove", fast)
        common = ["--device", opts.device, "--fast", fast, "--data_root_base", opts.data_root,
                  "--output_dir", root, "--overwrite"]
        base = os.path.join(root, "baseline", LAST)
        yield f"baseline/{fast}", [*cmnist, *common, "--method", "baseline", "--lr", "0.01",
                                   "--experiment_name", "baseline"]
        for m in ("lnl", "blindeye"):
            yield f"{m}/{fast}", [*cmnist, *common, "--method", m, "--lr", "0.001",
                                  "--init_checkpoint", base, "--experiment_name", m]
        for m in ("irm", "andmask"):
            short = ["--epochs", "5", "--eval_every", "5"] if opts.tiny else []
            yield f"{m}/{fast}", ["--config", f"configs/irm_cmnist_{m}.yaml", *common, *short,
                                  "--experiment_name", m]


def prove_row(label, argv, code, sec):
    """One run's line for prove.md: how it ran its steps and what the self-check found."""
    name = argv[argv.index("--experiment_name") + 1]
    folder = os.path.join(ROOT, argv[argv.index("--output_dir") + 1], name)
    rec = {}
    if os.path.exists(os.path.join(folder, "results.json")):
        rec = json.load(open(os.path.join(folder, "results.json")))
    step = rec.get("provenance", {}).get("step_path", {})
    graph = step.get("cuda_graph") or {}
    check = step.get("self_check") or {}
    return {"run": label, "exit": code, "seconds": sec, "test_acc": rec.get("test_acc"),
            "device": rec.get("config", {}).get("device"),
            "resident_data": step.get("resident_data"), "graph_replays": graph.get("replays"),
            "self_check": check.get("outcome"), "largest_difference": check.get(
                "largest_difference"), "check_seconds": check.get("seconds")}


def cmd_prove(opts, out):
    env = mnist_env(opts)
    info = device_line()
    say(out, f"prove on {info}")
    ensure_mnist(out, env, opts)
    code, sec = run(out, [PY, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                          "tests/test_fast.py"], "prove_pytest.log",
                    min(240, seconds_left(opts)), env)
    text = open(os.path.join(out, "prove_pytest.log")).read()
    graph_tests = text.count("PASSED tests/test_fast.py::test_cuda_graph_step_matches_eager")
    tests = {"exit": code, "seconds": sec, "cuda_graph_tests_passed": graph_tests,
             "summary": text.strip().splitlines()[-1] if text.strip() else ""}
    say(out, f"tests/test_fast.py: exit {code} in {sec} s; {tests['summary']}; real CUDA-graph "
             f"tests passed (one per graph-safe method): {graph_tests}")
    rows = []
    for label, argv in prove_runs(opts):
        if seconds_left(opts) < 20:
            rows.append({"run": label, "exit": "not run (budget)"})
            continue
        code, sec = run(out, [PY, "main.py", *argv], "prove_runs.log",
                        min(300, seconds_left(opts)), env)
        rows.append(prove_row(label, argv, code, sec))
        say(out, "  ".join(f"{k}={v}" for k, v in rows[-1].items()))
    want_graph = info["gpu"] != "no CUDA GPU"
    graph_safe = ("baseline", "lnl", "blindeye")
    failed = [r["run"] for r in rows if r["exit"] != 0 or r.get("test_acc") is None
              or (want_graph and r["run"].split("/")[0] in graph_safe
                  and r["run"].endswith("/auto")
                  and not (r["graph_replays"] and r["self_check"] == "passed"))]
    if tests["exit"]:
        failed.append(f"tests/test_fast.py (exit {tests['exit']})")
    if want_graph and graph_tests < len(graph_safe):
        failed.append("a real CUDA-graph test did not pass")
    report = {**info, **code_state(opts.lease_dir), "tests": tests, "runs": rows,
              "failed": failed}
    write_json(os.path.join(out, "prove.json"), report, out, indent=1)
    head = list(max(rows, key=len)) if rows else []
    write_text(os.path.join(out, "prove.md"),
               f"# prove: {info}\n\ncode: commit {report['commit']}, training code sha256 "
               f"{report['code_sha256']}\n\ntests/test_fast.py: {tests['summary']} (real "
               f"CUDA-graph tests passed: {graph_tests})\n\n"
               f"| {' | '.join(head)} |\n|{'---|' * len(head)}\n"
               + "".join(f"| {' | '.join(str(r.get(k, '')) for k in head)} |\n" for r in rows)
               + f"\nfailed: {', '.join(failed) or 'nothing'}\n", out)
    say(out, f"prove: {'FAILED: ' + ', '.join(failed) if failed else 'all passed'}")
    return 1 if failed else 0


# --------------------------------------------------------------------------- bench
def cmd_bench(opts, out):
    # one timed epoch per row (after its warm-up): three took 165 s of a 450 s call on an
    # H200 (2026-11-30) and left the sweep 45 s, too few to finish
    small = (["--device", "cpu", "--train_samples", "256", "--epochs", "1"] if opts.tiny
             else ["--device", opts.device, "--epochs", "1"])
    say(out, f"bench on {device_line()}")
    code, sec = run(out, [PY, "scripts/benchmark.py", *small], "bench.log",
                    min(300, seconds_left(opts)))
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
                        max(seconds_left(opts), 1))
        line = open(os.path.join(out, "bench.log")).read().splitlines()[-1]
        if code or not line.startswith("{"):
            say(out, f"sweep benchmark at {n} runs: exit {code} after {sec} s (budget); stop")
            return 0 if n != opts.sweep_runs[0] else 1
        with open(os.path.join(out, "bench_sweep.jsonl"), "a") as fh:
            fh.write(line + "\n")
        say(out, f"sweep benchmark, {n} runs ({sec} s): {line}")
    return 0


# --------------------------------------------------------------------------- long
def plain_tree(src, skip=()):
    """(path, path relative to src) of src's plain files (no links), in name order, but for
    src's folders named in skip; nothing when src is absent."""
    for folder, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not (folder == src and d in skip))
        for name in sorted(files):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                yield path, os.path.relpath(path, src)


def copy_plain_tree(src, dst, skip=()):
    """src's plain files (no links) into dst, folders created, but for src's folders named
    in skip; nothing when src is absent."""
    for path, rel in plain_tree(src, skip):
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copyfile(path, os.path.join(dst, rel))


# --------------------------------------------------------------------------- smoke
GRAPH_SAFE = ("baseline", "lnl", "blindeye")
SMOKE_SECONDS = 60


def cmd_smoke(opts, out):
    """At most a minute: CUDA visible, and one recorded step per graph-safe method whose
    self-check passes (tests/test_fast.py's real CUDA-graph test, one per method). Fails the
    lease (exit 1) when it does not pass: no minute goes to training on a broken path. On a
    CPU rehearsal (--tiny) those tests skip and the smoke says so."""
    info = device_line()
    code, sec = run(out, [PY, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                          "tests/test_fast.py", "-k", "cuda_graph_step_matches_eager"],
                    "smoke.log", min(SMOKE_SECONDS, max(seconds_left(opts), 1)))
    text = read_text(os.path.join(out, "smoke.log"), out)
    passed = text.count("PASSED tests/test_fast.py::test_cuda_graph_step_matches_eager")
    cuda = info["gpu"] != "no CUDA GPU"
    ok = (code == 0 and passed == len(GRAPH_SAFE)) if cuda else opts.tiny
    record = {**info, "exit": code, "seconds": sec, "recorded_steps_checked": passed,
              "passed": ok, **code_state(opts.lease_dir)}
    write_json(os.path.join(out, "smoke.json"), record, out, indent=1)
    say(out, f"smoke ({sec} s): CUDA {'visible' if cuda else 'not visible'}; recorded steps "
             f"whose self-check passed: {passed} of {len(GRAPH_SAFE)} -> "
             f"{'passed' if ok else 'FAILED: see smoke.log'}"
             + ("" if cuda else " (a CPU rehearsal: nothing to record)"))
    return 0 if ok else 1


# --------------------------------------------------------------------------- prove, when needed
# what a prove proves: the code that trains (its steps, networks, data, the fast path)
TRAINING_CODE = ("fast.py", "solver.py", "methods.py", "network.py", "runtime.py",
                 "data_handler.py", "colored_mnist.py", "dataset_specs.py", "image_datasets.py",
                 "andmask_datasets.py")


def code_digest():
    """sha256 of the training code (TRAINING_CODE, names and bytes)."""
    h = hashlib.sha256()
    for name in TRAINING_CODE:
        h.update(f"{name}:".encode() + read_bytes(os.path.join(ROOT, name), ROOT) + b";")
    return h.hexdigest()


def code_state(lease_dir=os.path.join(ROOT, ".lease")):
    """{'commit', 'code_sha256'}: the checkout's commit (read by git here; on a lent machine,
    whose copy has no history, the one `stage` wrote into .lease/code.json) and the training
    code's digest, which decides whether a prove is needed."""
    try:
        done = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=30)
        commit = done.stdout.strip() if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    if commit is None:
        try:
            staged = read_json(os.path.join(lease_dir, "code.json"), lease_dir, default={})
            commit = staged.get("commit") if isinstance(staged.get("commit"), str) else None
        except (OSError, UserError):
            pass
    return {"commit": commit, "code_sha256": code_digest()}


def last_passing_prove(records_dir, digest):
    """The newest prove record in records_dir that passed on this training code, or None."""
    if not os.path.isdir(records_dir):
        return None
    for name in sorted(os.listdir(records_dir), reverse=True):
        if not name.endswith("_prove.json"):
            continue
        try:
            record = read_json(os.path.join(records_dir, name), records_dir)
        except (OSError, UserError):
            continue
        if record.get("failed") == [] and record.get("code_sha256") == digest:
            return {"record": name, "commit": record.get("commit")}
    return None


def prove_needed(opts, out):
    """Whether this lease must run the full prove: only when the training code changed since
    the last prove that passed (results/gpu/*_prove.json names its code's digest and commit)."""
    state = code_state(opts.lease_dir)
    last = last_passing_prove(opts.records_dir, state["code_sha256"])
    if last is None or opts.prove == "always":
        say(out, "prove: the training code has no passing prove yet (or --prove always): "
                 "running it")
        return True
    say(out, f"prove: skipped, the training code is the one {last['record']} proved (commit "
             f"{last['commit']}); each recording's self-check still runs in every run")
    return False


# --------------------------------------------------------------------------- long
MNIST_TRAIN = 60000  # Colored MNIST's training images (max_train_samples 0)
# an epoch's cost relative to LNL's (2026-11-30 on one CPU core: about 85 s per baseline epoch,
# 250 s per LNL epoch): the unit a lease's throughput is counted in
LNL_EPOCH_WEIGHT = {"baseline": 1 / 3, "gray": 1 / 3, "lnl": 1.0, "blindeye": 1.0}
TINY_RUNS = os.path.join("outputs", "lease_tiny")  # --tiny's work folder, this tool's alone
STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) steps: ")


def progress(folder):
    """(training examples done, the time this piece's first step was logged): from the run's
    checkpoint (epochs and the examples of its partial epoch) and run.log's last 'steps:' line.
    None when the run has no readable checkpoint."""
    from checkpoints import read_checkpoint
    try:
        ckpt = read_checkpoint(os.path.join(folder, LAST))
        args = ckpt.get("args") or {}
        size = whole(args.get("max_train_samples")) or MNIST_TRAIN
        partial = ckpt.get("partial") or {}
        done = whole(ckpt.get("epoch")) * size + (whole(partial.get("count")) or 0)
        stamps = STAMP.findall(read_text(os.path.join(folder, "run.log"),
                                         os.path.dirname(folder)))
    except (OSError, UserError, TypeError):
        return None
    first = time.mktime(time.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S")) if stamps else None
    return done, size, first


def layout_figures(life, before):
    """What one candidate layout trained: per run, the examples since `before` over the
    seconds from its first logged step to its checkpoint's save (the start-up is left out:
    a layout is chosen for the minutes after it); summed over runs."""
    epochs_per_s, lnl_per_s, runs = 0.0, 0.0, 0
    for run in life.plan:
        folder = life.work(run)
        now = progress(folder)
        if now is None or now[2] is None:
            continue
        gained = now[0] - (before.get(run["name"]) or (0,))[0]
        window = os.path.getmtime(os.path.join(folder, LAST)) - now[2]
        if gained <= 0 or window <= 0:
            continue
        rate = gained / now[1] / window
        epochs_per_s += rate
        lnl_per_s += rate * LNL_EPOCH_WEIGHT.get(run["variant"], 1.0)
        runs += 1
    return {"runs_trained": runs, "epochs_per_s": round(epochs_per_s, 4),
            "lnl_epochs_per_min": round(60 * lnl_per_s, 2)}


def build_caches(out, opts, sigmas, env):
    """The Colored-MNIST sets of the plan's sigma^2, built in parallel processes (a minute each
    on one core; a bare machine has none): before any timing, so no layout pays for them."""
    code = ("import sys, colored_mnist as c; "
            "c.load_or_build_cmnist(sys.argv[1], float(sys.argv[2]), 0)")
    procs = [subprocess.Popen([PY, "-c", code, opts.data_root, s], cwd=ROOT, env={
        **os.environ, **env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL) for s in sigmas]
    codes = [p.wait() for p in procs]
    say(out, f"Colored-MNIST sets of sigma^2 {', '.join(sigmas)} ready (exits {codes})")


def parse_layout(text):
    """'4x1' -> (4 processes, 1 run each); '1x8' -> one process training 8 runs together."""
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m or not all(int(g) >= 1 for g in m.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a layout LANESxPER_PROCESS (e.g. 4x1, "
                                         "1x8)")
    return int(m.group(1)), int(m.group(2))


def cmd_long(opts, out):
    """Continue the long runs on this device (long_runs.py, beside this file) from the resume
    points and ledger carried in. First each candidate layout (--layouts) trains the plan for about
    --measure_s seconds and its throughput is measured; the fastest trains for the rest of the
    budget. Every candidate's figure goes into long.json. At the end resume points and records
    are packed into --out (pack)."""
    import long_runs
    env = mnist_env(opts)
    ensure_mnist(out, env, opts)
    scratch = os.path.normpath(os.path.join(ROOT, opts.runs_dir)) + "_returned"
    if os.path.isdir(scratch):  # this tool's own folder, from an earlier call on this machine
        shutil.rmtree(scratch)
    kept, records = os.path.join(scratch, "in_progress"), os.path.join(scratch, "cmnist")
    plan = ["--epochs", str(opts.epochs)]
    if opts.tiny:  # its own small plan: never from the committed resume points (other runs)
        plan += ["--tiny", "--sigmas", "0.020", "--seeds", "0", "--variants", "baseline", "lnl",
                 "blindeye", "gray"]
    for mine, there, committed in ((opts.keep, kept, KEEP), (opts.ledger, records, LEDGER)):
        if not (opts.tiny and mine == committed):  # the headline's runs, not in_progress/lff
            copy_plain_tree(mine, there, keep.nested_keeps(long_runs.PLAN_FOLDERS, "headline"))
    work = os.path.join(ROOT, opts.runs_dir)
    if opts.tiny and os.path.normpath(opts.runs_dir) == TINY_RUNS and os.path.isdir(work):
        shutil.rmtree(work)  # this tool's own rehearsal runs: a rehearsal starts from nothing
        say(out, f"removed {opts.runs_dir}, an earlier rehearsal's runs")
    folders = ["--keep", kept, "--ledger", records, "--work", work]
    life = long_runs.lifecycle(long_runs.plan_of(long_runs.parse_args(
        ["status", *plan, *folders])), types.SimpleNamespace(work=work, keep=kept,
                                                              ledger=records, device=opts.device))
    build_caches(out, opts, sorted({r["sigma"] for r in life.plan}), env)

    def train(layout, budget, log_name="long.log"):
        lanes, per_process = layout
        return run(out, [PY, "short_lived/long_runs.py", "run", *plan, *folders,
                         "--device", opts.device, "--budget", f"{max(budget, 1):.0f}",
                         "--lanes", str(lanes), "--per_process", str(per_process),
                         "--data_root", opts.data_root, "--mnist_from", env["MNIST_FROM"]],
                   log_name, budget + 90, env)

    figures, code, trained = [], 0, 0.0
    candidates = [] if opts.layout else list(opts.layouts)
    life.restore()  # the resume points carried in become work folders: progress starts there
    for layout in candidates:
        if seconds_left(opts) < opts.measure_s + 120:  # keep time to train the chosen one
            break
        before = {r["name"]: progress(life.work(r)) for r in life.plan}
        code, sec = train(layout, opts.measure_s)
        trained += sec
        figure = layout_figures(life, before)
        if not figure["runs_trained"]:  # a window that trained nothing measures nothing
            figure.update(epochs_per_s=None, lnl_epochs_per_min=None)
        figures.append({"layout": f"{layout[0]}x{layout[1]}", "lanes": layout[0],
                        "per_process": layout[1], "seconds": sec, "exit": code, **figure})
        say(out, f"layout {figures[-1]['layout']}: {figures[-1]}")
        if code != long_runs.MORE_TO_DO:  # a run failed, or the plan is done: nothing to time
            break
    measured = [f for f in figures if f["lnl_epochs_per_min"] is not None]
    best = opts.layout or (max(measured, key=lambda f: f["lnl_epochs_per_min"])
                           if measured else None)
    chosen = best if isinstance(best, tuple) else (
        (best["lanes"], best["per_process"]) if best else (opts.lanes, 1))
    budget = seconds_left(opts)
    if budget > 30 and (code == long_runs.MORE_TO_DO or not figures):
        how = ("measured fastest" if measured else "as asked" if opts.layout or not figures
               else "no layout trained anything while timed: --lanes")
        say(out, f"long runs on {device_line()} for {budget:.0f} s, layout "
                 f"{chosen[0]}x{chosen[1]} ({how})")
        code, sec = train(chosen, budget)
        trained += sec
    status = subprocess.run([PY, "short_lived/long_runs.py", "status", *plan, *folders],
                            cwd=ROOT, capture_output=True, text=True).stdout
    write_json(os.path.join(out, "long.json"),
               {**device_line(), **code_state(opts.lease_dir), "exit": code,
                "seconds_training": trained,
                "layouts": figures, "chosen": f"{chosen[0]}x{chosen[1]}",
                "status": status.splitlines()}, out, indent=1)
    opts.scratch = scratch  # main() packs it with the step logs once every step has ended
    meaning = {0: "every run of the plan finished", long_runs.MORE_TO_DO: "more to do"}.get(
        code, "a run failed: see long.log")
    say(out, f"long runs: exit {code} ({meaning}) after {trained:.0f} s of training\n{status}")
    return code


def cmd_lease(opts, out):
    """The whole lease in one call: smoke (a minute at most), the full prove only when the
    training code changed since the last passing one, then the long runs (layouts measured,
    the fastest trains the rest)."""
    if cmd_smoke(opts, out):
        return 1
    if opts.prove != "never" and prove_needed(opts, out) and cmd_prove(opts, out):
        return 1
    return cmd_long(opts, out)


def pack(folder, out):
    """folder's in_progress/ and cmnist/ (plain files only; none without a folder) and the
    steps' logs in out (LOG_FILES, moved in: the reply carries at most 8 files) as one gzip'd
    tar in out, cut into parts of PART_BYTES (long_runs.tar.gz.00, .01, ...)."""
    allowed = {"in_progress": set(keep.RESUME_POINT), "cmnist": set(ledger.LEDGER_FILES)}
    whole = os.path.join(out, ARCHIVE)
    logs = [n for n in LOG_FILES if os.path.isfile(os.path.join(out, n))
            and not os.path.islink(os.path.join(out, n))]
    with tarfile.open(whole, "w:gz", compresslevel=1) as tar:
        for top in ("in_progress", "cmnist"):
            for path, rel in plain_tree(os.path.join(folder, top)) if folder else ():
                if rel.split(os.sep, 1)[-1] in allowed[top]:  # what collect takes, no more
                    tar.add(path, arcname=os.path.join(top, rel), recursive=False)
        for name in logs:
            tar.add(os.path.join(out, name), arcname=f"logs/{name}", recursive=False)
    for name in logs:
        os.remove(os.path.join(out, name))
    parts = []
    with open(whole, "rb") as fh:
        for index, chunk in enumerate(iter(lambda: fh.read(PART_BYTES), b"")):
            parts.append(f"{ARCHIVE}.{index:02d}")
            with open(os.path.join(out, parts[-1]), "wb") as part:
                part.write(chunk)
    os.remove(whole)
    return parts


def returnable(out):
    """One line per file under out that the device tool would not bring back (RETURN_*)."""
    lines, total, count = [], 0, 0
    for d, _, files in os.walk(out):
        for name in sorted(files):
            path = os.path.join(d, name)
            rel = os.path.relpath(path, out)
            size = os.path.getsize(path)
            count, total = count + 1, total + size
            if rel.count(os.sep) > RETURN_DEPTH:
                lines.append(f"{rel}: more than {RETURN_DEPTH} folders down")
            elif size > RETURN_FILE_BYTES:
                lines.append(f"{rel}: {size} bytes, over {RETURN_FILE_BYTES}")
            elif count > RETURN_FILES:
                lines.append(f"{rel}: file {count}, over {RETURN_FILES}")
            elif total > RETURN_TOTAL_BYTES:
                lines.append(f"{rel}: {total} bytes in all, over {RETURN_TOTAL_BYTES}")
    return lines


# --------------------------------------------------------------------------- here
def cmd_stage(opts, out):
    """Copy MNIST's four idx files into .lease/mnist (the device machine has no internet) and
    name the checkout's commit in .lease/code.json."""
    from colored_mnist import MNIST_FILES, find_idx
    dest = os.path.join(opts.lease_dir, "mnist")
    os.makedirs(dest, exist_ok=True)
    for f in MNIST_FILES.values():  # each gzip'd (.gz) or raw
        src = find_idx(opts.mnist_from, f)
        if src is None:
            raise SystemExit(f"{os.path.join(opts.mnist_from, f)}[.gz] is missing: pass "
                             "--mnist_from a folder with MNIST's four idx files (e.g. "
                             "../shared/data/mnist)")
        shutil.copy(src, os.path.join(dest, os.path.basename(src)))
    write_json(os.path.join(opts.lease_dir, "code.json"), code_state(opts.lease_dir),
               opts.lease_dir)  # the commit, for a machine whose copy has no git history
    ignored = subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", opts.lease_dir],
                             capture_output=True).returncode
    print(f"MNIST staged in {dest}" + ("" if ignored == 0 else
                                      f"; WARNING: {opts.lease_dir} is not ignored by git"))
    return 0


def from_gpu(path):
    """Whether a prove/bench record was made on a CUDA GPU (a CPU rehearsal's is not); a
    damaged or linked record is not (safe_files reads it, bounded)."""
    try:
        if path.endswith(".jsonl"):
            rows, _ = read_jsonl(path)
            first = rows[0] if rows else {}
        else:
            first = read_json(path)
    except (OSError, UserError):
        return False
    device = first.get("gpu", first.get("device", ""))
    return isinstance(device, str) and device not in ("no CUDA GPU", "") and not str(
        first.get("device", "")).startswith("cpu")


def plain_files(folder, allowed):
    """folder's files if each is a plain file (no link) named in allowed; else one line."""
    found = []
    for d, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path) or (name in files and rel not in allowed) or (
                    name in dirs and rel != "checkpoints"):
                refuse(folder, f"{rel!r} is not a file a resume point or record holds")
            if name in files:
                found.append(rel)
    return found


def fetched_runs(src, kind, plan):
    """(name, folder) of each run folder in src/kind (in_progress or cmnist) that the headline
    plan holds, in name order; any other folder is skipped with one line."""
    top = os.path.join(src, kind)
    for name in sorted(os.listdir(top)) if os.path.isdir(top) else []:
        if name in plan:
            yield name, os.path.join(top, name)
        else:
            print(f"skipped {os.path.join(top, name)}: not a run of the headline plan")


def fetched_checkpoint(folder, root, epochs):
    """None when a fetched resume point's checkpoint loads as tensors and plain values only
    (weights_only: checkpoints.read_checkpoint) and holds the epochs its metrics record; else
    one line saying why it may not replace ours."""
    from checkpoints import read_checkpoint  # loads torch: only collect needs it
    from safe_files import under
    path = os.path.join(folder, LAST)
    try:
        under(path, root)  # plain_files checked the tree: no link anywhere in it
        ckpt = read_checkpoint(path)
    except UserError as err:
        return f"its checkpoint does not load ({err})"
    if whole(ckpt.get("epoch")) != epochs:
        return (f"its checkpoint holds epoch {ckpt.get('epoch')!r} but its metrics record "
                f"{epochs}: the two do not belong together")
    return None


def set_aside(folder, root, into, name):
    """A copy of a resume point (plain files) under `into`, kept before collect replaces it."""
    dest = os.path.join(into, time.strftime("%Y%m%d_%H%M%S"), name)
    keep.copy_resume_point(folder, dest, root, into)
    return dest


def collect_long(opts, src):
    """A long call's resume points and records: a fetched resume point replaces ours only when
    it is further along, its checkpoint loads (weights only) and holds the epoch its metrics
    say (and our long runs are not running); what it replaces is kept aside. A record the
    ledger lacks is added; anything else is kept as it is, with one line."""
    import long_runs  # beside this file: the runs' folders and checks
    import plans  # scripts/plans.py
    plan = {r["name"]: r for r in plans.headline_plan(opts.epochs, tiny=opts.tiny)}
    life = long_runs.lifecycle(list(plan.values()), opts)
    top = os.path.join(src, "in_progress")
    for name, theirs in fetched_runs(src, "in_progress", plan):
        run, ours = plan[name], life.keep(plan[name])
        plain_files(theirs, set(keep.RESUME_POINT))
        keep.check_record(run, theirs, top)
        args = read_json(os.path.join(theirs, "args.json"), top)
        if not (str(args.get("device", "")).startswith("cuda") or opts.allow_cpu):
            print(f"skipped {theirs}: not trained on a CUDA GPU (a rehearsal? --allow_cpu)")
            continue
        work = life.work(run)
        if held(work):
            raise SystemExit(f"{work} is training here: stop the long runs first "
                             f"({long_runs.stop_advice(life.opts)}), then collect again")
        got, have = read_run(theirs, top).epochs, life.done(run, "keep")
        if got <= have:
            print(f"kept {ours}: at epoch {have}, as far as or further than the fetched {got}")
            continue
        wrong = fetched_checkpoint(theirs, top, got)
        if wrong:
            print(f"kept {ours}: the fetched resume point {theirs} claims epoch {got}, but "
                  f"{wrong}")
            continue
        if os.path.lexists(ours):
            aside = set_aside(ours, opts.keep, opts.replaced, name)
            print(f"  our resume point at epoch {have} kept aside in {aside}")
        keep.copy_resume_point(theirs, ours, top, opts.keep)
        print(f"{name}: resume point now at epoch {got} (was {have}) in {ours}")
        if life.done(run, "work") < got and os.path.lexists(work):
            aside = f"{work}.before_collect_{time.strftime('%Y%m%d_%H%M%S')}"
            os.replace(work, aside)  # the tool's own work folder, behind now: kept, not deleted
            print(f"  its older work folder moved aside to {aside}")
    top = os.path.join(src, "cmnist")
    for name, theirs in fetched_runs(src, "cmnist", plan):
        dest = life.ledger(plan[name])
        plain_files(theirs, set(ledger.LEDGER_FILES))
        view = read_run(theirs, top)
        if not view.finished(long_runs.planned_epochs(plan[name])):
            print(f"skipped {theirs}: it holds no finished run's record (results.json)"
                  + (f": {view.damaged}" if view.damaged else ""))
            continue
        device = str((view.record.get("config") or {}).get("device", ""))
        if not (device.startswith("cuda") or opts.allow_cpu):
            print(f"skipped {theirs}: not finished on a CUDA GPU (a rehearsal? --allow_cpu)")
            continue
        added, _, differ = ledger.add_record(theirs, dest, top, opts.ledger)
        print("".join(f"added {os.path.join(dest, n)}\n" for n in added)
              + "".join(f"kept {os.path.join(dest, n)}: the ledger's copy differs from the "
                        "fetched one\n" for n in differ), end="")
    for run in life.plan:  # ours behind a record that came back: nothing resumes it any more
        if life.state(run) == "finished":
            life.drop(run)


def refuse(src, why):
    raise SystemExit(f"refusing {src}: {why} (nothing was collected from it)")


def unpack(src, dest):
    """A long call's archive parts in src, read into dest (a fresh folder). The archive came
    from another machine, so it is read as untrusted: only regular files at
    in_progress/<run>/<a resume point's file> or cmnist/<run>/<a record's file>, each within
    MEMBER_BYTES and UNPACKED_BYTES in all, are written (by this code, never by tarfile's
    extract); anything else refuses the whole archive in one line before a file is written."""
    names = sorted(n for n in os.listdir(src) if n.startswith(ARCHIVE + "."))
    if names != [f"{ARCHIVE}.{i:02d}" for i in range(len(names))]:
        refuse(src, f"the archive's parts are not {ARCHIVE}.00, .01, ... in order: {names}")
    whole, size = os.path.join(dest, ARCHIVE), 0
    with open(whole, "wb") as fh:
        for name in names:
            path = os.path.join(src, name)
            if os.path.islink(path) or not os.path.isfile(path):
                refuse(src, f"{name} is not a plain file")
            size += os.path.getsize(path)
            if size > 2 * RETURN_TOTAL_BYTES:
                refuse(src, f"its archive is larger than a call's reply can be ({size} bytes)")
            with open(path, "rb") as part:
                shutil.copyfileobj(part, fh)
    allowed = {"in_progress": set(keep.RESUME_POINT), "cmnist": set(ledger.LEDGER_FILES)}
    try:
        with tarfile.open(whole, "r:gz") as tar:
            members, total = [], 0
            for m in tar:
                if m.isdir():
                    continue
                if not m.isreg():
                    refuse(src, f"{m.name!r} is a link or a special file, not a plain file")
                parts = m.name.split("/")
                a_log = parts[0] == "logs" and len(parts) == 2 and parts[1] in LOG_FILES
                if not (a_log or len(parts) > 2 and parts[0] in allowed
                        and RUN_NAME.match(parts[1]) and "/".join(parts[2:]) in allowed[parts[0]]):
                    refuse(src, f"{m.name!r} is not a file a resume point or record holds")
                total += m.size
                if m.size > MEMBER_BYTES or total > UNPACKED_BYTES or len(members) >= MEMBERS:
                    refuse(src, f"its archive unpacks to more than a plan's runs hold ({m.name!r})")
                members.append(m)
            for m in members:
                path = os.path.join(dest, *m.name.split("/"))
                with tar.extractfile(m) as data:
                    write_with(path, lambda fh: shutil.copyfileobj(data, fh), dest)
    except (tarfile.TarError, OSError, EOFError) as exc:
        refuse(src, f"its archive cannot be read ({exc}); fetch the call's files again")
    os.remove(whole)
    return dest


def cmd_collect(opts, out):
    """Keep what a call brought back: a long call's archive is read (and checked) first; then
    prove/bench records into --records_dir (GPU records only, unless --allow_cpu), then the
    long call's resume points and records."""
    src = opts.folder
    if not os.path.isdir(src):
        raise SystemExit(f"{src} is not a folder: pass the files_at folder of the call's reply")
    with tempfile.TemporaryDirectory(prefix="lease_collect_") as unpacked:
        packed = any(n.startswith(ARCHIVE + ".") for n in os.listdir(src))
        fetched = unpack(src, unpacked) if packed else src  # else a folder laid out by hand
        names = [n for n in ("smoke.json", "prove.json", "prove.md", "bench.json",
                             "bench_sweep.jsonl", "long.json", "lease.log")
                 if os.path.lexists(os.path.join(src, n))]
        gpu = any(from_gpu(os.path.join(src, n)) for n in names if n.endswith(("json", "jsonl")))
        if names and not (gpu or opts.allow_cpu):
            print(f"records not kept: those in {src} were not made on a CUDA GPU (a rehearsal? "
                  "pass --allow_cpu with --records_dir elsewhere)")
            names = []
        stamp = time.strftime("%Y%m%d_%H%M%S")
        for name in names:
            stem, ext = os.path.splitext(name)
            dest, n = os.path.join(opts.records_dir, f"{stamp}_{stem}{ext}"), 1
            while os.path.lexists(dest):  # two collects in one second: never over another's
                n += 1
                dest = os.path.join(opts.records_dir, f"{stamp}_{n}_{stem}{ext}")
            try:  # a plain file only: a link's target never travels into a commit
                data = read_bytes(os.path.join(src, name), src, RETURN_FILE_BYTES)
            except UserError as err:
                raise SystemExit(f"refusing {src}: {err} (nothing more was collected)")
            write_bytes(dest, data, opts.records_dir)
            print(f"kept {dest}")
        logs = os.path.join(fetched, "logs")
        for name in sorted(os.listdir(logs)) if names and os.path.isdir(logs) else []:
            if name in LOG_FILES:  # prove.md beside its record, the logs in one folder
                dest = os.path.join(opts.records_dir, f"{stamp}_prove.md" if name == "prove.md"
                                    else os.path.join(f"{stamp}_logs", name))
                write_bytes(dest, read_bytes(os.path.join(logs, name), fetched,
                                             RETURN_FILE_BYTES), opts.records_dir)
                print(f"kept {dest}")
        collect_long(opts, fetched)
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("steps", nargs="+", metavar="step",
                   help="lease (smoke, prove when the training code changed, long); or smoke, "
                        "prove, bench, long (one or more, in this order, sharing --budget); or "
                        "stage; or collect FOLDER (the folder a call's files came back to)")
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "outputs",
                                                                          "lease"),
                   help="where the step writes its records (default: $OUT, else outputs/lease)")
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a rehearsal")
    p.add_argument("--tiny", action="store_true", help="a small CPU rehearsal of the step")
    p.add_argument("--budget", type=float, default=450,
                   help="seconds of work before the steps stop cleanly (the first call runs "
                        "at most 8 minutes)")
    p.add_argument("--epochs", type=int, default=None,
                   help="long, collect: epochs per stage (default 100; 2 with --tiny)")
    p.add_argument("--lanes", type=int, default=4,
                   help="long: processes when no layout is measured")
    p.add_argument("--layouts", nargs="+", type=parse_layout,
                   default=[(4, 1), (1, 4), (1, 8), (1, 16)],
                   help="long: candidate layouts LANESxPER_PROCESS, each timed for --measure_s "
                        "on the plan itself (4x1: four processes; 1x8: one process training 8 "
                        "runs together on their own CUDA streams); the fastest trains the rest")
    p.add_argument("--layout", type=parse_layout, default=None,
                   help="long: train with this layout, measuring none")
    p.add_argument("--measure_s", type=float, default=45,
                   help="long: seconds each candidate layout trains while it is timed (its "
                        "processes' start-up, left out of the figure, is inside them)")
    p.add_argument("--prove", choices=("auto", "always", "never"), default="auto",
                   help="lease: auto runs the full prove only when the training code changed "
                        "since the last passing prove in --records_dir")
    p.add_argument("--sweep_runs", type=int, nargs="+", default=[7],
                   help="bench: sweep sizes timed after the main benchmark")
    p.add_argument("--runs_dir", default=None,
                   help="long: the live run folders (default: outputs/long, as long_runs.py; "
                        "with --tiny: outputs/lease_tiny)")
    p.add_argument("--lease_dir", default=os.path.join(ROOT, ".lease"),
                   help="what travels to the GPU machine (name it in the call's carry): mnist/")
    p.add_argument("--data_root", default="./data")
    p.add_argument("--mnist_from", default=os.path.join(ROOT, "..", "shared", "data", "mnist"),
                   help="stage: the folder holding MNIST's four gzip idx files")
    p.add_argument("--keep", default=KEEP,
                   help="long, collect: the resume points a long call starts from and collect "
                        "brings home (a --tiny call ignores the committed ones)")
    p.add_argument("--ledger", default=LEDGER,
                   help="long, collect: the ledger of finished runs")
    p.add_argument("--work", default=os.path.join(ROOT, "outputs", "long"),
                   help="collect: the local long runs' work folders (long_runs.py --work)")
    p.add_argument("--replaced", default=os.path.join(ROOT, "outputs", "replaced_by_collect"),
                   help="collect: where a resume point replaced by a fetched one is kept")
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
        committed = [f"--{n}" for n, v in (("keep", opts.keep), ("ledger", opts.ledger),
                                             ("records_dir", opts.records_dir))
                     if os.path.abspath(v) == os.path.abspath(p.get_default(n))]
        if (opts.tiny or opts.allow_cpu) and committed:
            p.error(f"a rehearsal's (--tiny, --allow_cpu) records never go into the committed "
                    f"results/: pass {', '.join(committed)} elsewhere")
    elif opts.steps == ["stage"]:
        pass
    elif opts.steps == ["lease"]:
        pass
    elif not set(opts.steps) <= {"smoke", "prove", "bench", "long"} or len(
            set(opts.steps)) < len(opts.steps):
        p.error(f"steps: lease; or smoke, prove, bench and/or long (each once); or stage; or "
                f"collect FOLDER; got {' '.join(opts.steps)}")
    if not (opts.budget > 0 and math.isfinite(opts.budget)):
        p.error(f"--budget must be a positive number of seconds; got {opts.budget}")
    if opts.lanes < 1:
        p.error(f"--lanes must be at least 1; got {opts.lanes}")
    if not (opts.measure_s > 0 and math.isfinite(opts.measure_s)):
        p.error(f"--measure_s must be a positive number of seconds; got {opts.measure_s}")
    if opts.epochs is not None and opts.epochs < 1:
        p.error(f"--epochs must be at least 1; got {opts.epochs}")
    if any(n < 1 for n in opts.sweep_runs):
        p.error(f"--sweep_runs must be at least 1 each; got {opts.sweep_runs}")
    if opts.tiny:
        opts.device = "cpu"
    if not opts.epochs:
        opts.epochs = 2 if opts.tiny else 100
    if opts.runs_dir is None:
        opts.runs_dir = TINY_RUNS if opts.tiny else os.path.join("outputs", "long")
    opts.t0 = time.time()
    return opts


def main(argv=None):
    """Run the steps asked for in order; the exit code is the first failing step's (smoke,
    prove and bench 1; long 3 while runs are left), else 0."""
    opts = parse_args(argv)
    steps = {"lease": cmd_lease, "smoke": cmd_smoke, "prove": cmd_prove, "bench": cmd_bench,
             "long": cmd_long, "stage": cmd_stage, "collect": cmd_collect}
    if opts.steps[0] not in ("stage", "collect"):
        os.makedirs(opts.out, exist_ok=True)
    codes = []
    for step in opts.steps:
        codes.append(steps[step](opts, opts.out))
        if codes[-1] == 1 and step in ("smoke", "prove"):
            break  # a broken path trains nothing
    if opts.steps[0] not in ("stage", "collect"):
        parts = pack(getattr(opts, "scratch", None), opts.out)
        say(opts.out, f"resume points, records and the steps' logs in {', '.join(parts)}")
        for line in returnable(opts.out):
            say(opts.out, f"WARNING: the device tool will not bring back {line}")
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    sys.exit(main())
