"""The headline's tokens/s windows: steps after the warm-up, ten at a time, as zeroray logs."""

from bench.train_bench import window_rates


def test_window_rates_skip_warm_up_and_use_ten_step_windows():
    times = [float(i) for i in range(60)]  # one step per second: steps 31-40, 41-50, 51-60
    assert window_rates(times, tokens_per_step=100) == [100.0] * 3
    times = [t + 5.0 if i >= 45 else t for i, t in enumerate(times)]  # step 46 took 6 s
    assert window_rates(times, tokens_per_step=100) == [100.0, 1000 / 15, 100.0]
