"""The detection ceiling: what a detector told every unit's true shape scores on each unit."""

import numpy as np

from engine.evaluation.detection_ceiling import detection_ceiling

RATE = 30_000.0


def _spike(amplitude: float, width_ms: float) -> np.ndarray:
    """(60,) a spike-like trough and its slower rebound, peak at sample 20."""
    t = (np.arange(60) - 20) / RATE * 1e3
    return amplitude * (-np.exp(-0.5 * (t / width_ms) ** 2) + 0.35 * np.exp(-0.5 * ((t - 0.5) / (2 * width_ms)) ** 2))


def _train(rng: np.random.Generator, n_samples: int, rate_hz: float) -> np.ndarray:
    gaps = rng.exponential(RATE / rate_hz, int(2 * rate_hz * n_samples / RATE)) + 0.003 * RATE  # 3 ms refractory
    times = np.cumsum(gaps).astype(np.int64) + 100
    return times[times < n_samples - 100]


def test_a_unit_beside_a_big_one_is_found_and_a_unit_under_the_noise_is_not():
    rng = np.random.default_rng(3)
    n_samples, n_channels = int(30 * RATE), 4
    traces = rng.normal(0.0, 1.0, (n_samples, n_channels)).astype(np.float32)
    # big: 30 σ on channels 0-1; beside it: 3.5 σ on channels 0-1 with a wider shape (its spikes often sit on
    # the big unit's: only a detector that knows the big one subtracts them); faint: 0.2 σ on channel 3.
    units = {0: (_spike(30.0, 0.12), [0, 1], 20.0), 1: (_spike(3.5, 0.25), [0, 1], 20.0),
             2: (_spike(0.2, 0.15), [3], 20.0)}
    times, labels = [], []
    for unit, (shape, channels, rate) in units.items():
        at = _train(rng, n_samples, rate)
        for channel, gain in zip(channels, (1.0, 0.6)):
            for t in at:
                traces[t - 20 : t + 40, channel] += gain * shape
        times.append(at)
        labels.append(np.full(at.size, unit))
    times, labels = np.concatenate(times), np.concatenate(labels)
    order = np.argsort(times, kind="stable")

    ceilings = {c.unit: c for c in detection_ceiling(traces, RATE, times[order], labels[order], [0, 1, 2])}

    assert ceilings[0].accuracy > 0.98 and ceilings[0].detectability > 30
    assert ceilings[1].accuracy > 0.9 and ceilings[1].detectability > 6, ceilings[1]
    assert ceilings[2].accuracy < 0.3 and ceilings[2].detectability < 3, ceilings[2]
    for ceiling in ceilings.values():
        assert 0.0 <= ceiling.precision <= 1.0 and 0.0 <= ceiling.recall <= 1.0
