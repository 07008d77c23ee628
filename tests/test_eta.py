"""The epoch line's time left follows the recent epochs (issue #34, 6): a run paused for half an
hour on a shared machine, then going on at 15 s per epoch, says so once the pause is behind it."""
import types

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
