"""Run a plan (scripts/plans.py) through a launcher (launchers.py): on this machine, one GPU
per lane, or a Slurm cluster through submitit.

    python scripts/launch.py --plan lff --launcher local --lanes 2
    python scripts/launch.py --plan lff --launcher multi_gpu
    python scripts/launch.py --plan lff --launcher slurm --slurm_partition gpu --gpus_per_node 1
    python scripts/launch.py --plan lff --launcher slurm --cluster local   # a rehearsal here
    python scripts/launch.py --plan lff --only 'lff_ratio0.01_*' --shard 0/4 --dry_run
    python scripts/launch.py --plan irm_cmnist --seeds 0 1 -- --eval_every 50  # flags for main.py

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
from plans import CONFIG_PLANS  # noqa: E402


def shard_spec(text):
    try:
        index, count = (int(t) for t in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: give i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: i must lie in 0..n-1")
    return index, count


# main.py's flags a plan sets for each run (its name, folder, recipe, length, seed, start and
# resuming), with the flags its runs carry: refused after --, where they would make a run
# another than the plan's (and its name a lie)
PLAN_OWNED = ("--experiment_name", "--output_dir", "--config", "--method", "--epochs", "--seed",
              "--data_seed", "--init_checkpoint", "--resume", "--resume_if_any", "--overwrite",
              "--data_root_base", "--device", "--runs_from", "--hparams_from", "--mode")


def parse_args(argv=None):
    """The launch options; main.py flags after `--` go to every run of the plan."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    argv, extra = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[plan_runs.plan_parser(tuple(plan_runs.PLAN_FOLDERS) + tuple(CONFIG_PLANS),
                                       folders=False, add_help=False)],
        usage="%(prog)s [options] [-- main.py flags for every run]")
    p.set_defaults(device="auto")
    p.add_argument("--launcher", choices=tuple(launchers.LAUNCHERS), default="local")
    p.add_argument("--output_dir", default=os.path.join(ROOT, "outputs", "launch"),
                   help="the runs' folders (each run resumes from its own)")
    p.add_argument("--only", nargs="+", default=None,
                   help="run names (shell patterns) to launch; the runs they start from too")
    p.add_argument("--shard", type=shard_spec, default=None, help="i/n: shard i of n")
    p.add_argument("--lanes", type=plan_runs.positive, default=2, help="local: processes")
    p.add_argument("--gpus", type=plan_runs.whole_in(0, float("inf"), "a GPU index is a whole "
                                                     "number from 0"), nargs="+", default=None,
                   help="multi_gpu: indices (default: every GPU torch sees)")
    p.add_argument("--cluster", choices=("slurm", "local", "debug"), default="slurm",
                   help="slurm: 'local' rehearses on this machine (submitit's executors)")
    p.add_argument("--timeout_min", type=minutes, default=60 * 24, help="slurm: a job's limit")
    p.add_argument("--slurm_partition", default=None)
    p.add_argument("--gpus_per_node", type=plan_runs.positive, default=None)
    p.add_argument("--cpus_per_task", type=plan_runs.positive, default=None)
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    opts = p.parse_args(argv)
    if os.path.exists(opts.output_dir) and not os.path.isdir(opts.output_dir):
        p.error(f"--output_dir {opts.output_dir} is a file, not a folder; pass a folder")
    if opts.gpus and len(set(opts.gpus)) != len(opts.gpus):
        p.error(f"--gpus {' '.join(map(str, opts.gpus))} names a GPU twice: two lanes would "
                "share it; name each once")
    if extra and not extra[0].startswith("-"):
        p.error(f"after -- come main.py's flags (--name value); {extra[0]!r} is not one")
    if opts.device == "auto" and (opts.launcher == "multi_gpu" or opts.gpus_per_node):
        opts.device = "cuda"  # a lane or job whose GPU is not there stops, never trains on CPU
    opts.work = opts.ledger = opts.output_dir
    opts.main_flags = extra
    return plan_runs.check_plan_options(opts, p)


def minutes(text):
    """--timeout_min: a finite number of minutes, at least 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"a job's limit is at least 1 minute; got {text!r}")
    return value


def check_main_flags(extra, plan):
    """One line (exit 2) for a flag after -- that the plan sets for its runs (PLAN_OWNED and
    each run's own flags), an argparse prefix of one included."""
    owned = set(PLAN_OWNED) | {a for r in plan for a in r["flags"] if a.startswith("--")}
    for arg in extra:
        name = arg.split("=")[0]
        if name.startswith("--") and (name in owned or len(name) > 3 and any(
                o.startswith(name) for o in owned)):
            print(f"launch.py: error: {arg} after -- is set by the plan for its runs (their "
                  "name, folder, recipe, length, seed and start); give launch.py's own option "
                  "instead (--epochs, --seeds, --device, --data_root, --output_dir), or drop it",
                  file=sys.stderr)
            raise SystemExit(2)


def commands(opts):
    """The plan's unfinished runs as launcher Commands (main.py's arguments from
    plan_runs.run_argv: its flags, folder, data, device and --resume_if_any, then the flags
    after --), narrowed by --only (with the runs they start from) and --shard."""
    life = plan_runs.Lifecycle(plan_runs.plan_of(opts), opts)
    runs = life.plan
    check_main_flags(opts.main_flags, runs)
    if opts.only:
        wanted = {r["name"] for r in runs if any(fnmatch.fnmatch(r["name"], p) for p in opts.only)}
        if not wanted:
            raise SystemExit(f"--only {' '.join(opts.only)} names no run of the {opts.plan} plan")
        for r in runs:  # the runs a wanted run starts from, or waits for
            if r["name"] in wanted:
                wanted.update(n for n in [r["after"], *r.get("waits_for", ())] if n)
        runs = [r for r in runs if r["name"] in wanted]
    out = [launchers.Command(r["name"], plan_runs.run_argv(life, r) + opts.main_flags,
                             r["after"], waits_for=tuple(r.get("waits_for", ())),
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
    if opts.launcher == "multi_gpu" and opts.gpus and not opts.dry_run:
        import torch
        count = torch.cuda.device_count()
        if max(opts.gpus) >= count:  # its lane would see no GPU (CUDA_VISIBLE_DEVICES)
            raise ValueError(f"--gpus {' '.join(map(str, opts.gpus))}: this machine shows "
                             + (f"{count} GPU(s), 0 to {count - 1}; name those" if count else
                                "no GPU; use the local launcher"))
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
