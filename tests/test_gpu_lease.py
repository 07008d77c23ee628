"""short_lived/gpu_lease.py, the GPU lease's steps, rehearsed on the CPU: the long step continues
the long runs from resume points and brings them back; collect brings home only what is
further along, refuses a fetched folder holding anything a resume point does not, and keeps
rehearsal records out of the committed folders."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "short_lived"))
import gpu_lease  # noqa: E402
import long_runs  # noqa: E402
import plans  # noqa: E402

BASELINE = "cmnist_var0.020_seed0_baseline"


def folders(tmp_path):
    return ["--keep", str(tmp_path / "keep"), "--ledger", str(tmp_path / "ledger"),
            "--work", str(tmp_path / "work"), "--replaced", str(tmp_path / "replaced")]


def test_long_call_continues_the_resume_points_and_collect_brings_the_records_home(
        tmp_path, mnist_root):
    """As a lease makes it: the long runs stopped here mid-baseline (their resume point in
    --keep), then `long --tiny` on another 'machine' continues them to the end, and collect
    brings the plan's three records into the ledger and retires the resume point."""
    lease = tmp_path / "lease"
    mnist = os.path.join(mnist_root, "MNIST", "raw")
    assert gpu_lease.main(["stage", "--mnist_from", mnist, "--lease_dir", str(lease)]) == 0
    here = [sys.executable, os.path.join(ROOT, "short_lived", "long_runs.py"), "run", "--tiny",
            "--epochs", "2", "--sigmas", "0.020", "--seeds", "0", "--variants", "baseline",
            "lnl", "blindeye", "--data_root", mnist_root, "--poll", "0.2",
            "--keep", str(tmp_path / "keep"), "--ledger", str(tmp_path / "ledger"),
            "--work", str(tmp_path / "here")]
    proc = subprocess.Popen(here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while (long_runs.epochs_done(tmp_path / "here" / BASELINE) < 1 and proc.poll() is None
           and time.time() < deadline):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # as the budget stops it
    assert proc.wait(timeout=300) == long_runs.MORE_TO_DO
    assert long_runs.epochs_done(tmp_path / "keep" / BASELINE) == 1
    # the LfF plan's resume points nest in the headline's keep (results/in_progress/lff): the
    # lease carries and brings back the headline's runs only, and leaves that folder as it is
    lff = tmp_path / "keep" / "lff" / "lff_ratio0.01_seed0_vanilla"
    os.makedirs(lff)
    (lff / "metrics.jsonl").write_text(json.dumps({"epoch": 1}) + "\n")
    out = tmp_path / "out"
    code = gpu_lease.main(["long", "--tiny", "--budget", "600", "--out", str(out),
                           "--lease_dir", str(lease), "--runs_dir", str(tmp_path / "gpu"),
                           "--data_root", mnist_root, "--layouts", "1x2", "2x1",
                           "--measure_s", "8", *folders(tmp_path)])
    record = json.load(open(out / "long.json"))
    assert code == 0 and record["exit"] == 0
    # each candidate layout trained the plan while timed, until the plan was done (a faster
    # machine finishes this small plan within the first window: nothing is left to time); the
    # fastest trained the rest. A window shorter than a process's start-up times nothing: no
    # figure, never a 0 that would compete
    layouts = record["layouts"]
    assert layouts and [f["layout"] for f in layouts] == ["1x2", "2x1"][:len(layouts)]
    assert all(f["exit"] == long_runs.MORE_TO_DO for f in layouts[:-1])
    measured = [f for f in layouts if f["lnl_epochs_per_min"] is not None]
    assert measured and all(f["runs_trained"] >= 1 and f["lnl_epochs_per_min"] > 0
                            for f in measured)
    assert all(f["runs_trained"] == 0 for f in layouts if f not in measured)
    assert record["chosen"] == max(measured, key=lambda f: f["lnl_epochs_per_min"])["layout"]
    # what the device tool brings back: at most 8 files, none more than 2 folders down (the
    # steps' logs travel inside the archive)
    assert gpu_lease.returnable(out) == [] and not (out / "in_progress").exists()
    assert (out / "long_runs.tar.gz.00").is_file() and not (out / "long.log").exists()
    assert not (tmp_path / "gpu_returned" / "in_progress" / "lff").exists()
    os.makedirs(tmp_path / "unpacked")  # as collect reads it: a stray file refuses it all
    unpacked = gpu_lease.unpack(str(out), str(tmp_path / "unpacked"))
    assert not os.path.exists(os.path.join(unpacked, "in_progress", "lff"))
    gpu_lease.main(["collect", str(out), "--tiny", "--allow_cpu", "--epochs", "2",
                    "--records_dir", str(tmp_path / "rec"), *folders(tmp_path)])
    logs = [p for p in os.listdir(tmp_path / "rec") if p.endswith("_logs")]
    long_log = open(tmp_path / "rec" / logs[0] / "long.log").read()
    assert f"{BASELINE}: continuing from epoch 1" in long_log
    for run in ("baseline", "lnl", "blindeye", "gray"):
        record = json.load(open(tmp_path / "ledger" / f"cmnist_var0.020_seed0_{run}" /
                                "results.json"))
        assert record["epochs"] == 2 and 0 <= record["test_acc"] <= 1
    # every run finished: no resume point left, but the other plan's, untouched
    assert os.listdir(tmp_path / "keep") == ["lff"]
    assert (lff / "metrics.jsonl").read_text() == json.dumps({"epoch": 1}) + "\n"


def resume_point(folder, epochs, device="cuda:0", checkpoint_epoch=None):
    """A fetched resume point of the plan's baseline at `epochs` (its record matches the plan;
    its checkpoint, a small one of this tool's format, at checkpoint_epoch, else epochs)."""
    run = plans.cmnist_run("0.020", "baseline", 100)
    os.makedirs(folder / BASELINE / "checkpoints")
    (folder / BASELINE / "args.json").write_text(json.dumps({**run["expect"], "device": device}))
    (folder / BASELINE / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e + 1}) + "\n" for e in range(epochs)))
    epoch = epochs if checkpoint_epoch is None else checkpoint_epoch
    torch.save({"nets": {"f": {"w": torch.full((2,), float(epoch))}}, "epoch": epoch},
               folder / BASELINE / "checkpoints" / "last.pth")


def test_collect_keeps_the_further_resume_point_and_moves_a_stale_work_folder_aside(
        tmp_path, capsys):
    resume_point(tmp_path / "fetched" / "in_progress", 5)
    resume_point(tmp_path / "keep", 3, device="cpu")
    resume_point(tmp_path / "work", 3, device="cpu")
    assert gpu_lease.main(["collect", str(tmp_path / "fetched"), *folders(tmp_path)]) == 0
    assert long_runs.epochs_done(tmp_path / "keep" / BASELINE) == 5
    assert not (tmp_path / "work" / BASELINE).exists()  # moved aside, not deleted
    aside = [n for n in os.listdir(tmp_path / "work") if "before_collect" in n]
    assert len(aside) == 1 and long_runs.epochs_done(tmp_path / "work" / aside[0]) == 3
    # an older fetched one never replaces ours
    (tmp_path / "old").mkdir()
    resume_point(tmp_path / "old" / "in_progress", 4)
    gpu_lease.main(["collect", str(tmp_path / "old"), *folders(tmp_path)])
    assert long_runs.epochs_done(tmp_path / "keep" / BASELINE) == 5
    assert "kept" in capsys.readouterr().out


def test_returnable_names_what_the_device_tool_would_leave_behind(tmp_path):
    """The reply of a call carries at most 8 files, 16 MiB each, 2 folders down (the lease of
    2026-11-30 lost its resume points, 3 folders down, to this)."""
    deep = tmp_path / "in_progress" / BASELINE / "checkpoints"
    deep.mkdir(parents=True)
    (deep / "last.pth").write_bytes(b"x")
    with open(tmp_path / "big.bin", "wb") as fh:
        fh.truncate(gpu_lease.RETURN_FILE_BYTES + 1)
    for i in range(8):
        (tmp_path / f"f{i}.txt").write_text("x")
    lines = gpu_lease.returnable(tmp_path)
    assert any("last.pth: more than 2 folders down" in ln for ln in lines)
    assert any(ln.startswith("big.bin:") and "over" in ln for ln in lines)
    assert any(ln.startswith("f7.txt: file 9, over 8") for ln in lines)
    assert gpu_lease.returnable(tmp_path / "in_progress" / BASELINE) == []


def test_collect_reads_a_packed_resume_point(tmp_path):
    resume_point(tmp_path / "gpu" / "in_progress", 5)
    (tmp_path / "out").mkdir()
    assert gpu_lease.pack(tmp_path / "gpu", tmp_path / "out") == ["long_runs.tar.gz.00"]
    assert gpu_lease.main(["collect", str(tmp_path / "out"), *folders(tmp_path)]) == 0
    assert long_runs.epochs_done(tmp_path / "keep" / BASELINE) == 5
    kept = torch.load(tmp_path / "keep" / BASELINE / "checkpoints" / "last.pth", weights_only=True)
    assert kept["epoch"] == 5


def hostile_archive(out, name, link=False):
    """A long call's archive whose one member is a link or is named `name`."""
    out.mkdir()
    with tarfile.open(out / "long_runs.tar.gz.00", "w:gz") as tar:
        info = tarfile.TarInfo(name)
        if link:
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, __import__("io").BytesIO(b"evil"))


@pytest.mark.parametrize("name,link", [
    (f"in_progress/{BASELINE}/run.log", True),            # a link
    (f"in_progress/{BASELINE}/../../../escape.txt", False),  # a path out of the folder
    ("/tmp/absolute.txt", False),
    (f"in_progress/{BASELINE}/evil.py", False),           # not a file a resume point holds
    ("cmnist/..hidden/results.json", False)])
def test_collect_refuses_a_hostile_archive_and_writes_nothing(tmp_path, name, link):
    hostile_archive(tmp_path / "out", name, link)
    with pytest.raises(SystemExit, match="refusing .*(link|not a file a resume).*nothing was"):
        gpu_lease.main(["collect", str(tmp_path / "out"), *folders(tmp_path),
                        "--records_dir", str(tmp_path / "rec")])
    assert not any((tmp_path / d).exists() for d in ("keep", "ledger", "rec", "escape.txt"))


def test_collect_refuses_a_link_and_skips_cpu_resume_points(tmp_path, capsys):
    resume_point(tmp_path / "cpu" / "in_progress", 5, device="cpu")
    gpu_lease.main(["collect", str(tmp_path / "cpu"), *folders(tmp_path)])
    assert "not trained on a CUDA GPU" in capsys.readouterr().out
    assert not (tmp_path / "keep").exists()
    resume_point(tmp_path / "bad" / "in_progress", 5)
    os.symlink("/etc/passwd", tmp_path / "bad" / "in_progress" / BASELINE / "run.log")
    with pytest.raises(SystemExit, match="refusing"):
        gpu_lease.main(["collect", str(tmp_path / "bad"), *folders(tmp_path)])
    assert not (tmp_path / "keep").exists()


def test_a_rehearsal_is_never_collected_into_the_committed_results(tmp_path, capsys):
    """collect --tiny or --allow_cpu with a committed folder left at its default is refused
    before anything is read or written."""
    before = {d: sorted(os.walk(os.path.join(ROOT, "results"))) for d in ("results",)}
    resume_point(tmp_path / "rehearsal" / "in_progress", 50, device="cpu")
    for flag in ("--tiny", "--allow_cpu"):
        with pytest.raises(SystemExit) as exc:
            gpu_lease.main(["collect", str(tmp_path / "rehearsal"), flag])
        assert exc.value.code == 2 and "never go into the committed" in capsys.readouterr().err
    assert {"results": sorted(os.walk(os.path.join(ROOT, "results")))} == before


@pytest.mark.parametrize("argv", [["long", "--budget", "-5"], ["long", "--lanes", "0"],
                                  ["table"], ["bench", "--sweep_runs", "0"],
                                  ["collect"]])
def test_bad_arguments_exit_2_not_3(argv, capsys):
    """Exit 3 means "call again": a driver looping on it would never stop."""
    with pytest.raises(SystemExit) as exc:
        gpu_lease.parse_args(argv)
    assert exc.value.code == 2 and "error" in capsys.readouterr().err


def test_the_full_prove_runs_only_when_the_training_code_changed(tmp_path, capsys):
    """A passing prove record names the training code's sha256: the next lease skips the
    prove while the code is the same, runs it once the code changed or the prove failed."""
    records = tmp_path / "records"
    records.mkdir()
    opts = gpu_lease.parse_args(["lease", "--out", str(tmp_path / "out"), "--records_dir",
                                 str(records), "--lease_dir", str(tmp_path / "lease")])
    (tmp_path / "out").mkdir()
    digest = gpu_lease.code_digest()
    assert gpu_lease.prove_needed(opts, str(tmp_path / "out"))  # no record yet
    (records / "20261201_000000_prove.json").write_text(json.dumps(
        {"failed": ["lnl/auto"], "code_sha256": digest, "commit": "a" * 40}))
    assert gpu_lease.prove_needed(opts, str(tmp_path / "out"))  # it failed
    (records / "20261202_000000_prove.json").write_text(json.dumps(
        {"failed": [], "code_sha256": "0" * 64, "commit": "b" * 40}))
    assert gpu_lease.prove_needed(opts, str(tmp_path / "out"))  # other code
    (records / "20261203_000000_prove.json").write_text(json.dumps(
        {"failed": [], "code_sha256": digest, "commit": "c" * 40}))
    assert not gpu_lease.prove_needed(opts, str(tmp_path / "out"))
    assert "skipped" in capsys.readouterr().out and "cccccccc" in open(
        tmp_path / "out" / "lease.log").read()
    opts.prove = "always"
    assert gpu_lease.prove_needed(opts, str(tmp_path / "out"))


def test_the_smoke_says_what_it_could_check(tmp_path):
    """On the CPU (a rehearsal) the recorded-step tests skip and the smoke says so; without
    --tiny a smoke with no CUDA fails, so nothing trains on the wrong device."""
    for flags, code in ((["--tiny"], 0), ([], 1)):
        out = tmp_path / f"out{len(flags)}"
        assert gpu_lease.main(["smoke", "--out", str(out), *flags]) == code
        record = json.load(open(out / "smoke.json"))
        assert record["passed"] is (code == 0) and record["recorded_steps_checked"] == 0
        assert len(record["code_sha256"]) == 64
