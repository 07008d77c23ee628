"""scripts/gpu_lease.py, the GPU-first plan's steps, rehearsed on the CPU: the table step's
state travels as archives (whole run folders, nothing outside them), a run restored from
them elsewhere is recognised, and collect fills a ledger and rebuilds the table from it."""
import io
import json
import os
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import gpu_lease  # noqa: E402


def archive(path, members):
    """A tar.gz with (name, bytes or None for a folder, or 'link') members."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def collect(tmp_path, out, lease):
    """`gpu_lease.py collect OUT` into folders under tmp_path."""
    gpu_lease.main(["collect", str(out), "--lease_dir", str(lease), "--unpack_dir",
                    str(tmp_path / "unpacked"), "--ledger", str(tmp_path / "ledger"),
                    "--records_dir", str(tmp_path / "rec")])


@pytest.mark.parametrize("bad", ["../escape.txt", "/abs.txt", "cmnist_var0.020_seed0_lnl/../../x",
                                 "someone_elses_folder/f.txt", "cmnist_var0.020_seed0_lnl/l"])
def test_a_state_archive_with_anything_outside_a_run_folder_is_refused(tmp_path, bad):
    lease, runs = tmp_path / "lease", tmp_path / "runs"
    lease.mkdir()
    good = ("cmnist_var0.020_seed0_lnl/metrics.jsonl", b"{}\n")
    archive(lease / "state_0.tar.gz", [good, (bad, "link" if bad.endswith("/l") else b"x")])
    with pytest.raises(SystemExit, match="refusing state archive"):
        gpu_lease.restore_state(str(tmp_path), str(runs), str(lease))
    assert not runs.exists() or not any(runs.iterdir())  # nothing was unpacked
    out = tmp_path / "back"
    out.mkdir()
    (out / "state_0.tar.gz").write_bytes((lease / "state_0.tar.gz").read_bytes())
    with pytest.raises(SystemExit, match="refusing state archive"):
        collect(tmp_path, out, lease)
    assert not (tmp_path / "unpacked").exists() and not (tmp_path / "ledger").exists()


def test_table_rehearsal_packs_restores_elsewhere_and_fills_the_ledger(tmp_path, mnist_root):
    lease, out1, out2 = tmp_path / "lease", tmp_path / "out1", tmp_path / "out2"
    assert gpu_lease.main(["stage", "--lease_dir", str(lease), "--mnist_from",
                           os.path.join(mnist_root, "MNIST", "raw")]) == 0
    common = ["--tiny", "--sigmas", "0.020", "--lease_dir", str(lease), "--data_root",
              mnist_root]
    assert gpu_lease.main(["table", *common, "--runs_dir", str(tmp_path / "a"),
                           "--out", str(out1)]) == 0
    state = json.load(open(out1 / "table_state.json"))
    assert state["state"] == {"0.020": {"baseline": 1, "lnl": 1}} and state["epochs"] == 1
    with tarfile.open(out1 / "state_0.tar.gz") as tf:
        names = tf.getnames()
    assert {n.split("/")[0] for n in names} == {"cmnist_var0.020_seed0_baseline",
                                                "cmnist_var0.020_seed0_lnl"}
    assert not [n for n in names if os.path.basename(n).startswith("epoch_")]
    # a CPU rehearsal's records never enter the committed results/ ...
    ledger, rec = tmp_path / "ledger" / "cmnist", tmp_path / "rec"
    collect = ["collect", str(out1), "--lease_dir", str(lease), "--unpack_dir",
               str(tmp_path / "unpacked"), "--ledger", str(ledger), "--records_dir", str(rec),
               "--epochs", "1"]
    assert gpu_lease.main(collect) != 0 and not ledger.exists() and not rec.exists()
    # ... unless asked, into folders of the rehearsal's own
    assert gpu_lease.main(collect + ["--allow_cpu"]) == 0
    assert sorted(os.listdir(ledger)) == ["cmnist_var0.020_seed0_baseline",
                                          "cmnist_var0.020_seed0_lnl"]
    assert sorted(os.listdir(ledger / "cmnist_var0.020_seed0_lnl")) == [
        "args.json", "metrics.jsonl", "results.json"]
    table = (tmp_path / "ledger" / "cmnist_table" / "results.md").read_text()
    assert "| LNL (ours) |" in table and "Epochs per stage: 1." in table
    assert (lease / "rehearsal" / "state_0.tar.gz").exists()  # never what a lease carries
    assert not (lease / "state_0.tar.gz").exists()
    # a fresh machine: the carried state is restored into another folder and its finished
    # runs are seen as finished there (nothing trains again, the records are the same bytes)
    assert gpu_lease.main(["table", *common, "--runs_dir", str(tmp_path / "b"),
                           "--out", str(out2)]) == 0
    assert "restored" in (out2 / "lease.log").read_text()
    for run in ("cmnist_var0.020_seed0_baseline", "cmnist_var0.020_seed0_lnl"):
        for name in ("results.json", "args.json", "metrics.jsonl"):
            assert (tmp_path / "b" / run / name).read_bytes() == \
                (tmp_path / "a" / run / name).read_bytes()
    assert json.load(open(out2 / "table_state.json"))["state"] == state["state"]
    assert not (out2 / "table.log").exists() or "epoch 1/1" not in (out2 / "table.log").read_text()


@pytest.mark.parametrize("argv", [["table", "--budget", "-5"], ["table", "--sigmas", "abc"],
                                  ["table", "--group", "0"], ["table", "--seeds", "0"],
                                  ["bench", "--sweep_runs", "0"]])
def test_bad_arguments_exit_2_not_3(argv, capsys):
    """Exit 3 means "call again": a driver looping on it would never stop."""
    with pytest.raises(SystemExit) as exc:
        gpu_lease.parse_args(argv)
    assert exc.value.code == 2 and "error" in capsys.readouterr().err


def test_a_damaged_state_archive_is_one_line(tmp_path):
    lease, runs = tmp_path / "lease", tmp_path / "runs"
    lease.mkdir()
    (lease / "state_0.tar.gz").write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    with pytest.raises(SystemExit, match="is damaged"):
        gpu_lease.restore_state(str(tmp_path), str(runs), str(lease))
    out = tmp_path / "back"
    out.mkdir()
    (out / "state_0.tar.gz").write_bytes((lease / "state_0.tar.gz").read_bytes())
    with pytest.raises(SystemExit, match="is damaged"):
        collect(tmp_path, out, lease)
