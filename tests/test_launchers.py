"""Launchers (launchers.py, scripts/launch.py; issue #43): the plan in waves (a stage-2 run
after its start run), shards whose union is the plan with no run twice, one GPU per lane
(faked devices), and the slurm launcher rehearsed through submitit's LocalExecutor: a run
preempted by its timeout and requeued ends byte-identical to one never stopped."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import launchers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))
import launch  # noqa: E402


def fake_main(tmp_path, monkeypatch, body):
    """main.py replaced by a script that logs what it was given (its first argument: a name)."""
    script = tmp_path / "fake_main.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        name, log = sys.argv[1], {str(tmp_path / 'log.txt')!r}
        def say(what):
            with open(log, "a") as fh:
                fh.write(f"{{time.time():.3f}} {{what}} {{name}} "
                         f"{{os.environ.get('CUDA_VISIBLE_DEVICES', '-')}}\\n")
    """) + textwrap.dedent(body))
    monkeypatch.setattr(launchers, "MAIN", str(script))
    return tmp_path / "log.txt"


def lines(log):
    return [line.split() for line in log.read_text().splitlines()]


def test_the_plan_runs_in_waves_and_shards_deal_whole_chains():
    plan = [launchers.Command("a", []), launchers.Command("a2", [], after="a"),
            launchers.Command("b", []), launchers.Command("a3", [], after="a2"),
            launchers.Command("c", []), launchers.Command("x", [], after="done_before")]
    assert [[c.name for c in w] for w in launchers.waves(plan)] == [["a", "b", "c", "x"],
                                                                   ["a2"], ["a3"]]
    shards = [launchers.shard(plan, i, 3) for i in range(3)]
    names = [c.name for s in shards for c in s]
    assert sorted(names) == sorted(c.name for c in plan) and len(names) == len(set(names))
    assert {"a", "a2", "a3"} <= {c.name for c in shards[0]}  # a chain stays together
    with pytest.raises(ValueError, match="cycle"):
        launchers.waves([launchers.Command("p", [], after="q"),
                         launchers.Command("q", [], after="p")])


def test_launch_shards_of_a_real_plan_cover_it_once(tmp_path, capsys):
    """scripts/launch.py --shard i/n over the LfF plan: the union is the plan."""
    base = ["--plan", "lff", "--output_dir", str(tmp_path), "--dry_run"]
    launch.main(base)
    whole = [l for l in capsys.readouterr().out.splitlines() if "run(s)" not in l]
    parts = []
    for i in range(4):
        launch.main(base + ["--shard", f"{i}/4"])
        parts += [l for l in capsys.readouterr().out.splitlines() if "run(s)" not in l]
    assert sorted(parts) == sorted(whole) and len(parts) == len(set(parts)) == 96
    assert not os.listdir(tmp_path)  # a dry run writes nothing


def test_one_launch_trains_a_grid_then_its_chosen_run_at_the_choice(tmp_path, mnist_root):
    """The compare plan in one command: a chosen-hyperparameter run waits for its grid, its
    choice is written from the grid's validation records just before it starts, and its
    record holds that choice; a shard keeps a grid with its chosen runs."""
    code = launch.main(["--plan", "compare", "--tiny", "--epochs", "1", "--output_dir",
                        str(tmp_path), "--data_root", mnist_root, "--device", "cpu",
                        "--lanes", "2", "--only", "cmp_ratio0.01_seed1_groupdro*"])
    assert code == 0
    chosen = json.loads((tmp_path / "cmp_ratio0.01_seed1_groupdro" / "args.json").read_text())
    selection = json.loads((tmp_path / "selection" / "groupdro_ratio0.01.json").read_text())
    assert chosen["hparam_selection"] == selection
    assert chosen["groupdro_eta"] == selection["choice"]["groupdro_eta"]
    grid = sorted(tmp_path.glob("cmp_ratio0.01_seed0_groupdro_eta*/results.json"))
    assert len(grid) == 3 and {g["run"] for g in selection["grid"]} == {
        p.parent.name for p in grid}
    started = (tmp_path / "cmp_ratio0.01_seed1_groupdro" / "args.json").stat().st_mtime
    assert all(p.stat().st_mtime <= started for p in grid)  # after its whole grid
    todo, _ = launch.commands(launch.parse_args(["--plan", "compare", "--output_dir",
                                                 str(tmp_path / "plan")]))
    for i in range(3):
        part = {c.name for c in launchers.shard(todo, i, 3)}
        assert all(set(c.needs()) <= part for c in todo if c.name in part)


@pytest.mark.parametrize("case", ["output_dir_a_file", "multi_gpu_without_gpus",
                                  "slurm_without_slurm"])
def test_a_launch_that_cannot_start_says_so_in_one_line_and_writes_nothing(
        case, tmp_path, monkeypatch, capsys):
    """What stops a launch before any run starts is one line naming what to do (exit 1),
    never a traceback, and no run folder is made."""
    out = tmp_path / "runs"
    argv = ["--plan", "lff", "--tiny", "--only", "lff_ratio0.01_seed0_vanilla",
            "--output_dir", str(out)]
    if case == "output_dir_a_file":
        out.write_text("a user's file")
        with pytest.raises(SystemExit) as stop:
            launch.main(argv)
        assert stop.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err
        assert out.read_text() == "a user's file"
        return
    if case == "multi_gpu_without_gpus":
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
        argv += ["--launcher", "multi_gpu"]
    else:
        pytest.importorskip("submitit")
        if shutil.which("srun"):
            pytest.skip("this machine is a Slurm node")
        argv += ["--launcher", "slurm"]
    with pytest.raises(SystemExit) as stop:
        launch.main(argv)
    text = str(stop.value.code)
    assert text.startswith("error: ") and "\n" not in text
    assert ("use the local launcher" in text if case == "multi_gpu_without_gpus"
            else "--cluster local" in text)
    assert not out.exists()


def test_the_launch_command_never_imports_the_short_lived_plug_in(tmp_path):
    """A researcher's path (scripts/launch.py over a plan) reads nothing of short_lived/: the
    budget driver, the resume points carried through git and the GPU lease stay off it."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.path.insert(0, 'scripts'); import launch; "
            f"launch.main(['--plan', 'compare', '--output_dir', {str(tmp_path)!r}, '--dry_run']);"
            " plug = [m for m, v in sys.modules.items() if 'short_lived' in"
            " (getattr(v, '__file__', None) or '')]; assert not plug, plug")
    out = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "run(s) to launch (dry run)" in out.stdout


def test_a_stage_two_run_starts_after_its_start_run_and_not_after_a_failed_one(
        tmp_path, monkeypatch):
    log = fake_main(tmp_path, monkeypatch, """
        say("start"); time.sleep(0.5)
        say("end"); sys.exit(3 if name == "bad" else 0)
    """)
    plan = [launchers.Command("base", ["base"]), launchers.Command("stage2", ["stage2"],
                                                                  after="base"),
            launchers.Command("bad", ["bad"]), launchers.Command("orphan", ["orphan"],
                                                                 after="bad")]
    codes = launchers.local(plan, lanes=2)
    assert codes == {"base": 0, "bad": 3, "stage2": 0, "orphan": None}
    when = {(w, n): float(t) for t, w, n, _ in lines(log)}
    assert when["start", "stage2"] >= when["end", "base"]
    assert ("start", "orphan") not in when


def test_multi_gpu_gives_each_lane_its_own_gpu(tmp_path, monkeypatch):
    log = fake_main(tmp_path, monkeypatch, """
        say("start"); time.sleep(0.3); say("end")
    """)
    plan = [launchers.Command(f"r{k}", [f"r{k}"]) for k in range(4)]
    assert set(launchers.multi_gpu(plan, gpus=[3, 5]).values()) == {0}
    seen = lines(log)
    assert {gpu for _, _, _, gpu in seen} == {"3", "5"}
    busy = {}  # at no moment do two runs share a GPU
    for t, what, name, gpu in sorted(seen, key=lambda r: float(r[0])):
        if what == "start":
            assert gpu not in busy.values()
            busy[name] = gpu
        else:
            busy.pop(name)
    with pytest.raises(ValueError, match="no GPU"):
        launchers.multi_gpu(plan, gpus=[])


def test_a_slurm_job_launched_from_another_folder_finds_the_code_and_names_its_error(
        tmp_path, monkeypatch):
    """A job unpickles its run from launchers.py wherever the launch was typed, and a run that
    fails is one line: the error and the job's log (submitit's LocalExecutor)."""
    pytest.importorskip("submitit")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    codes = launchers.slurm([launchers.Command("bad", ["--no_such_flag"])],
                            str(tmp_path / "jobs"), cluster="local")
    assert codes["bad"].startswith("RuntimeError: bad: main.py exited with 2 (log: ")
    assert codes["bad"].endswith("_log.err)") and "\n" not in codes["bad"]


def test_slurm_through_submitit_preempts_requeues_and_ends_byte_identical(mnist_root,
                                                                          tmp_path):
    """submitit's LocalExecutor with a 30 s timeout: the job is signalled (USR2) 10 s before
    it, sends main.py SIGTERM, is requeued, and main.py --resume_if_any continues from the
    checkpoint; the run ends with the metrics and weights of the same run never stopped."""
    pytest.importorskip("submitit")
    argv = lambda out: ["--config", "configs/lff_cmnist.yaml", "--method", "baseline",
                        "--data_root_base", mnist_root, "--output_dir", str(out), "--device",
                        "cpu", "--epochs", "90", "--max_train_samples", "12000",
                        "--max_test_samples", "500", "--lff_input_scale", "unit",
                        "--experiment_name", "run", "--resume_if_any"]
    one = {"OMP_NUM_THREADS": "1"}
    assert launchers.local([launchers.Command("run", argv(tmp_path / "straight"), env=one)],
                           lanes=1) == {"run": 0}
    started = time.time()
    codes = launchers.slurm([launchers.Command("run", argv(tmp_path / "slurm"), env=one)],
                            str(tmp_path / "jobs"), cluster="local", timeout_min=0.5,
                            signal_delay_s=10)
    assert codes == {"run": 0}, codes
    log = (tmp_path / "slurm" / "run" / "run.log").read_text()
    said = "".join(p.read_text() for p in (tmp_path / "jobs").glob("*_log.*"))
    assert log.count("resumed from") >= 1 and "stopped by SIGTERM" in said, (
        f"never preempted in {time.time() - started:.0f} s")
    same = [(tmp_path / d / "run" / "metrics.jsonl").read_text() for d in ("straight", "slurm")]
    assert same[0] == same[1]
    nets = [torch.load(tmp_path / d / "run" / "checkpoints" / "last.pth",
                       weights_only=True)["nets"] for d in ("straight", "slurm")]
    for net, state in nets[0].items():
        assert all(torch.equal(v, nets[1][net][k]) for k, v in state.items())
    record = json.load(open(tmp_path / "slurm" / "run" / "results.json"))
    assert record["epochs"] == 90


def test_the_run_scripts_benchmarks_are_plans_and_flags_after_dashes_reach_every_run(
        tmp_path, capsys):
    """IRM's Colored MNIST, AND-mask's synthetic task and the real images are plans (issue
    #43, 1): each run a committed config at a seed, its length the config's unless --epochs;
    main.py flags after -- go to every run, except the ones the plan sets for each run."""
    opts = launch.parse_args(["--plan", "irm_cmnist", "--seeds", "0", "3", "--output_dir",
                              str(tmp_path), "--", "--eval_every", "50"])
    todo, _ = launch.commands(opts)
    assert [c.name for c in todo] == [f"{m}_r{r}" for r in (0, 3)
                                      for m in ("erm", "irm", "gray", "andmask")]
    irm = todo[5].argv
    assert irm[irm.index("--config") + 1].endswith("configs/irm_cmnist_irm.yaml")
    assert irm[irm.index("--seed") + 1] == irm[irm.index("--data_seed") + 1] == "3"
    assert irm[irm.index("--epochs") + 1] == "501" and irm[-2:] == ["--eval_every", "50"]
    assert len(launch.commands(launch.parse_args(
        ["--plan", "irm_cmnist", "--output_dir", str(tmp_path)]))[0]) == 40  # 10 restarts
    spiral, _ = launch.commands(launch.parse_args(
        ["--plan", "andmask_synthetic", "--epochs", "2", "--output_dir", str(tmp_path)]))
    assert len(spiral) == 12 and all(c.argv[c.argv.index("--epochs") + 1] == "2" for c in spiral)
    lr, _ = launch.commands(launch.parse_args(["--plan", "irm_cmnist", "--seeds", "0",
                                                "--output_dir", str(tmp_path), "--", "--lr",
                                                "0.001"]))  # over the config: the user's call
    assert all(c.argv[-2:] == ["--lr", "0.001"] for c in lr)
    for plan, owned in (("irm_cmnist", "--seed"), ("irm_cmnist", "--epochs=3"),
                        ("irm_cmnist", "--experiment"), ("andmask_synthetic", "--andmask_tau"),
                        ("real_images", "--bias_split"), ("real_images", "--lr")):
        with pytest.raises(SystemExit) as exc:  # a run named TB1 never trains TB2
            launch.commands(launch.parse_args(["--plan", plan, "--output_dir", str(tmp_path),
                                               "--", owned, "1"]))
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"{owned} after -- is set by the plan" in err
    with pytest.raises(SystemExit):
        launch.parse_args(["--plan", "real_images", "--tiny", "--output_dir", str(tmp_path)])
    assert "--tiny applies to --plan headline" in capsys.readouterr().err


@pytest.mark.parametrize("args,said", [
    (["--launcher", "multi_gpu", "--gpus", "-1"], "a GPU index is a whole number from 0"),
    (["--launcher", "multi_gpu", "--gpus", "1", "1"], "names a GPU twice"),
    (["--launcher", "slurm", "--timeout_min", "-5"], "at least 1 minute"),
    (["--launcher", "slurm", "--timeout_min", "nan"], "at least 1 minute"),
    (["--launcher", "slurm", "--cpus_per_task", "0"], "must be at least 1"),
    (["--launcher", "slurm", "--cluster", "slrum"], "invalid choice: 'slrum'"),
    (["--", "foo"], "'foo' is not one"),
])
def test_a_launch_option_that_cannot_work_is_refused_before_the_plan_is_read(
        args, said, tmp_path, capsys):
    """A GPU index that is no GPU's (CUDA_VISIBLE_DEVICES=-1 hides every GPU: the lane ran on
    the CPU), a lane pair on one GPU, a job limit submitit cannot take, a stray word that every
    run would refuse: one line from argparse, exit 2, nothing written."""
    with pytest.raises(SystemExit) as stop:
        launch.main(["--plan", "lff", "--tiny", "--output_dir", str(tmp_path / "runs"), *args])
    assert stop.value.code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_multi_gpu_runs_ask_for_a_gpu_and_a_gpu_this_machine_lacks_is_refused(
        tmp_path, monkeypatch):
    """Under multi_gpu (and a Slurm job asking for GPUs) a run's --device auto becomes cuda,
    so a lane whose GPU is missing stops instead of training on the CPU; an index past the
    GPUs torch sees is one line."""
    opts = launch.parse_args(["--plan", "lff", "--tiny", "--launcher", "multi_gpu",
                              "--output_dir", str(tmp_path / "runs")])
    todo, _ = launch.commands(opts)
    assert todo and all(c.argv[c.argv.index("--device") + 1] == "cuda" for c in todo)
    for asked, device in ((["--gpus_per_node", "1"], "cuda"), ([], "auto")):  # a Slurm job too
        todo, _ = launch.commands(launch.parse_args(
            ["--plan", "lff", "--tiny", "--launcher", "slurm", "--output_dir",
             str(tmp_path / "runs"), *asked]))
        assert all(c.argv[c.argv.index("--device") + 1] == device for c in todo)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SystemExit) as stop:
        launch.main(["--plan", "lff", "--tiny", "--launcher", "multi_gpu", "--gpus", "0", "2",
                     "--output_dir", str(tmp_path / "runs")])
    assert str(stop.value.code) == ("error: --gpus 0 2: this machine shows 2 GPU(s), 0 to 1; "
                                    "name those")
    assert not (tmp_path / "runs").exists()
