"""The sort's model of a spike's neighbours: every other event's filter at its code, where it falls."""

import numpy as np

from engine.pipeline.neighbour_spikes import NeighbourSpikes
from engine.pipeline.sorting import Sorting

N_TAPS, N_CHANNELS = 12, 5


def decoded(times, units, codes, shapes, peaks, n_samples):
    """The whole recording's model, event by event: the reference."""
    model = np.zeros((n_samples + 2 * N_TAPS, N_CHANNELS), np.float64)
    for t, u, c in zip(times, units, codes):
        model[t - peaks[u] + N_TAPS:t - peaks[u] + 2 * N_TAPS] += c * shapes[u]
    return model[N_TAPS:-N_TAPS]


def test_each_window_holds_every_other_event_at_its_code_and_place():
    rng = np.random.default_rng(0)
    n_units, n_samples = 4, 3000
    shapes = rng.standard_normal((n_units, N_TAPS, N_CHANNELS)).astype(np.float32)
    shapes[3, :, :3] = 0.0  # a unit far from the first channels: no trace there
    peaks = np.array([3, 5, 0, 11])
    times = np.sort(rng.choice(np.arange(40, n_samples - 40), 200, replace=False))
    units = rng.integers(0, n_units, 200)
    # Two events starting together in one window, and one just reaching into a window's edges.
    times = np.concatenate([times, [1000, 1000 + peaks[2] - peaks[1]]])
    units = np.concatenate([units, [1, 2]])
    order = np.argsort(times, kind="stable")
    times, units = times[order], units[order].astype(np.int32)
    codes = rng.uniform(0.5, 2.0, len(times)).astype(np.float32)
    sorting = Sorting(spike_times=times, spike_units=units, amplitudes=codes, templates=shapes, sampling_rate=30_000.0,
                      template_peak_taps=peaks, filter_index=np.arange(n_units), code_amplitudes=codes)
    neighbours = NeighbourSpikes(sorting, shapes)
    before, length = 15, 40
    whole = decoded(times, units, codes, shapes, peaks, n_samples)
    # Channels unit 3 reaches, and channels it does not (its events there add nothing).
    for channels in (np.array([0, 2, 4]), np.array([0, 1, 2])):
        for unit in range(n_units):
            mine = times[units == unit]
            got = neighbours.around(mine, unit, channels, before, length)
            for k, t in enumerate(mine):
                own = decoded([t], [unit], [codes[(times == t) & (units == unit)][0]], shapes, peaks, n_samples)
                expected = (whole - own)[t - before:t - before + length][:, channels]
                np.testing.assert_allclose(got[k], expected, atol=1e-4)
