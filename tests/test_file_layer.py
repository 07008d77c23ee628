"""Issue #32: every program of the repository reads and writes its files through one layer
(safe_files.py). Each case below was found by a hostile user against the scripts (long_runs.py,
gpu_lease.py collect, results.py ledger, convert_checkpoint.py, data_card.py) and failed before
the layer: writes through planted links, links copied into committed records, a handed file
that ran code, a good resume point replaced by a bad one, two drivers on one checkout,
tracebacks on damaged records, silently wrong values. Each must end in success or one line,
never a traceback, never a write outside the named folders."""
import errno
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import safe_files
from errors import DiskFull

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "short_lived"))
import gpu_lease  # noqa: E402
import long_runs  # noqa: E402
import plans  # noqa: E402

RUN = "cmnist_var0.020_seed0_baseline"
LNL = "cmnist_var0.020_seed0_lnl"
SCRIPTS = os.path.join(ROOT, "scripts")


def script(name, *argv, cwd=None):
    """A script run as a user runs it: (exit code, stdout + stderr)."""
    where = os.path.join(SCRIPTS, name)
    if not os.path.exists(where):  # the short-lived machines' plug-in (long_runs, gpu_lease)
        where = os.path.join(ROOT, "short_lived", name)
    done = subprocess.run([sys.executable, where, *map(str, argv)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)
    return done.returncode, done.stdout + done.stderr


def one_line_failure(code, out):
    assert code not in (0, None) and "Traceback" not in out, out


def life(tmp_path, plan=None):
    opts = types.SimpleNamespace(work=str(tmp_path / "work"), keep=str(tmp_path / "keep"),
                                 ledger=str(tmp_path / "ledger"), device="cpu")
    return long_runs.lifecycle(plan or plans.headline_plan(100, ("0.020",), seeds=(0,)),
                               opts)


def run_folder(folder, epochs=3, finished=False, checkpoint=True):
    """A run folder as main.py leaves it (a small checkpoint of this tool's format)."""
    os.makedirs(folder / "checkpoints", exist_ok=True)
    (folder / "args.json").write_text(json.dumps(
        plans.cmnist_run("0.020", "baseline", 100)["expect"]))
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e + 1, "test_acc": 0.5}) + "\n" for e in range(epochs)))
    (folder / "run.log").write_text("epoch lines\n")
    if checkpoint:
        torch.save({"nets": {"f": {"w": torch.zeros(2)}}, "epoch": epochs},
                   folder / "checkpoints" / "last.pth")
    if finished:
        (folder / "results.json").write_text(json.dumps({"epochs": epochs, "test_acc": 0.5}))
    return folder


@pytest.fixture
def outside(tmp_path):
    """A user's file outside every folder the tools may write."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text("the user's own file\n")
    return path


# --------------------------------------------------------------------------- planted links
def test_a_planted_temp_link_in_a_resume_point_is_never_written_through(tmp_path, outside):
    """A resume point holding checkpoints/last.pth.tmp -> a user's file: saving the resume
    point used to overwrite that file with a checkpoint (a fixed temp name)."""
    lc = life(tmp_path)
    run = lc.by_name[RUN]
    run_folder(tmp_path / "work" / RUN)
    (tmp_path / "keep" / RUN / "checkpoints").mkdir(parents=True)
    os.symlink(outside, tmp_path / "keep" / RUN / "checkpoints" / "last.pth.tmp")
    lc.save(run)
    assert outside.read_text() == "the user's own file\n"
    assert torch.load(tmp_path / "keep" / RUN / "checkpoints" / "last.pth",
                      weights_only=True)["epoch"] == 3


def test_a_linked_folder_in_a_resume_point_is_refused_in_one_line(tmp_path, outside):
    """keep/<run>/checkpoints -> an outside folder: `save` used to write last.pth there."""
    lc = life(tmp_path)
    run_folder(tmp_path / "work" / RUN)
    (tmp_path / "keep" / RUN).mkdir(parents=True)
    os.symlink(outside.parent, tmp_path / "keep" / RUN / "checkpoints")
    with pytest.raises(safe_files.UnsafePath, match="symbolic link"):
        lc.save(lc.by_name[RUN])
    assert os.listdir(outside.parent) == ["secret.txt"]


def test_the_readme_table_never_writes_through_a_link(tmp_path, outside):
    """A README.md.tmp link used to be overwritten; a linked README used to be replaced by a
    regular file while the tool said 'updated'."""
    lc = life(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{long_runs.TABLE_MARKS[0]}\nold\n{long_runs.TABLE_MARKS[1]}\n")
    os.symlink(outside, tmp_path / "README.md.tmp")
    long_runs.write_table(lc, str(readme))
    assert outside.read_text() == "the user's own file\n"
    assert "| Baseline (ours)" not in readme.read_text()  # nothing begun: no column
    linked = tmp_path / "linked.md"
    os.symlink(readme, linked)
    before = readme.read_text()
    with pytest.raises(SystemExit, match="symbolic link.*nothing was changed"):
        long_runs.write_table(lc, str(linked))
    assert os.path.islink(linked) and readme.read_text() == before


# --------------------------------------------------------------------------- links into records
def test_a_linked_file_never_travels_into_the_ledger(tmp_path, outside):
    """A finished run whose pace.json is a link to a secret: the ledger used to receive the
    secret (committed, it reaches every clone)."""
    lc = life(tmp_path)
    work = run_folder(tmp_path / "work" / RUN, epochs=100, finished=True)
    os.symlink(outside, work / "pace.json")
    with pytest.raises(SystemExit, match="symbolic link"):
        lc.to_ledger(lc.by_name[RUN])
    ledger = tmp_path / "ledger"
    assert not any("the user's own file" in open(os.path.join(d, f)).read()
                   for d, _, files in os.walk(ledger) for f in files)


def test_results_ledger_refuses_a_linked_probe(tmp_path, outside):
    run = run_folder(tmp_path / "outputs" / RUN, epochs=2, finished=True)
    os.symlink(outside, run / "probe.json")
    code, out = script("results.py", "ledger", tmp_path / "outputs", "--into",
                       tmp_path / "ledger")
    one_line_failure(code, out)
    assert "symbolic link" in out
    found = [open(os.path.join(d, f)).read() for d, _, files in os.walk(tmp_path / "ledger")
             for f in files]
    assert not any("the user's own file" in text for text in found)


def test_collect_refuses_a_linked_lease_log(tmp_path, outside):
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    (fetched / "prove.json").write_text(json.dumps({"gpu": "NVIDIA H200"}))
    os.symlink(outside, fetched / "lease.log")
    with pytest.raises(SystemExit, match="refusing .*symbolic link"):
        gpu_lease.main(["collect", str(fetched), "--keep", str(tmp_path / "keep"), "--ledger",
                        str(tmp_path / "ledger"), "--work", str(tmp_path / "work"),
                        "--records_dir", str(tmp_path / "records")])
    records = tmp_path / "records"
    assert not any("the user's own file" in open(os.path.join(d, f)).read()
                   for d, _, files in os.walk(records) for f in files)


# --------------------------------------------------------------------------- checkpoints
class RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_convert_never_unpickles_a_foreign_file_without_being_told(tmp_path):
    """convert_checkpoint.py used to unpickle whatever it was given (code ran)."""
    path = tmp_path / "foreign.pth"
    torch.save({"nets": {}, "x": RunsCode(str(tmp_path / "code_ran"))}, path)
    before = path.read_bytes()
    code, out = script("convert_checkpoint.py", path)
    one_line_failure(code, out)
    assert "--trust-full-unpickle" in out and "runs any code" in out
    assert not (tmp_path / "code_ran").exists() and path.read_bytes() == before


def test_convert_reads_an_old_checkpoint_without_a_full_unpickle(tmp_path, monkeypatch):
    """The tool's own old format (numpy's RNG state as an array) needs no full unpickle."""
    path = tmp_path / "old.pth"
    state = np.random.get_state()
    torch.save({"nets": {"f": {"w": torch.ones(2)}}, "epoch": 1,
                "rng": {"numpy": state, "torch": torch.get_rng_state(), "python": None}}, path)
    real_load = torch.load
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("weights_only"))
                        or real_load(*a, **k))
    import convert_checkpoint
    convert_checkpoint.main([str(path)])
    assert False not in loads  # every load of the file was weights_only
    again = real_load(path, weights_only=True)
    assert torch.equal(again["rng"]["numpy"]["keys"], torch.from_numpy(state[1].astype(np.int64)))


@pytest.mark.parametrize("content", [b"just some text\n", b"", bytes(range(256)) * 40, "npy"])
def test_corruption_is_told_apart_from_an_old_format(tmp_path, content, capsys):
    """A text file, an empty one, random bytes or a plain .npy is corrupt: main.py used to
    call it 'Python objects ... convert it', and the converter crashed on it."""
    path = tmp_path / "bad.pth"
    if content == "npy":
        np.save(open(path, "wb"), np.arange(5))
    else:
        path.write_bytes(content)
    from checkpoints import read_checkpoint
    from utils import UserError
    with pytest.raises(UserError, match="unreadable") as exc:
        read_checkpoint(str(path))
    assert "convert" not in str(exc.value)
    code, out = script("convert_checkpoint.py", path)
    one_line_failure(code, out)
    assert "not a PyTorch checkpoint" in out
    error = next(line for line in out.splitlines() if "error:" in line)
    assert "--trust-full-unpickle" not in error  # no unpickle could read it: never advised
    code, out = script("convert_checkpoint.py", path, "--trust-full-unpickle")
    one_line_failure(code, out)  # it ended in UnpicklingError/EOFError tracebacks
    assert "nothing can convert it" in out


def test_collect_keeps_a_good_resume_point_against_an_unloadable_one(tmp_path, capsys):
    """A fetched resume point claiming a later epoch whose checkpoint does not load (or holds
    another epoch) used to replace ours; now ours stays, and what a good one replaces is kept
    aside."""
    ours = run_folder(tmp_path / "keep" / RUN, epochs=3)
    fetched = tmp_path / "fetched" / "in_progress" / RUN
    run_folder(fetched, epochs=9)
    args = json.loads((fetched / "args.json").read_text())
    (fetched / "args.json").write_text(json.dumps({**args, "device": "cuda:0"}))
    argv = ["collect", str(tmp_path / "fetched"), "--keep", str(tmp_path / "keep"), "--ledger",
            str(tmp_path / "ledger"), "--work", str(tmp_path / "work"), "--replaced",
            str(tmp_path / "replaced")]
    good = (ours / "checkpoints" / "last.pth").read_bytes()
    for damage in (b"not a checkpoint",
                   lambda p: torch.save({"nets": {}, "epoch": 4}, p)):
        target = fetched / "checkpoints" / "last.pth"
        target.write_bytes(damage) if isinstance(damage, bytes) else damage(target)
        assert gpu_lease.main(argv) == 0
        assert "kept" in capsys.readouterr().out
        assert (ours / "checkpoints" / "last.pth").read_bytes() == good
        assert long_runs.epochs_done(ours) == 3
    torch.save({"nets": {}, "epoch": 9}, fetched / "checkpoints" / "last.pth")
    assert gpu_lease.main(argv) == 0
    assert long_runs.epochs_done(ours) == 9
    kept = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "replaced") for f in fs]
    assert any(p.endswith("last.pth") and open(p, "rb").read() == good for p in kept)


# --------------------------------------------------------------------------- two drivers
def test_a_second_driver_on_the_same_folders_is_refused(tmp_path):
    """Two `long_runs.py run` on one checkout both used to exit 1, each reporting the
    other's runs as failed."""
    opts = types.SimpleNamespace(work=str(tmp_path / "work"), keep=str(tmp_path / "keep"),
                                 ledger=str(tmp_path / "ledger"))
    held = long_runs.hold_folders(opts)
    code, out = script("long_runs.py", "run", "--tiny", "--budget", "30", "--work",
                       tmp_path / "work", "--keep", tmp_path / "keep", "--ledger",
                       tmp_path / "ledger", "--data_root", tmp_path / "nodata", "--mnist_from",
                       tmp_path / "nodata")
    one_line_failure(code, out)
    assert "another `long_runs.py run` is using" in out
    assert f"kill -TERM {os.getpid()}" in out and "pkill" not in out  # that driver alone
    for fd in held:
        os.close(fd)


# --------------------------------------------------------------------------- damaged records
DAMAGED = {
    "null epoch": ("keep", "metrics.jsonl", b'{"epoch": null}\n{"epoch": 1}\n'),
    "text epochs": ("ledger", "results.json", b'{"epochs": "3", "test_acc": 0.5}'),
    "not utf-8": ("keep", "metrics.jsonl", b'{"epoch": 1}\n\xff\xfe\x00{"epoch"\n'),
    "deep pace": ("keep", "pace.json", b'{"cpu_1_threads": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    "nan pace": ("keep", "pace.json",
                 b'{"cpu_1_threads": {"seconds": NaN, "epochs": 2, "pieces": []}}'),
    "list record": ("ledger", "results.json", b'[1, 2]'),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_status_and_table_read_damaged_records_without_a_traceback(tmp_path, case):
    where, name, data = DAMAGED[case]
    folder = tmp_path / where / RUN
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps(
        plans.cmnist_run("0.020", "baseline", 100)["expect"]))
    (folder / name).write_bytes(data)
    common = ["--work", tmp_path / "work", "--keep", tmp_path / "keep", "--ledger",
              tmp_path / "ledger", "--sigmas", "0.020", "--seeds", "0"]
    for command in ("status", "table"):
        code, out = script("long_runs.py", command, *common)
        assert code == 0 and "Traceback" not in out, out
        assert "nan" not in out.lower(), out  # a NaN pace measures nothing: '?'
    if case == "text epochs":  # "3" is not a finished run's record
        assert "0.500" not in out


def test_results_status_reads_text_epochs_without_a_traceback(tmp_path):
    folder = run_folder(tmp_path / "outputs" / RUN, epochs=2, checkpoint=False)
    args = json.loads((folder / "args.json").read_text())
    (folder / "args.json").write_text(json.dumps({**args, "epochs": "two"}))
    (folder / "results.json").write_text(json.dumps({"epochs": "two", "test_acc": 0.5}))
    code, out = script("results.py", "status", tmp_path / "outputs")
    assert code == 0 and "Traceback" not in out, out


def test_a_full_disk_while_saving_a_resume_point_leaves_the_old_one_and_no_temp(tmp_path,
                                                                                 monkeypatch):
    lc = life(tmp_path)
    run_folder(tmp_path / "work" / RUN)
    lc.save(lc.by_name[RUN])
    before = {f: open(os.path.join(d, f), "rb").read()
              for d, _, fs in os.walk(tmp_path / "keep") for f in fs}
    run_folder(tmp_path / "work" / RUN, epochs=4)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(safe_files.os, "fsync", full)
    with pytest.raises(DiskFull, match="no space left"):
        lc.save(lc.by_name[RUN])
    after = {f: open(os.path.join(d, f), "rb").read()
             for d, _, fs in os.walk(tmp_path / "keep") for f in fs}
    assert after == before  # the old resume point whole, no temp file left behind


@pytest.mark.parametrize("argv", [
    ("data_card.py", "--out", "FILE", "--sigmas", "0.020"),
    ("results.py", "ledger", "RUNS", "--into", "FILE"),
    ("long_runs.py", "status", "--ledger", "FILE")])
def test_a_file_where_a_folder_goes_is_one_line(tmp_path, argv):
    (tmp_path / "file").write_text("mine\n")
    run_folder(tmp_path / "runs" / RUN, epochs=2, finished=True)
    swap = {"FILE": tmp_path / "file", "RUNS": tmp_path / "runs"}
    code, out = script(argv[0], *(swap.get(a, a) for a in argv[1:]))
    one_line_failure(code, out)
    assert "is a file, not a folder" in out and (tmp_path / "file").read_text() == "mine\n"


# --------------------------------------------------------------------------- silently wrong
@pytest.mark.parametrize("command", [("long_runs.py", "status", "--sigmas"),
                                     ("data_card.py", "--sigmas")])
@pytest.mark.parametrize("sigma", ["0.0201", "1e-9"])
def test_a_sigma2_its_name_would_change_is_refused(tmp_path, command, sigma):
    """0.0201 used to plan the 0.020 runs; 1e-9 to build a σ² = 0 set."""
    code, out = script(*command, sigma, "--work" if command[0] == "long_runs.py" else "--out",
                       tmp_path / "x")
    assert code == 2 and "three decimals" in out and "Traceback" not in out, out


def test_a_resume_point_whose_checkpoint_is_a_link_is_refused_before_restoring(tmp_path,
                                                                                outside):
    """It used to be reported restored, then stage 2 failed."""
    lc = life(tmp_path)
    keep = run_folder(tmp_path / "keep" / RUN, checkpoint=False)
    os.symlink(outside, keep / "checkpoints" / "last.pth")
    with pytest.raises(SystemExit, match="symbolic link"):
        lc.restore()
    assert not (tmp_path / "work" / RUN / "checkpoints" / "last.pth").exists()


# --------------------------------------------------------------------------- the layer itself
def test_reads_are_bounded_and_typed(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1]")
    with pytest.raises(safe_files.DamagedFile, match="not the object"):
        safe_files.read_json(str(path))
    path.write_bytes(b"{}" + b" " * 100)
    with pytest.raises(safe_files.DamagedFile, match="more than such a file holds"):
        safe_files.read_json(str(path), limit=50)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(safe_files.DamagedFile, match="not a plain file"):
        safe_files.read_json(str(fifo))  # never blocks on a pipe
    assert safe_files.read_json(str(tmp_path / "absent"), default=None) is None


def test_writes_stay_inside_their_root(tmp_path):
    with pytest.raises(safe_files.UnsafePath, match="outside"):
        safe_files.write_text(str(tmp_path / "a" / ".." / ".." / "b.txt"), "x",
                              str(tmp_path / "a"))
    safe_files.write_text(str(tmp_path / "a" / "b" / "c.txt"), "x", str(tmp_path / "a"))
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "x"
    assert [n for n in os.listdir(tmp_path / "a" / "b")] == ["c.txt"]  # no temp left


def test_a_forked_worker_does_not_keep_the_run_folders_lock_after_the_run(tmp_path):
    """A DataLoader worker is a fork of the run: while one outlives the run (persistent
    workers end when the loader is collected), the next run on the folder, a test right after
    training, must find it free."""
    import run_folder
    folder = str(tmp_path / "run")
    run_folder.lock(folder)
    with open(os.path.join(folder, "run.log"), "w"):  # the run wrote: its lock file stays
        pass
    go, done = os.pipe()
    up, started = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: alive until the parent has tried the folder again
        os.write(started, b"1")  # after fork's handlers ran, as a worker's batches come
        os.read(go, 1)
        os._exit(0)
    os.read(up, 1)
    try:
        run_folder.unlock(folder)
        run_folder.lock(folder)  # the worker still lives: before, an ArgError
        run_folder.unlock(folder)
    finally:
        os.write(done, b"1")
        os.waitpid(child, 0)
        for fd in (go, done, up, started):
            os.close(fd)
