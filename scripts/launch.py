"""Run a plan (scripts/plans.py) through a launcher (launchers.py): on this machine, one GPU
per lane, or a Slurm cluster through submitit.

    python scripts/launch.py --plan lff --launcher local --lanes 2
    python scripts/launch.py --plan lff --launcher multi_gpu
    python scripts/launch.py --plan lff --launcher slurm --slurm_partition gpu --gpus_per_node 1
    python scripts/launch.py --plan lff --launcher slurm --cluster local   # a rehearsal here
    python scripts/launch.py --plan lff --only 'lff_ratio0.01_*' --shard 0/4 --dry_run

Every run lives in --output_dir/<run> (outputs/launch/ by default) and is started with
--resume_if_any: what a run has done is read from its folder, never from the launcher, so the
same command launched again (here, on a cluster, after a preemption) continues where each run
stopped and skips the finished ones. A stage-2 run is launched after the run it starts from, a
chosen-hyperparameter run after its grid, its choice written from the grid's validation
records just before it starts; --shard i/n deals whole chains (a start run with its stage-2
runs, a grid with its chosen runs) to n shards. Resume points carried through git
(short_lived/long_runs.py --keep) are for machines that keep nothing; a cluster's runs keep
their folders where they train.
"""
import argparse
import fnmatch
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import launchers  # noqa: E402
from errors import UserError  # noqa: E402
import plan_runs  # noqa: E402


def shard_spec(text):
    try:
        index, count = (int(t) for t in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: give i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: i must lie in 0..n-1")
    return index, count


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--plan", choices=tuple(plan_runs.PLAN_FOLDERS), default="headline")
    p.add_argument("--launcher", choices=tuple(launchers.LAUNCHERS), default="local")
    p.add_argument("--output_dir", default=os.path.join(ROOT, "outputs", "launch"),
                   help="the runs' folders (each run resumes from its own)")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data"))
    p.add_argument("--device", default="auto", help="main.py's --device")
    p.add_argument("--epochs", type=plan_runs.positive, default=100)
    p.add_argument("--tiny", action="store_true", help="a rehearsal plan: small data")
    p.add_argument("--only", nargs="+", default=None,
                   help="run names (shell patterns) to launch; the runs they start from too")
    p.add_argument("--shard", type=shard_spec, default=None, help="i/n: shard i of n")
    p.add_argument("--lanes", type=plan_runs.positive, default=2, help="local: processes")
    p.add_argument("--gpus", type=int, nargs="+", default=None, help="multi_gpu: indices")
    p.add_argument("--cluster", default="slurm", help="slurm: 'local' rehearses on this machine")
    p.add_argument("--timeout_min", type=float, default=60 * 24, help="slurm: a job's limit")
    p.add_argument("--slurm_partition", default=None)
    p.add_argument("--gpus_per_node", type=int, default=None)
    p.add_argument("--cpus_per_task", type=int, default=None)
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    opts = p.parse_args(argv)
    if os.path.exists(opts.output_dir) and not os.path.isdir(opts.output_dir):
        p.error(f"--output_dir {opts.output_dir} is a file, not a folder; pass a folder")
    return opts


def commands(opts):
    """The plan's unfinished runs as launcher Commands (main.py's arguments from
    plan_runs.run_argv: its flags, folder, data, device and --resume_if_any), narrowed by
    --only (with the runs they start from) and --shard."""
    plan_opts = plan_runs.parse_plan(["--plan", opts.plan, "--epochs",
                                      str(opts.epochs), "--work", opts.output_dir,
                                      "--ledger", opts.output_dir,
                                      "--data_root", opts.data_root, "--device", opts.device]
                                     + (["--tiny"] if opts.tiny else []))
    life = plan_runs.Lifecycle(plan_runs.plan_of(plan_opts), plan_opts)
    runs = life.plan
    if opts.only:
        wanted = {r["name"] for r in runs if any(fnmatch.fnmatch(r["name"], p) for p in opts.only)}
        if not wanted:
            raise SystemExit(f"--only {' '.join(opts.only)} names no run of the {opts.plan} plan")
        for r in runs:  # the runs a wanted run starts from, or waits for
            if r["name"] in wanted:
                wanted.update(n for n in [r["after"], *r.get("waits_for", ())] if n)
        runs = [r for r in runs if r["name"] in wanted]
    out = [launchers.Command(r["name"], plan_runs.run_argv(life, r), r["after"],
                             waits_for=tuple(r.get("waits_for", ())),
                             before=functools.partial(life.prepare, r) if r.get("choose") else None)
           for r in runs if life.state(r) != "finished"]
    return (launchers.shard(out, *opts.shard) if opts.shard else out), life


def main(argv=None):
    """Launch the plan; what stops it before a run starts (no GPU for multi_gpu, a grid's
    record that cannot be read, submitit missing) is one line, exit 1."""
    opts = parse_args(argv)
    try:
        return launch(opts)
    except (UserError, ValueError, ImportError) as err:
        raise SystemExit(f"error: {err}")


def launch(opts):
    todo, life = commands(opts)
    if opts.dry_run or not todo:
        for c in todo:
            print(c.name + (f" (after {', '.join(c.needs())})" if c.needs() else ""))
        print(f"{len(todo)} run(s) to launch" + (" (dry run)" if opts.dry_run else ""))
        return 0
    options = {"local": {"lanes": opts.lanes}, "multi_gpu": {"gpus": opts.gpus},
               "slurm": {"folder": os.path.join(opts.output_dir, ".submitit"),
                         "cluster": opts.cluster, "timeout_min": opts.timeout_min,
                         **{k: v for k, v in (("slurm_partition", opts.slurm_partition),
                                              ("gpus_per_node", opts.gpus_per_node),
                                              ("cpus_per_task", opts.cpus_per_task)) if v}}}
    codes = launchers.LAUNCHERS[opts.launcher](todo, **options[opts.launcher])
    failed = {n: c for n, c in codes.items() if c != 0}
    for name, code in failed.items():
        print(f"{name}: {'not started (a run it waits for failed)' if code is None else code}")
    print(f"{len(codes) - len(failed)} of {len(codes)} run(s) finished")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
