"""short_lived/long_runs.py: budgeted pieces, resume points carried between folders, the ledger."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "short_lived"))
import launchers  # noqa: E402
import long_runs  # noqa: E402
import plans  # noqa: E402
from short_lived import keep  # noqa: E402

PLAN = ["--tiny", "--epochs", "3", "--sigmas", "0.020", "--seeds", "0", "--variants", "baseline",
        "lnl", "blindeye", "--lanes", "2"]


def drive(tmp, data, work, *extra, budget="10m"):
    """One call of `long_runs.py run`, as a user types it; returns (exit code, output)."""
    cmd = [sys.executable, os.path.join(ROOT, "short_lived", "long_runs.py"), "run", *PLAN,
           "--budget", budget, "--work", str(work), "--keep", str(tmp / "keep"),
           "--ledger", str(tmp / "ledger"), "--data_root", str(data), "--poll", "0.2", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def digests(folder):
    return {os.path.relpath(os.path.join(d, f), folder):
            hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(folder) for f in files}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, mnist_root):
    return mnist_root


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("alone")
    code, out = drive(tmp, data_root, tmp / "work")
    assert code == 0, out
    return tmp


def stop_when(tmp, data, work, ready):
    """Start `long_runs.py run`, and once ready(work) holds, stop it as a budget would (the
    driver's own SIGTERM): the pieces are set by progress, not by the machine's speed."""
    cmd = [sys.executable, os.path.join(ROOT, "short_lived", "long_runs.py"), "run", *PLAN,
           "--work", str(work), "--keep", str(tmp / "keep"), "--ledger", str(tmp / "ledger"),
           "--data_root", str(data), "--poll", "0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while proc.poll() is None and not ready(work) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    return proc.returncode, out


def epochs_in(work, run):
    return long_runs.epochs_done(os.path.join(work, f"cmnist_var0.020_seed0_{run}"))


def test_pieces_moved_between_folders_end_as_one_uninterrupted_run(tmp_path, data_root,
                                                                   uninterrupted):
    """Three pieces, each on a fresh work folder restored from the resume points alone (as on
    another machine), stopped mid-run, end bit-identical to one uninterrupted call."""
    stops = [lambda w: epochs_in(w, "baseline") >= 1,   # mid-baseline
             lambda w: epochs_in(w, "lnl") >= 1]        # mid-stage 2
    for piece, ready in enumerate(stops):
        code, out = stop_when(tmp_path, data_root, tmp_path / f"machine{piece}", ready)
        assert code == long_runs.MORE_TO_DO, out
        kept = os.listdir(tmp_path / "keep")
        for run in kept:  # only what resuming needs: no data, no epoch checkpoints
            files = set(digests(tmp_path / "keep" / run))
            assert files <= {"args.json", "metrics.jsonl", "run.log", "pace.json",
                             "results.json", os.path.join("checkpoints", "last.pth")}, files
        assert kept, out
        shutil.rmtree(tmp_path / f"machine{piece}")  # the machine is gone
    code, out = drive(tmp_path, data_root, tmp_path / "machine_last")
    assert code == 0, out
    assert "continuing from epoch" in out
    assert os.listdir(tmp_path / "keep") == []  # every resume point removed once finished
    for run in ("baseline", "lnl", "blindeye"):
        name = f"cmnist_var0.020_seed0_{run}"
        ours = open(tmp_path / "ledger" / name / "metrics.jsonl").read()
        alone = open(uninterrupted / "ledger" / name / "metrics.jsonl").read()
        assert ours == alone, name  # every epoch's numbers, to the last bit
        acc = lambda root: json.load(open(root / "ledger" / name / "results.json"))["test_acc"]
        assert acc(tmp_path) == acc(uninterrupted)


def test_the_driver_keeps_its_lines_in_a_log_file(uninterrupted):
    """What the driver printed is also in <work>/long_runs.log, dated, for a user who started it
    in the background."""
    lines = (uninterrupted / "work" / "long_runs.log").read_text().splitlines()
    assert "plan headline: 3 runs" in lines[0]
    assert any("cmnist_var0.020_seed0_lnl: finished; its record is in" in line for line in lines)
    assert lines[-1].endswith("every run of the plan finished")
    assert all(line[:4].isdigit() and "[long_runs " in line for line in lines)


def test_a_run_finished_in_the_ledger_is_not_trained_again(tmp_path, data_root, uninterrupted):
    """A fresh clone has the ledger's records and no resume point of a finished run: the plan
    counts it as finished instead of starting it over, and needs no MNIST to say so."""
    for run in ("baseline", "lnl", "blindeye"):  # each probed once it finished, as recorded
        probe = json.load(open(uninterrupted / "ledger" / f"cmnist_var0.020_seed0_{run}" /
                               "probe.json"))
        assert 0 <= probe["probe_bias_acc"] <= 1 and probe["checkpoint"]["epoch"] == 3
    shutil.copytree(uninterrupted / "ledger", tmp_path / "ledger")
    before = digests(tmp_path / "ledger")
    code, out = drive(tmp_path, tmp_path / "no_data", tmp_path / "fresh_clone")
    assert code == 0 and "every run of the plan finished" in out, out
    assert "starting" not in out and sorted(os.listdir(tmp_path / "fresh_clone")) == [
        long_runs.DRIVER_PID, "long_runs.log"]  # the driver's pid and its log, nothing trained
    assert not os.path.exists(tmp_path / "no_data")
    assert digests(tmp_path / "ledger") == before


def test_a_resume_point_that_does_not_match_its_record_is_refused(tmp_path, data_root):
    code, out = stop_when(tmp_path, data_root, tmp_path / "work",
                          lambda w: epochs_in(w, "baseline") >= 1)
    assert code == long_runs.MORE_TO_DO, out
    run = next(r for r in sorted(os.listdir(tmp_path / "keep"))
               if os.path.exists(tmp_path / "keep" / r / "checkpoints" / "last.pth"))
    args = tmp_path / "keep" / run / "args.json"
    record = json.load(open(args))
    record["color_var"] = 0.05  # the record now says another run than its checkpoint
    args.write_text(json.dumps(record))
    before = digests(tmp_path / "keep")
    code, out = drive(tmp_path, data_root, tmp_path / "other_machine", budget="60s")
    assert code == 1, out
    last = out.strip().splitlines()[-1]
    assert "Traceback" not in out and "--color_var" in last and run in last, out
    assert digests(tmp_path / "keep") == before  # nothing overwritten


def test_a_work_folder_behind_its_resume_point_is_left_alone(tmp_path):
    opts = long_runs.parse_args(["status", "--work", str(tmp_path / "w"), "--keep",
                                 str(tmp_path / "k"), *PLAN])
    life = long_runs.lifecycle(plans.headline_plan(3, ["0.020"], tiny=True), opts)
    name = "cmnist_var0.020_seed0_baseline"
    for folder, epochs in (("k", 2), ("w", 1)):
        os.makedirs(tmp_path / folder / name)
        (tmp_path / folder / name / "args.json").write_text("{}")
        (tmp_path / folder / name / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e + 1}) + "\n" for e in range(epochs)))
    before = digests(tmp_path)
    with pytest.raises(SystemExit, match="move .* aside"):
        life.restore()
    assert digests(tmp_path) == before


def test_torn_metrics_tail_counts_whole_epochs_only(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert long_runs.epochs_done(str(tmp_path)) == 2


def test_budget_and_sigmas_are_checked_in_one_line():
    assert long_runs.duration("1h30m") == 5400 and long_runs.duration("90") == 90
    for argv in (["run", "--budget", "-5"], ["run", "--budget", "soon"],
                 ["run", "--sigmas", "abc"], ["run", "--lanes", "0"]):
        done = subprocess.run([sys.executable, os.path.join(ROOT, "short_lived", "long_runs.py"),
                               *argv], capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("usage") is False


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="no autogroup here")
def test_low_priority_sets_nice_and_autogroup_nice():
    """nice alone does not yield the CPU across sessions: the autogroup's nice must be 19."""
    code = ("print(open('/proc/self/autogroup').read().split()[-1], __import__('os').nice(0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         preexec_fn=launchers.low_priority).stdout.split()
    assert out == ["19", "19"], out


def lifecycle(tmp_path, run, device):
    """A plan of one run with its folders under tmp_path (work, keep, ledger)."""
    opts = types.SimpleNamespace(work=str(tmp_path / "work"), keep=str(tmp_path / "keep"),
                                 ledger=str(tmp_path / "ledger"), device=device)
    return long_runs.lifecycle([run], opts)


def test_the_pace_of_one_device_never_estimates_another(tmp_path):
    """A run continued on a GPU (4 lanes) keeps its CPU pace apart: `status` on the CPU
    estimates from CPU pieces only (entries from before the device was recorded are CPU's)."""
    run = plans.cmnist_run("0.020", "lnl", 100)
    os.makedirs(tmp_path / "keep" / run["name"])
    (tmp_path / "keep" / run["name"] / "pace.json").write_text(json.dumps({
        "1_threads": {"seconds": 1000.0, "epochs": 4},
        "cpu_1_threads": {"seconds": 200.0, "epochs": 1},
        "cuda_4_threads": {"seconds": 25.0, "epochs": 5}}))

    life = lambda device: lifecycle(tmp_path, run, device)
    assert long_runs.seconds_per_epoch(life("cpu"), run) == (240.0, "measured")
    # finished: its resume point removed, its pace kept in the ledger for the runs to come
    shutil.move(str(tmp_path / "keep" / run["name"]), str(tmp_path / "ledger" / run["name"]))
    assert long_runs.seconds_per_epoch(life("cpu"), run) == (240.0, "measured")
    assert long_runs.seconds_per_epoch(life("cuda:0"), run) == (5.0, "measured")
    assert long_runs.seconds_per_epoch(life("mps"), run) == (None, "")


def test_a_run_not_started_is_estimated_from_its_variants_latest_pace(tmp_path):
    """Seed 0 trained on a slow machine (26 s/epoch), seed 1 on this one (2 s/epoch): seed 2,
    not started, is estimated from seed 1, the one trained last, not from the first."""
    runs = [plans.lff_run("0.01", "baseline", seed, 100) for seed in (0, 1, 2)]
    opts = types.SimpleNamespace(work=str(tmp_path / "work"), keep=str(tmp_path / "keep"),
                                 ledger=str(tmp_path / "ledger"), device="cpu")
    life = long_runs.lifecycle(runs, opts)
    for run, seconds in zip(runs, (2600.0, 200.0)):
        os.makedirs(tmp_path / "ledger" / run["name"])
        (tmp_path / "ledger" / run["name"] / "pace.json").write_text(json.dumps(
            {"cpu_1_threads": {"seconds": seconds, "epochs": 100}}))
    assert long_runs.seconds_per_epoch(life, runs[2]) == (2.0, f"as {runs[1]['name']}")
    assert long_runs.seconds_per_epoch(life, runs[0]) == (26.0, "measured")


def test_a_piece_counts_its_seconds_up_to_its_last_whole_epoch(tmp_path):
    """Stopped 400 s into its third epoch, a piece that finished two epochs 100 s after its
    start records 2 epochs in 100 s; a piece that finished no epoch records nothing."""
    run = plans.cmnist_run("0.020", "lnl", 100)
    life = lifecycle(tmp_path, run, "cpu")
    work = tmp_path / "work" / run["name"]
    work.mkdir(parents=True)
    metrics = work / "metrics.jsonl"
    metrics.write_text('{"epoch": 1}\n')
    lane = long_runs.Lane(1)
    lane.runs, lane.at_start = [run], {run["name"]: 1}
    lane.started = time.time() - 500
    metrics.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')
    os.utime(metrics, (lane.started + 100, lane.started + 100))
    long_runs.record_pace(life, lane)
    entry = json.loads((work / "pace.json").read_text())["cpu_1_threads"]
    assert entry["epochs"] == 2 and entry["seconds"] == pytest.approx(100, abs=1e-3)
    assert entry["pieces"] == [[100.0, 2]]
    (work / "pace.json").write_text('{"cpu_1_threads": [1, 2]}')  # damaged: started again
    long_runs.record_pace(life, lane)
    assert json.loads((work / "pace.json").read_text())["cpu_1_threads"] == entry
    lane.at_start = {run["name"]: 3}  # the next piece: stopped before it finished an epoch
    long_runs.record_pace(life, lane)
    assert json.loads((work / "pace.json").read_text())["cpu_1_threads"] == entry


def test_the_estimate_follows_the_newest_pieces(tmp_path):
    """40 epochs at 450 s beside other work, then pieces of 5 and 6 epochs at 200 s: the
    estimate is the newest pieces' pace once they cover RECENT_EPOCHS (10) epochs, and
    reaches back into older ones while they cover fewer."""
    run = plans.cmnist_run("0.020", "lnl", 100)
    os.makedirs(tmp_path / "keep" / run["name"])
    pace = tmp_path / "keep" / run["name"] / "pace.json"
    life = lifecycle(tmp_path, run, "cpu")
    pace.write_text(json.dumps({"cpu_1_threads": {
        "seconds": 18000.0 + 1000 + 1200, "epochs": 51, "pieces": [[1000.0, 5], [1200.0, 6]]}}))
    assert long_runs.seconds_per_epoch(life, run) == (200.0, "measured")
    pace.write_text(json.dumps({"cpu_1_threads": {
        "seconds": 18000.0 + 1200, "epochs": 46, "pieces": [[1200.0, 6]]}}))
    assert long_runs.seconds_per_epoch(life, run)[0] == pytest.approx(19200 / 46)
    for damaged in ('[1, 2]', '{"cpu_1_threads": {"seconds": "x", "epochs": 2}}',
                    '{"cpu_1_threads": {"seconds": 1, "epochs": 2, "pieces": [3]}}'):
        pace.write_text(damaged)  # a handed resume point: no estimate, no traceback
        assert long_runs.seconds_per_epoch(life, run) == (None, "")


def test_the_headline_table_is_built_from_the_ledger_and_the_resume_points(tmp_path):
    """Ours beside the paper's: a finished run's final test accuracy from the ledger, an
    unfinished one's epochs from its resume point (never a live work folder), a σ² with
    nothing begun left out, '—' where the plan has no such run."""
    plan = plans.headline_plan(100, ("0.020", "0.050", "0.035"), seeds=(0,),
                                   variants=("baseline", "lnl", "blindeye"))
    opts = types.SimpleNamespace(work=str(tmp_path / "work"), keep=str(tmp_path / "keep"),
                                 ledger=str(tmp_path / "ledger"), device="cpu")
    life = long_runs.lifecycle(plan, opts)
    base = tmp_path / "ledger" / "cmnist_var0.020_seed0_baseline"
    base.mkdir(parents=True)
    (base / "results.json").write_text(json.dumps({"epochs": 100, "test_acc": 0.45678}))
    kept = tmp_path / "keep" / "cmnist_var0.020_seed0_baseline" / "checkpoints"
    kept.mkdir(parents=True)  # kept for the stage-2 runs that start from it
    (kept / "last.pth").write_bytes(b"its last checkpoint")
    lnl = tmp_path / "keep" / "cmnist_var0.020_seed0_lnl"
    lnl.mkdir(parents=True)
    (lnl / "metrics.jsonl").write_text("".join(f'{{"epoch": {e}}}\n' for e in (1, 2, 3)))
    live = tmp_path / "work" / "cmnist_var0.035_seed0_baseline"  # not kept: not in the table
    live.mkdir(parents=True)
    (live / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert long_runs.headline_table(life).splitlines() == [
        "| σ² | 0.020 |", "|---|---|",
        "| Baseline (ours) | 0.457 (n = 1) |", "| Baseline (paper) | 0.4055 |",
        "| LNL (ours) | not finished: 3 of 100 epochs |", "| LNL (paper) | 0.8185 |",
        "| BlindEye (ours) | not started |", "| BlindEye (paper) | 0.6741 |"]

    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nno table here\n")
    with pytest.raises(SystemExit, match="no '<!-- long_runs.py table -->'"):
        long_runs.write_table(life, str(readme))
    assert readme.read_text() == "# x\n\nno table here\n"
    readme.write_text(f"# x\n{long_runs.TABLE_MARKS[0]}\nold\n{long_runs.TABLE_MARKS[1]}\nend\n")
    long_runs.write_table(life, str(readme))
    assert readme.read_text() == (f"# x\n{long_runs.TABLE_MARKS[0]}\n"
                                  f"{long_runs.headline_table(life)}\n"
                                  f"{long_runs.TABLE_MARKS[1]}\nend\n")


@pytest.mark.parametrize("plan", ["headline", "lff", "compare"])
def test_the_readme_tables_are_what_the_repository_holds(plan):
    """Each plan's README table equals the one built from its committed ledger and resume
    points (results/cmnist and in_progress; results/lff_cmnist and in_progress/lff): after
    committing resume points, `python short_lived/long_runs.py table [--plan lff] --readme
    README.md` brings it up to date."""
    opts = long_runs.parse_args(["table", "--plan", plan, "--keep", "auto"])
    life = long_runs.lifecycle(long_runs.plan_of(opts), opts)
    table, marks = long_runs.table_of(life)
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert f"{marks[0]}\n{table}\n{marks[1]}" in readme, (
        f"README.md's {plan} table differs from the ledger and resume points: run "
        f"`python short_lived/long_runs.py table --plan {plan} --keep auto --readme README.md`")


def test_a_cell_pools_the_seeds_with_their_spread(tmp_path):
    """Two seeds finished: mean ± sample std with n = 2; a third seed's resume point adds its
    epochs; one seed alone says n = 1."""
    plan = plans.headline_plan(100, ("0.020", "0.050"), variants=("baseline", "lnl"))
    opts = types.SimpleNamespace(work=str(tmp_path / "work"), keep=str(tmp_path / "keep"),
                                 ledger=str(tmp_path / "ledger"), device="cpu")
    life = long_runs.lifecycle(plan, opts)
    for seed, acc in ((0, 0.80), (1, 0.84)):
        folder = tmp_path / "ledger" / f"cmnist_var0.020_seed{seed}_lnl"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({"epochs": 100, "test_acc": acc}))
    keep = tmp_path / "keep" / "cmnist_var0.020_seed2_lnl"
    keep.mkdir(parents=True)
    (keep / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    base = tmp_path / "ledger" / "cmnist_var0.050_seed0_baseline"
    base.mkdir(parents=True)
    (base / "results.json").write_text(json.dumps({"epochs": 100, "test_acc": 0.848}))
    kept = tmp_path / "keep" / "cmnist_var0.050_seed0_baseline" / "checkpoints"
    kept.mkdir(parents=True)  # kept for the LNL run that starts from it
    (kept / "last.pth").write_bytes(b"its last checkpoint")
    rows = dict(line.split(" | ", 1) for line in long_runs.headline_table(life).splitlines()
                if "(ours)" in line)
    assert rows["| LNL (ours)"] == "0.820 ± 0.028 (n = 2); 2 (seed 2) of 100 epochs | not started |"
    assert rows["| Baseline (ours)"] == "not started | 0.848 (n = 1) |"


def test_the_plan_follows_the_issue_order():
    """Issue #34: BlindEye 0.020 and LNL 0.035 first, then Gray at 0.050 and 0.020, then seeds
    1 and 2 at the headline's sigma^2, then LNL 0.025, then the rest."""
    names = [r["name"] for r in plans.headline_plan(100)]
    order = ["cmnist_var0.020_seed0_blindeye", "cmnist_var0.035_seed0_lnl",
             "cmnist_var0.050_seed0_gray", "cmnist_var0.020_seed0_gray",
             "cmnist_var0.020_seed1_baseline", "cmnist_var0.020_seed1_lnl",
             "cmnist_var0.050_seed1_lnl", "cmnist_var0.050_seed2_lnl",
             "cmnist_var0.025_seed0_lnl", "cmnist_var0.045_seed0_baseline",
             "cmnist_var0.040_seed0_lnl", "cmnist_var0.050_seed0_blindeye",
             "cmnist_var0.040_seed0_gray"]
    assert [names.index(n) for n in order] == sorted(names.index(n) for n in order)
    # the table, its spread, then LfF, GroupDRO and JTT at sigma^2 0.050 (at 0.020 they are
    # the comparison plan's: no run is trained by two plans)
    assert len(names) == len(set(names)) == 4 * 7 + 2 * 2 * 2 + 3
    assert names[-3:] == [f"cmnist_var0.050_seed0_{m}" for m in ("lff", "groupdro", "jtt")]
    compare = {r["name"] for r in plans.compare_plan(100)}
    assert {f"cmnist_var0.020_seed0_{m}" for m in ("lff", "groupdro", "jtt")} <= compare
    gray = plans.cmnist_run("0.050", "gray", 100)
    assert "--grayscale" in gray["flags"] and gray["after"] is None
    assert gray["expect"]["method"] == "baseline" and gray["expect"]["grayscale"] is True


def test_lffs_benchmark_is_a_plan_of_its_own(tmp_path):
    """Every method x the four shares x 3 seeds, seed by seed, in its own folders; its README
    table pools seeds as the headline's does."""
    opts = long_runs.parse_args(["status", "--plan", "lff", "--keep", "auto"])
    assert opts.keep.endswith(os.path.join("results", "in_progress", "lff"))
    assert keep.nested_keeps(long_runs.PLAN_FOLDERS, "headline") == {"lff", "compare"}
    assert not keep.nested_keeps(long_runs.PLAN_FOLDERS, "lff")
    assert opts.ledger.endswith(os.path.join("results", "lff_cmnist"))
    assert opts.work.endswith(os.path.join("outputs", "long_lff"))
    plan = long_runs.plan_of(opts)
    assert len(plan) == 8 * 4 * 3 and [r["seed"] for r in plan[:32]] == [0] * 32
    stage2 = plan[6]  # LNL as its authors order it: from the vanilla run, at a tenth of its lr
    assert stage2["name"] == "lff_ratio0.005_seed0_lnl_stage2"
    assert stage2["after"] == "lff_ratio0.005_seed0_vanilla" and stage2["variant"] == "lnl_stage2"
    assert stage2["expect"]["method"] == "lnl" and stage2["expect"]["lr"] == 0.0001
    assert stage2["flags"][stage2["flags"].index("--method") + 1] == "lnl"
    vanilla = plan[0]
    assert vanilla["name"] == "lff_ratio0.005_seed0_vanilla" and "--config" in vanilla["flags"]
    assert vanilla["expect"]["dataset_name"] == "LfFColoredMNIST"
    opts.ledger, opts.keep = str(tmp_path / "ledger"), str(tmp_path / "keep")
    life = long_runs.lifecycle(plan, opts)
    for seed, acc in ((0, 0.5), (1, 0.7)):
        folder = tmp_path / "ledger" / f"lff_ratio0.01_seed{seed}_lff"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({"epochs": 100, "test_acc": acc}))
    rows = {line.split(" | ")[0]: line for line in long_runs.lff_table(life).splitlines()}
    assert rows["| LfF"] == ("| LfF | not started | 0.600 ± 0.141 (n = 2) | not started | "
                             "not started |")


def test_a_narrowed_plan_trains_the_runs_its_stage_two_runs_start_from(tmp_path, capsys):
    """`--variants lnl` (or `--methods lnl_stage2`) plans the baselines LNL starts from, first;
    `status` on it was a KeyError traceback."""
    names = [r["name"] for r in plans.headline_plan(100, ("0.020",), seeds=(0, 1),
                                                    variants=("lnl",))]
    assert names == ["cmnist_var0.020_seed0_baseline", "cmnist_var0.020_seed0_lnl",
                     "cmnist_var0.020_seed1_baseline", "cmnist_var0.020_seed1_lnl"]
    names = [r["name"] for r in plans.lff_plan(100, ("0.01",), (0,), ("blindeye_stage2",))]
    assert names == ["lff_ratio0.01_seed0_vanilla", "lff_ratio0.01_seed0_blindeye_stage2"]
    folders = ["--work", str(tmp_path / "w"), "--keep", str(tmp_path / "k"), "--ledger",
               str(tmp_path / "l")]
    assert long_runs.main(["status", "--variants", "lnl", "--sigmas", "0.020", *folders]) in (
        None, 0)
    assert "waits for cmnist_var0.020_seed1_baseline" in capsys.readouterr().out


def test_a_stage_two_run_whose_start_checkpoint_is_gone_cannot_start(tmp_path, capsys):
    """A run planned after its start run finished and dropped its checkpoint (a fresh clone
    keeps only the ledger's record) is not started to fail: status says why."""
    opts = long_runs.parse_args(["status", "--plan", "lff", "--ratios", "0.01", "--seeds", "0",
                                 "--methods", "lnl_stage2", "--epochs", "3", "--work",
                                 str(tmp_path / "w"), "--keep", str(tmp_path / "k"),
                                 "--ledger", str(tmp_path / "l")])
    life = long_runs.lifecycle(long_runs.plan_of(opts), opts)
    vanilla, stage2 = life.plan
    (tmp_path / "l" / vanilla["name"]).mkdir(parents=True)
    (tmp_path / "l" / vanilla["name"] / "results.json").write_text(
        json.dumps({"epochs": 3, "test_acc": 0.4}))
    assert life.state(vanilla) == "finished" and not life.ready(stage2)
    long_runs.status(life)
    assert (f"cannot start: {vanilla['name']}'s checkpoint is not kept"
            in capsys.readouterr().out)
    row = next(l for l in long_runs.lff_table(life).splitlines() if l.startswith("| LNL, st"))
    assert row == ("| LNL, stage 2 from vanilla | seed 0 cannot start: its start run's "
                   "checkpoint was not kept |")
    kept = tmp_path / "k" / vanilla["name"] / "checkpoints"
    kept.mkdir(parents=True)
    (kept / "last.pth").write_bytes(b"its resume point")
    assert life.ready(stage2)
    assert "| LNL, stage 2 from vanilla | not started |" in long_runs.lff_table(life)


def test_the_ledger_takes_a_log_the_run_has_since_extended_and_nothing_else(tmp_path):
    """A probe appends to run.log after the record went to the ledger: the longer log replaces
    its start there; any other difference is kept and said."""
    run = plans.cmnist_run("0.020", "baseline", 2)
    life = lifecycle(tmp_path, run, "cpu")
    work, ledger = tmp_path / "work" / run["name"], tmp_path / "ledger" / run["name"]
    work.mkdir(parents=True)
    (work / "results.json").write_text(json.dumps({"epochs": 2, "test_acc": 0.5}))
    (work / "run.log").write_text("epoch 1\nepoch 2\n")
    life.to_ledger(run)
    (work / "run.log").write_text("epoch 1\nepoch 2\nprobe\n")
    life.to_ledger(run)
    assert (ledger / "run.log").read_text() == "epoch 1\nepoch 2\nprobe\n"
    (work / "results.json").write_text(json.dumps({"epochs": 2, "test_acc": 0.9}))
    (work / "run.log").write_text("something else\n")
    life.to_ledger(run)
    assert json.loads((ledger / "results.json").read_text())["test_acc"] == 0.5
    assert (ledger / "run.log").read_text() == "epoch 1\nepoch 2\nprobe\n"


def test_resume_points_left_where_they_lived_before_they_moved_are_named(tmp_path, monkeypatch,
                                                                         capsys):
    """The LfF plan's resume points moved from results/in_progress_lff to
    results/in_progress/lff: a clone that still has the old folder is told in one line how to
    move it (never a plan that starts again from nothing beside it); --keep names it instead."""
    monkeypatch.setattr(long_runs, "ROOT", str(tmp_path))
    os.makedirs(tmp_path / "results" / "in_progress_lff" / "lff_ratio0.01_seed0_vanilla")
    with pytest.raises(SystemExit) as stop:
        long_runs.parse_args(["status", "--plan", "lff", "--keep", "auto"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "git mv results/in_progress_lff results/in_progress/lff" in err
    assert not (tmp_path / "results" / "in_progress" / "lff").exists()
    opts = long_runs.parse_args(["status", "--plan", "lff", "--keep",
                                 str(tmp_path / "results" / "in_progress_lff")])
    assert opts.keep.endswith("in_progress_lff")
    assert long_runs.parse_args(["status", "--keep", "auto"]).keep.endswith(
        os.path.join("results", "in_progress"))
    assert long_runs.parse_args(["status", "--plan", "lff"]).keep is None  # no plug-in asked


def test_a_narrowed_plan_keeps_the_resume_points_the_whole_plan_still_needs(tmp_path):
    """`--variants lnl` finished LNL and then removed the baseline's resume point that
    BlindEye and Gray, outside the narrowed plan, start from (it happened on 2026-12-06)."""
    folders = ["--work", str(tmp_path / "w"), "--keep", str(tmp_path / "k"), "--ledger",
               str(tmp_path / "l"), "--sigmas", "0.050", "--seeds", "0", "--variants", "lnl"]
    opts = long_runs.parse_args(["save", *folders])
    narrowed = long_runs.plan_of(opts)
    assert [r["variant"] for r in narrowed] == ["baseline", "lnl"]
    life = long_runs.lifecycle(narrowed, opts, long_runs.whole_plan_of(opts))
    base, lnl = narrowed
    for run in (base, lnl):
        (tmp_path / "l" / run["name"]).mkdir(parents=True)
        (tmp_path / "l" / run["name"] / "results.json").write_text(
            json.dumps({"epochs": 100, "test_acc": 0.5}))
    kept = tmp_path / "k" / base["name"] / "checkpoints"
    kept.mkdir(parents=True)
    (kept / "last.pth").write_bytes(b"its resume point")
    assert life.needed_later(base)  # BlindEye at 0.050 starts from it
    life.drop(base)
    assert (kept / "last.pth").exists()
    alone = long_runs.lifecycle(narrowed, opts)  # without the whole plan: the old behaviour
    assert not alone.needed_later(base)


def test_a_value_given_twice_is_refused(capsys):
    """`--sigmas 0.020 0.020` listed each run twice."""
    with pytest.raises(SystemExit) as exc:
        long_runs.parse_args(["status", "--sigmas", "0.020", "0.02"])
    assert exc.value.code == 2
    assert "--sigmas lists 0.020 more than once" in capsys.readouterr().err


@pytest.mark.parametrize("argv,said", [
    (["--ratios", "0.01"], "--ratios applies to --plan lff or compare only"),
    (["--methods", "lff"], "--methods applies to --plan lff only"),
    (["--plan", "compare", "--sigmas", "0.020"], "--sigmas applies to --plan headline only"),
    (["--plan", "lff", "--compare_methods", "dfa"], "--compare_methods applies to --plan compare"),
])
def test_a_flag_of_another_plan_is_refused(argv, said, capsys):
    """--ratios or --methods with the headline plan were ignored without a word."""
    with pytest.raises(SystemExit) as exc:
        long_runs.parse_args(["status", *argv])
    assert exc.value.code == 2 and said in capsys.readouterr().err


def test_without_keep_the_plug_in_is_never_imported_and_a_run_resumes_from_its_folder(tmp_path):
    """The short-lived machines' plug-in stays off the researcher's path: without --keep,
    status and table never import short_lived/keep.py, and an unfinished run's epochs are read
    from its work folder (where main.py --resume_if_any continues it)."""
    work = tmp_path / "work" / "cmnist_var0.020_seed0_baseline"
    (work / "checkpoints").mkdir(parents=True)
    (work / "checkpoints" / "last.pth").write_bytes(b"")
    (work / "metrics.jsonl").write_text("".join(f'{{"epoch": {e}}}\n' for e in (1, 2, 3)))
    folders = ["--work", str(tmp_path / "work"), "--ledger", str(tmp_path / "ledger"),
               "--sigmas", "0.020", "--seeds", "0", "--variants", "baseline"]
    code = ("import sys; sys.path.insert(0, 'short_lived'); import long_runs; "
            f"long_runs.main(['status', *{folders!r}]); long_runs.main(['table', *{folders!r}]);"
            " assert 'keep' not in sys.modules, 'imported'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert "stopped" in out.stdout and "3/100" in out.stdout
    assert "not finished: 3 of 100 epochs" in out.stdout


def test_the_recipe_has_one_home_that_the_run_scripts_read():
    """plans.stage_flags is the two-stage recipe; run_cmnist.sh and run_cmnist_table.sh read
    it through `python scripts/plans.py stage VARIANT` (one flag a line)."""
    assert plans.stage_flags("gray") == ["--method", "baseline", "--lr", "0.01", "--grayscale"]
    assert plans.stage_flags("blindeye") == ["--method", "blindeye", "--lr", "0.001"]
    run = plans.cmnist_run("0.020", "lnl", 100)
    assert run["flags"][-4:] == plans.stage_flags("lnl") and run["expect"]["lr"] == 0.001
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plans.py"), "stage",
                          "lnl"], capture_output=True, text=True)
    assert out.stdout.split() == plans.stage_flags("lnl")
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plans.py"), "stage",
                          "magic"], capture_output=True, text=True)
    assert bad.returncode != 0 and "usage" in bad.stderr
    for script in ("run_cmnist.sh", "run_cmnist_table.sh"):
        text = open(os.path.join(ROOT, "scripts", script)).read()
        assert "scripts/plans.py stage" in text and "--lr 0.01" not in text
