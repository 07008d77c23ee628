"""The epoch line's time left follows the recent epochs (issue #34, 6): a run paused for half an
hour on a shared machine, then going on at 15 s per epoch, says so once the pause is behind it."""
import types

import pytest

import solver
from utils import EpochPace


def test_a_pause_does_not_inflate_the_eta_of_the_epochs_after_it(monkeypatch, capsys):
    clock = [1000.0]
    monkeypatch.setattr(solver.time, "time", lambda: clock[0])
    run = types.SimpleNamespace(log_epoch=lambda epoch, stats: None)
    fake = types.SimpleNamespace(run=run, is_main=True, pace=EpochPace(clock[0]),
                                 args=types.SimpleNamespace(epochs=100), epoch=0)
    for seconds in [15] * 3 + [1800] + [15] * 4:  # the fourth epoch met a 30-minute pause
        clock[0] += seconds
        fake.epoch += 1
        solver.Solver._report(fake, {"loss_cls": 1.0})
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("epoch 8/100") and "(15.0 s/epoch, ETA 23 min 00 s)" in last, last


def test_the_pace_is_the_median_of_the_recent_epochs():
    pace = EpochPace(0.0, window=5)
    assert pace.seconds() == 0.0
    for end in (10, 20, 1030, 1040):  # 10, 10, 1010, 10
        pace.tick(end)
    assert pace.seconds() == 10
    for end in (2040, 3040, 4040, 5040):  # the machine is slow now: the estimate follows
        pace.tick(end)
    assert pace.seconds() == 1000


def test_an_epoch_resumed_part_way_counts_at_its_whole_epoch_rate(mnist_root, tmp_path,
                                                                  monkeypatch, capsys):
    """A run stopped 4 steps into its second epoch of 10 and resumed runs 6 steps: at one
    (fake) second a step its line says 10 s per epoch, not 6 (on 2026-12-02 a resumed BlindEye
    said 18 s per epoch and 22 minutes left, where 100 s and two hours were true)."""
    import main as cli
    import signal
    clock = [0.0]
    monkeypatch.setattr(solver.time, "time", lambda: clock[0])
    real_step = solver.Solver.step

    def one_second_step(self, batch):
        clock[0] += 1.0  # a step takes a second; nothing else takes any time
        return real_step(self, batch)

    def stop_four_steps_into_epoch_two(self):
        if self.epoch == 1 and self.step_in_epoch == 4:
            self.stop_signal = signal.SIGTERM
        return self.stop_signal != 0

    monkeypatch.setattr(solver.Solver, "step", one_second_step)
    argv = ["--data_root_base", mnist_root, "--output_dir", str(tmp_path), "--device", "cpu",
            "--max_train_samples", "640", "--max_test_samples", "100", "--batch_size", "64",
            "--epochs", "2", "--experiment_name", "run"]
    with monkeypatch.context() as stopping:
        stopping.setattr(solver.Solver, "_stop_requested", stop_four_steps_into_epoch_two)
        with pytest.raises(SystemExit):
            cli.main(argv)
    capsys.readouterr()
    cli.main(argv + ["--resume"])
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch 2/2"))
    assert "(10.0 s/epoch" in line, line
