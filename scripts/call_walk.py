"""How far a reader walks from main.run to the training loop: the project files a tiny
Colored-MNIST run enters, in order, between main.run's call and the Solver's first training
step (a developer's measure of issue #22's "parameter walk").

    python scripts/call_walk.py --data_root_base ./data [--mode resume|init|fresh]

It follows the parsed arguments: it records every call into a function defined in this
repository that takes them (a parameter named args, or start, which carries them) or whose
object holds them (self.args: the Solver, the run folder, a method), collapses
consecutive calls within one file, and prints one JSON line: the files in order of entry, how
many distinct files, and how many times the walk re-enters a file it had already left. Data
building (colored_mnist, dataset_specs) counts like everything else.
"""
import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def walk(argv, stop_at="epoch_steps"):
    """The project files entered (consecutive duplicates collapsed) from main.run's call to
    the first call of `stop_at`."""
    import main
    seq, state = [], {"on": False}

    def profile(frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        path = os.path.abspath(code.co_filename)
        if (code.co_filename.startswith("<") or not path.startswith(ROOT + os.sep)
                or os.sep + ".venv" + os.sep in path):
            return
        if code.co_name == "run" and path.endswith("main.py"):
            state["on"] = True
        if not state["on"]:
            return
        if code.co_name == stop_at:
            state["on"] = False
            sys.setprofile(None)
            raise SystemExit(0)  # stop before training
        params = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        holder = frame.f_locals.get("self") if params[:1] == ("self",) else None
        if not ({"args", "start"} & set(params) or hasattr(holder, "args")):
            return  # a helper that neither takes nor holds the configuration
        name = os.path.relpath(path, ROOT)
        if not seq or seq[-1] != name:
            seq.append(name)

    sys.setprofile(profile)
    try:
        main.main(argv)
    except SystemExit:
        pass
    finally:
        sys.setprofile(None)
    left, reentries = set(), 0
    for i, name in enumerate(seq):
        if name in left:
            reentries += 1
        if i:
            left.add(seq[i - 1])
    return {"files": len(set(seq)), "reentries": reentries, "walk": seq}


def main_cli():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_root_base", default=os.path.join(ROOT, "data"))
    p.add_argument("--mode", choices=("fresh", "init", "resume"), default="init")
    opts = p.parse_args()
    out = tempfile.mkdtemp(prefix="call_walk_")
    common = ["--data_root_base", opts.data_root_base, "--output_dir", out, "--device", "cpu",
              "--max_train_samples", "256", "--max_test_samples", "256", "--epochs", "1"]
    import main
    main.main([*common, "--method", "baseline", "--experiment_name", "base"])
    argv = {"fresh": [*common, "--method", "baseline", "--experiment_name", "fresh"],
            "init": [*common, "--method", "lnl", "--experiment_name", "lnl", "--init_checkpoint",
                     os.path.join(out, "base", "checkpoints", "last.pth")],
            "resume": [*common, "--method", "baseline", "--experiment_name", "base",
                       "--epochs", "2", "--resume"]}[opts.mode]
    print(json.dumps({"mode": opts.mode, **walk(argv)}))


if __name__ == "__main__":
    main_cli()
