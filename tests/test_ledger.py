"""The ledger's one copy (ledger.add_record): machine paths leave, nothing is overwritten, a
longer log replaces its start, a link never travels."""
import os

import pytest

import ledger


def record(folder, log_text):
    os.makedirs(folder, exist_ok=True)
    (folder / "results.json").write_text('{"test_acc": 0.5, "epochs": 1, "config": {'
                                         f'"output_dir": "{ledger.ROOT}/outputs/long"}}}}')
    (folder / "run.log").write_text(log_text)


def test_a_record_says_where_under_the_checkout_not_on_which_machine(tmp_path):
    src, dest = tmp_path / "work" / "run", tmp_path / "ledger" / "run"
    record(src, f"epoch 1/1 -> {ledger.ROOT}/outputs/long/run\nkeep {ledger.ROOT}2/x\n")
    added, same, differ = ledger.add_record(src, dest, tmp_path / "work", tmp_path / "ledger")
    assert sorted(added) == ["results.json", "run.log"] and not same and not differ
    for name in added:
        text = (dest / name).read_text()
        assert ledger.ROOT + "/" not in text and "<checkout>/outputs/long" in text
    assert f"{ledger.ROOT}2/x" in (dest / "run.log").read_text()  # another folder: left alone
    # again: identical; then the log grows (a probe's lines): replaced, the rest kept
    assert ledger.add_record(src, dest, tmp_path / "work", tmp_path / "ledger")[1] == [
        "results.json", "run.log"]
    with open(src / "run.log", "a") as fh:
        fh.write("probe done\n")
    assert ledger.add_record(src, dest, tmp_path / "work", tmp_path / "ledger")[0] == ["run.log"]
    assert (dest / "run.log").read_text().endswith("probe done\n")


def test_the_ledgers_copy_is_never_overwritten_and_a_link_never_travels(tmp_path):
    src, dest = tmp_path / "work" / "run", tmp_path / "ledger" / "run"
    record(src, "one\n")
    os.makedirs(dest)
    (dest / "results.json").write_text("{}")  # another record's, kept
    added, _, differ = ledger.add_record(src, dest, tmp_path / "work", tmp_path / "ledger")
    assert differ == ["results.json"] and (dest / "results.json").read_text() == "{}"
    (tmp_path / "secret").write_text("not for a commit")
    os.remove(src / "run.log")
    os.symlink(tmp_path / "secret", src / "run.log")
    os.remove(dest / "run.log")
    with pytest.raises(SystemExit):
        ledger.add_record(src, dest, tmp_path / "work", tmp_path / "ledger")
    assert not os.path.lexists(dest / "run.log")
