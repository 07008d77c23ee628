"""Launchers: a plan's main.py commands run on this machine, one GPU per lane, or a Slurm
cluster through submitit, as DomainBed's command_launchers.py and SubpopBench's slurm launcher
run theirs. A launcher is one function over a list of Commands; it decides nothing about a
run's state, which the run folders hold (main.py --resume_if_any continues any run that
stopped, on whatever machine). A stage-2 command waits for its start run (`after`), a
chosen-hyperparameter one for its grid (`waits_for`): the commands go in waves, each after the
ones it depends on, and a command's `before` (its selection written from the grid's records)
runs just before it starts.

    LAUNCHERS[name](commands, **options) -> {command name: exit code}

- local: --lanes processes at a time on this machine (OMP_NUM_THREADS: cores / lanes);
- multi_gpu: one lane per GPU, each process pinned by CUDA_VISIBLE_DEVICES;
- slurm: one submitit job per command, each wave submitted as one job array; on a timeout or a
  preemption submitit signals the job (USR2), the job sends main.py SIGTERM (main.py finishes
  its step, saves a checkpoint and exits), and the job is requeued to continue from it.
  `cluster="local"` runs the same jobs through submitit's LocalExecutor: a rehearsal of the
  cluster on this machine, timeouts and requeues included.
"""
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.abspath(__file__))
MAIN = os.path.join(ROOT, "main.py")


@dataclass
class Command:
    """One run: its name, main.py's arguments, the run it starts from (None: none), the runs
    it waits for without starting from them, and what to do just before it starts."""
    name: str
    argv: list
    after: Optional[str] = None
    env: dict = field(default_factory=dict)
    waits_for: tuple = ()
    before: Optional[Callable] = None

    def needs(self):
        return [n for n in (self.after, *self.waits_for) if n]


def waves(commands):
    """The commands in waves: each command in a wave after every one holding what it waits
    for (a name outside the list is taken as done: its run finished before)."""
    names, placed, out = {c.name for c in commands}, {}, []
    pending = list(commands)
    while pending:
        wave = [c for c in pending if all(n not in names or n in placed for n in c.needs())]
        if not wave:
            raise ValueError("the commands wait for each other in a cycle: "
                             + ", ".join(c.name for c in pending))
        out.append(wave)
        placed.update((c.name, len(out)) for c in wave)
        pending = [c for c in pending if c.name not in placed]
    return out


def shard(commands, index, count):
    """Shard `index` of `count` (0-based): whole chains (a run with every run that waits on
    it, directly or not: a stage 2 on its start, a chosen run on its grid) dealt round-robin in
    plan order, so no shard waits on another and the shards' union is the plan, each once."""
    chain = {c.name: c.name for c in commands}

    def root(name):
        while chain[name] != name:
            name = chain[name]
        return name
    for c in commands:  # union of each command with what it waits for
        for n in c.needs():
            if n in chain:
                chain[root(c.name)] = root(n)
    roots = list(dict.fromkeys(root(c.name) for c in commands))
    mine = {r for k, r in enumerate(roots) if k % count == index}
    return [c for c in commands if root(c.name) in mine]


def startable(wave, codes):
    """The wave's commands to start: each whose runs it waits for all succeeded (exit 0, or
    outside the list) and whose `before` succeeded. The others get their reason in codes."""
    ready = []
    for c in wave:
        failed = [n for n in c.needs() if codes.get(n, 0) != 0]
        if failed:
            codes[c.name] = None  # not started: what it waits for failed
            continue
        try:
            if c.before:
                c.before()
        except Exception as exc:  # its selection could not be made: named, the others go on
            codes[c.name] = f"not started: {str(exc).splitlines()[0][:300]}"
            continue
        ready.append(c)
    return ready


def start_main(argv, env=None, out=None, low=False):
    """main.py with argv in the checkout, as every program here starts it: stdin closed, its
    environment ours plus env, its output appended to the open file out (else ours); low: in
    its own session at nice 19 and autogroup nice 19 (it yields the CPU to other work)."""
    return subprocess.Popen([sys.executable, MAIN, *argv], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT if out else None,
                            preexec_fn=low_priority if low else None)


def low_priority():
    """Child process: its own session (so its own autogroup), nice 19, autogroup nice 19."""
    os.setsid()
    os.nice(19)
    try:
        with open("/proc/self/autogroup", "w") as fh:
            fh.write("19")
    except OSError:  # no autogroup scheduler here (another OS, a container without /proc)
        pass


def _popen(command, lane_env):
    """main.py with the command's arguments; its environment: ours, the lane's, then the
    command's own (the more specific wins)."""
    return start_main(command.argv, {**lane_env, **command.env})


def _lanes(commands, lane_env):
    """Run each wave's commands, one process per lane at a time (lane_env: each lane's
    environment); a command whose start run or grid failed is not started (exit code None)."""
    codes = {}
    for wave in waves(commands):
        queue = startable(wave, codes)
        running = {}
        while queue or running:
            for lane, env in enumerate(lane_env):
                if lane not in running and queue:
                    command = queue.pop(0)
                    running[lane] = (command, _popen(command, env))
            for lane, (command, proc) in list(running.items()):
                if proc.poll() is not None:
                    codes[command.name] = proc.returncode
                    del running[lane]
            time.sleep(0.2)
    return codes


def local(commands, lanes=2, cores=None):
    """N lanes on this machine, each with its share of the cores."""
    threads = max(1, (cores or os.cpu_count() or 1) // lanes)
    return _lanes(commands, [{"OMP_NUM_THREADS": str(threads)}] * lanes)


def multi_gpu(commands, gpus=None):
    """One lane per GPU (gpus: their indices; default every GPU torch sees)."""
    if gpus is None:
        import torch
        gpus = list(range(torch.cuda.device_count()))
    if not gpus:
        raise ValueError("multi_gpu: no GPU is visible here; use the local launcher")
    return _lanes(commands, [{"CUDA_VISIBLE_DEVICES": str(g)} for g in gpus])


class MainRun:
    """A submitit job: main.py in a subprocess. On a timeout or a preemption submitit calls
    checkpoint() from its signal handler: main.py gets SIGTERM, finishes its step, saves a
    checkpoint and exits; the job is requeued with the same arguments, and --resume_if_any
    continues the run from that checkpoint. (The child is reaped with os.waitpid: Popen.wait
    inside a signal handler can deadlock on Popen's own lock.)"""

    def __init__(self, command):
        self.command, self.proc = command, None

    def __call__(self):
        self.proc = _popen(self.command, {})
        while True:
            try:
                _, status = os.waitpid(self.proc.pid, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise RuntimeError(f"{self.command.name}: main.py exited with {code}")
        return code

    def checkpoint(self, *args, **kwargs):
        import submitit
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                os.waitpid(self.proc.pid, 0)
            except ChildProcessError:  # already reaped
                pass
        return submitit.helpers.DelayedSubmission(MainRun(self.command))

    def __getstate__(self):  # the process stays behind: a requeued job starts its own (and
        return {"command": replace(self.command, before=None), "proc": None}  # ran `before`)


def slurm(commands, folder, cluster="slurm", timeout_min=60 * 24, max_num_timeout=30,
          signal_delay_s=120, **slurm_parameters):
    """One job per command through submitit (each wave one job array); the launcher waits for
    a wave before submitting the next. slurm_parameters go to submitit (slurm_partition,
    gpus_per_node, cpus_per_task, ...). Returns {name: 0, the failure's text, or None: not
    started because what it waits for failed}."""
    import submitit
    # a job unpickles MainRun from this module: its Python finds the checkout wherever the
    # launch was typed (the job inherits this environment, on Slurm through sbatch's export)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if ROOT not in paths:  # once: a second launch from this process adds nothing
        os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, *paths])
    if cluster == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=max_num_timeout)
    else:
        try:
            executor = submitit.AutoExecutor(folder=folder, cluster=cluster,
                                             slurm_max_num_timeout=max_num_timeout)
        except RuntimeError as err:  # no srun here: not a Slurm node
            raise ValueError(f"slurm: {err} (run it on a Slurm login node, or rehearse here "
                             "with --cluster local)") from None
    executor.update_parameters(timeout_min=timeout_min, **({"signal_delay_s": signal_delay_s}
                               if cluster == "local" else {"slurm_signal_delay_s": signal_delay_s}),
                               **slurm_parameters)
    codes = {}
    for wave in waves(commands):
        ready = startable(wave, codes)
        if not ready:
            continue
        with executor.batch():
            jobs = [executor.submit(MainRun(c)) for c in ready]
        for command, job in zip(ready, jobs):
            try:
                codes[command.name] = job.result()
            except Exception as exc:  # a failed job: its error and its log, the others go on
                codes[command.name] = f"{error_line(exc)} (log: {job.paths.stderr})"
    return codes


def error_line(exc):
    """The line of a failed job's text that names the error (submitit's text holds the
    job's traceback, then where its logs are)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", line)]
    return (named or lines or ["the job failed"])[-1][:300]


LAUNCHERS = {"local": local, "multi_gpu": multi_gpu, "slurm": slurm}
