"""A neuron too faint for the first dictionary is found in what the learned dictionary leaves unexplained."""

import numpy as np
import pytest

from engine.cpu import in_order
from engine.io.recording import NumpyRecording
from engine.model.crsae import CRsAE
from engine.pipeline import faint_units
from engine.pipeline.faint_units import discovery_batches, faint_candidates, unexplained_peaks
from engine.pipeline.inference import SpikeEvents
from engine.pipeline.params import PEAK_FRACTION
from tests.test_unit_merge import RATE, spike_train

N_TAPS, N_CHANNELS = 60, 4
PEAK = int(PEAK_FRACTION * N_TAPS)


def shape(gains, width: float, late: float) -> np.ndarray:
    """(N_CHANNELS, N_TAPS) a spike whose trough is at tap PEAK, its main channel's trough -1."""
    taps = np.arange(N_TAPS)[None, :]
    wave = -np.exp(-0.5 * ((taps - PEAK) / width) ** 2) + late * np.exp(-0.5 * ((taps - PEAK - 10) / 5.0) ** 2)
    return np.asarray(gains, dtype=np.float64)[:, None] * wave


def unit_norm(spike: np.ndarray) -> np.ndarray:
    return (spike / np.linalg.norm(spike)).astype(np.float32)


def recording_with(spikes: list[tuple[np.ndarray, np.ndarray]], seconds: float, rng) -> NumpyRecording:
    """Unit-σ white noise plus each (shape, train) pair; positions: a line of channels 20 µm apart."""
    traces = rng.standard_normal((N_CHANNELS, int(seconds * RATE))).astype(np.float32)
    for spike, train in spikes:
        for time in train:
            traces[:, time - PEAK : time - PEAK + N_TAPS] += spike
    positions = np.stack([np.zeros(N_CHANNELS), 20.0 * np.arange(N_CHANNELS)], axis=1)
    return NumpyRecording(traces.T, RATE, channel_positions=positions)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Best normalised correlation of two (channels, taps) shapes over shifts of a few taps."""
    best = 0.0
    for shift in range(-4, 5):
        rolled = np.roll(b, shift, axis=1)
        best = max(best, float((a * rolled).sum() / (np.linalg.norm(a) * np.linalg.norm(rolled))))
    return best


def test_a_faint_neuron_without_a_filter_gets_a_candidate_and_a_filtered_one_does_not():
    rng = np.random.default_rng(0)
    seconds = 20.0
    n = int(seconds * RATE)
    strong = 40.0 * shape([1.0, 0.6, 0.3, 0.1], 2.5, 0.3)  # 40 σ on channel 0: the dictionary has it
    faint = 3.5 * shape([0.1, 0.3, 0.7, 1.0], 4.0, 0.4)  # 3.5 σ on channel 3: crosses 5 σ almost never
    strong_train, faint_train = spike_train(rng, n, 10.0), spike_train(rng, n, 20.0)
    recording = recording_with([(strong, strong_train), (faint, faint_train)], seconds, rng)
    model = CRsAE(unit_norm(strong)[None], 4.5, 100)
    candidates = faint_candidates(recording, np.ones(N_CHANNELS, np.float32), model, 4.5, 15,
                                  np.ones((N_CHANNELS, N_CHANNELS), bool)).candidates
    assert len(candidates) >= 1
    assert similarity(candidates[0], faint) > 0.9  # the biggest cluster is the faint neuron
    assert all(similarity(candidate, strong) < 0.9 for candidate in candidates)  # not the filtered one's residue


def test_a_rare_neuron_that_no_filter_codes_is_found_by_its_deep_peaks(monkeypatch):
    """A neuron at 2.5 Hz, 7 σ deep on two channels alike, adds ~25 peaks in 20 s to each of them beside
    the noise's ~15 a channel at 4 σ: too few over the noise to count (each channel's excess ~3.4 σ, under
    FAINT_NOISE_EXCESS_Z). But noise seldom reaches 5 σ, and its peaks do: a candidate, from those peaks.
    (SpikeInterface's drifting 384-channel probe: three 2-Hz neurons of 5-7 σ had no unit; found, 1.00,
    0.95 and 1.00.)"""
    rng = np.random.default_rng(6)
    seconds = 20.0
    strong = 40.0 * shape([1.0, 0.6, 0.0, 0.0], 2.5, 0.3)
    rare = 7.0 * shape([0.0, 0.3, 1.0, 1.0], 3.0, 0.4)
    n = int(seconds * RATE)
    recording = recording_with([(strong, spike_train(rng, n, 10.0)), (rare, spike_train(rng, n, 2.5))], seconds, rng)
    # The filter lives on its neuron's channels, as on a probe: it does not code the rare neuron's spikes.
    model = CRsAE(unit_norm(strong)[None], 4.5, 100, channel_mask=np.array([[1, 1, 0, 0]]))

    def search():
        return faint_candidates(recording, np.ones(N_CHANNELS, np.float32), model, 4.5, 15,
                                np.ones((N_CHANNELS, N_CHANNELS), bool)).candidates

    found = search()
    assert len(found) >= 1 and similarity(found[0], rare) > 0.9
    monkeypatch.setattr(faint_units, "FAINT_MIN_STRONG_SPIKES", 10**9)  # only the 4-σ peaks counted: not found
    assert len(search()) == 0


def test_batches_searched_two_at_a_time_give_the_candidates_one_at_a_time_gives(monkeypatch):
    rng = np.random.default_rng(0)
    n = int(20.0 * RATE)
    strong = 40.0 * shape([1.0, 0.6, 0.3, 0.1], 2.5, 0.3)
    faint = 3.5 * shape([0.1, 0.3, 0.7, 1.0], 4.0, 0.4)
    recording = recording_with([(strong, spike_train(rng, n, 10.0)), (faint, spike_train(rng, n, 20.0))], 20.0, rng)
    model = CRsAE(unit_norm(strong)[None], 4.5, 100)
    found = {}
    for workers in (1, 2):
        monkeypatch.setattr(faint_units, "adapt_threads", lambda workers=workers: workers)
        found[workers] = faint_candidates(recording, np.ones(N_CHANNELS, np.float32), model, 4.5, 15,
                                          np.ones((N_CHANNELS, N_CHANNELS), bool)).candidates
    assert len(found[1]) >= 1
    np.testing.assert_array_equal(found[1], found[2])


def test_in_order_yields_in_the_items_order_with_bounded_work_under_way():
    import threading
    import time

    lock, running, most = threading.Lock(), [0], [0]

    def work(item):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05 if item % 3 == 0 else 0.001)  # earlier items finish later than their followers
        with lock:
            running[0] -= 1
        return item * item

    assert list(in_order(work, list(range(9)), 2)) == [item * item for item in range(9)]
    assert most[0] == 2
    assert list(in_order(work, list(range(4)), 1)) == [0, 1, 4, 9]


def test_noise_alone_gives_no_candidate():
    rng = np.random.default_rng(1)
    strong = 40.0 * shape([1.0, 0.6, 0.3, 0.1], 2.5, 0.3)
    recording = recording_with([(strong, spike_train(rng, int(20.0 * RATE), 10.0))], 20.0, rng)
    model = CRsAE(unit_norm(strong)[None], 4.5, 100)
    candidates = faint_candidates(recording, np.ones(N_CHANNELS, np.float32), model, 4.5, 15,
                                  np.ones((N_CHANNELS, N_CHANNELS), bool)).candidates
    assert len(candidates) == 0


def test_peaks_touched_by_a_coded_spike_on_their_channel_are_not_unexplained():
    residual = np.zeros((N_CHANNELS, 1000), np.float32)
    residual[0, 200] = -6.0  # beside a coded spike of a filter on channel 0: its fit's residue
    residual[3, 500] = -6.0  # beside a coded spike of a filter on channels 0-1 only: unexplained
    residual[2, 800] = -6.0  # nothing coded near: unexplained
    events = SpikeEvents(np.array([205, 498]), np.array([0, 1], np.int32), np.array([30.0, 30.0], np.float32))
    filter_channels = np.array([[True, False, False, False], [True, True, False, False]])
    times, channels = unexplained_peaks(residual, events, filter_channels, 4.0, 15, 30,
                                        np.ones((N_CHANNELS, N_CHANNELS), bool))
    assert sorted(zip(times.tolist(), channels.tolist())) == [(500, 3), (800, 2)]


def test_discovery_reads_at_most_its_budget_spread_over_the_recording():
    from engine.pipeline.inference import chunk_batches

    n_samples = int(7200 * RATE)  # two hours, 384 channels: 30 s of budget
    batches = chunk_batches(n_samples, int(RATE), 8)
    chosen = discovery_batches(batches, 384, RATE, max_values=384 * 30 * int(RATE))
    assert len(chosen) == 4  # 30 s in batches of 8 s, rounded up
    assert chosen[0] == 0 and chosen[-1] == len(batches) - 1  # from the start to the end
    assert np.all(np.diff(chosen) > 0.3 * len(batches) / 4)  # spread, not bunched
    short = chunk_batches(int(10 * RATE), int(RATE), 8)
    assert discovery_batches(short, 4, RATE, max_values=384 * 30 * int(RATE)) == [0, 1]  # a small one whole


def test_each_filter_has_its_own_bar_for_its_spikes():
    # A found faint neuron's filter has a lower λ than the others: its spikes are read against that bar.
    from engine.pipeline.inference import kept_events
    taps = np.arange(20)
    bump = np.exp(-0.5 * ((taps - 8) / 2.0) ** 2)
    filters = np.stack([bump, -bump])[:, None, :].astype(np.float32)
    filters /= np.linalg.norm(filters, axis=2, keepdims=True)
    signal = np.zeros((1, 500), np.float32)
    signal[0, 100:120] += 4.5 * filters[0, 0]
    signal[0, 300:320] += 4.5 * filters[1, 0]
    codes = np.zeros((2, 500), np.float32)
    codes[0, 100] = codes[1, 300] = 4.5
    kept = lambda bars: kept_events(codes, signal, filters, 5, bars)[0].tolist()
    assert kept(4.0) == [0, 1] and kept(5.0) == []
    assert kept(np.array([5.0, 4.0])) == [1]  # filter 1's bar is 4: its 4.5 spike stays, filter 0's goes


def test_peaks_of_a_filtered_neuron_make_no_candidate():
    # Every cluster a residue of a filter the dictionary has: no candidate (and no error on the empty set).
    from engine.pipeline.faint_units import _cluster_candidates, _SnippetStore
    spike = shape([1.0, 0.6, 0.3, 0.1], 2.5, 0.3)
    positions = np.stack([np.zeros(N_CHANNELS), 20.0 * np.arange(N_CHANNELS)], axis=1)
    store = _SnippetStore(positions, np.ones((N_CHANNELS, N_CHANNELS), bool), N_TAPS)
    rng = np.random.default_rng(2)
    n_peaks = 60
    residual = 0.05 * rng.standard_normal((N_CHANNELS, n_peaks * 100)).astype(np.float32)
    starts = np.arange(n_peaks) * 100 + 20
    for start in starts:
        residual[:, start : start + N_TAPS] += 5.0 * spike
    channels, strong = np.zeros(n_peaks, np.int64), np.ones(n_peaks, bool)
    no_peak = (np.zeros(0, np.int64), np.zeros(0, bool))
    store.add(store.cut(residual, starts, channels, strong), (channels, strong), no_peak)  # no positive peak
    candidates = _cluster_candidates(store, unit_norm(spike)[None])
    assert candidates.shape == (0, N_CHANNELS, N_TAPS)
    other = unit_norm(shape([0.1, 0.3, 0.7, 1.0], 4.0, 0.4))[None]  # a dictionary without it: one candidate
    assert _cluster_candidates(store, other).shape == (1, N_CHANNELS, N_TAPS)


def test_deep_peaks_beside_a_channel_whose_every_peak_counts_make_no_candidate_of_their_own():
    from engine.pipeline.faint_units import _cluster_candidates, _SnippetStore
    n_channels = 12
    positions = np.stack([np.zeros(n_channels), 20.0 * np.arange(n_channels)], axis=1)
    neighbourhoods = np.abs(np.subtract.outer(np.arange(n_channels), np.arange(n_channels))) <= 1
    store = _SnippetStore(positions, neighbourhoods, N_TAPS)
    taps, rng = np.arange(N_TAPS), np.random.default_rng(3)
    no_peak = (np.zeros(0, np.int64), np.zeros(0, bool))

    def spike(channel: int, width: float) -> np.ndarray:
        gains = np.exp(-0.5 * (np.arange(n_channels) - channel) ** 2)
        return -gains[:, None] * np.exp(-0.5 * ((taps - PEAK) / width) ** 2)[None, :]

    def add_peaks(shape: np.ndarray, count: int, depth: float, channel: int, strong: bool) -> None:
        residual = 0.05 * rng.standard_normal((n_channels, count * 100)).astype(np.float32)
        starts = np.arange(count) * 100 + 20
        for start in starts:
            residual[:, start : start + N_TAPS] += depth * shape
        channels, flags = np.full(count, channel), np.full(count, strong)
        store.add(store.cut(residual, starts, channels, flags), (channels, flags), no_peak)

    add_peaks(spike(1, 2.0), 60, 4.5, 1, False)  # channel 1 counts every peak
    add_peaks(spike(2, 5.0), 20, 6.0, 2, True)  # deep peaks of another shape beside it: too few for every peak
    add_peaks(spike(8, 3.0), 20, 6.0, 8, True)  # the same, on a channel with no such neighbour
    found = _cluster_candidates(store, unit_norm(spike(5, 1.0))[None])
    assert sorted(np.ptp(found, axis=2).argmax(axis=1).tolist()) == [1, 8]


# 28.5 s: the last batch is 5 chunks, the last of them half a second long, which the search codes in parts
# of 2 chunks (faint_units.search_parts); alone, that chunk would not be padded as in the whole batch.
@pytest.mark.parametrize("seconds", [30.0, 28.5])
def test_the_sort_takes_the_batches_the_search_coded_as_they_are_unless_its_settings_differ(monkeypatch, seconds):
    from engine.pipeline import inference
    from engine.pipeline.refinement import AmplitudePrior

    rng = np.random.default_rng(4)
    n = int(seconds * RATE)
    strong = 40.0 * shape([1.0, 0.6, 0.3, 0.1], 2.5, 0.3)
    recording = recording_with([(strong, spike_train(rng, n, 10.0))], seconds, rng)
    model = CRsAE(unit_norm(strong)[None], 4.5, 100)
    noise = np.ones(N_CHANNELS, np.float32)
    prior = AmplitudePrior(np.array([40.0]), np.array([4.0]))
    search = faint_candidates(recording, noise, model, 4.5, 15, np.ones((N_CHANNELS, N_CHANNELS), bool),
                              prior=prior, max_values=N_CHANNELS * int(16 * RATE))
    n_batches = len(inference.chunk_batches(n, inference.default_chunk_size(recording, N_TAPS), inference.BATCH_CHUNKS))
    assert 0 < len(search.coded) < n_batches  # the budget covers some batches, not all

    coded = []
    original = inference.ChunkSpikeFinder.batch_spikes
    monkeypatch.setattr(inference.ChunkSpikeFinder, "batch_spikes",
                        lambda self, recording, cores: coded.append(cores[0]) or original(self, recording, cores))
    whole = inference.infer_spikes(model, recording, noise, 15, 4.5, prior=prior)
    assert len(coded) == n_batches
    coded.clear()
    taken = inference.infer_spikes(model, recording, noise, 15, 4.5, prior=prior, known=(search.settings, search.coded))
    assert len(coded) == n_batches - len(search.coded)  # the searched batches are not coded again
    assert len(whole) > 100
    for field in ("times", "filters", "amplitudes"):
        np.testing.assert_array_equal(getattr(taken, field), getattr(whole, field))
    coded.clear()
    other_bar = inference.infer_spikes(model, recording, noise, 15, 5.0, prior=prior, known=(search.settings, search.coded))
    assert len(coded) == n_batches  # another bar: the search's spikes are not this sort's
    assert len(other_bar) > 100


def test_a_found_filter_that_leaves_an_old_one_idle_replaces_it_and_one_that_is_not_kept_replaces_nothing():
    """Pruning judges the dictionary with the candidates appended: an old filter whose neuron a kept found
    filter took (idle now by pruning's rule) goes with it; with no candidate kept the old ones all stay."""
    from engine.pipeline.faint_units import found_filters_kept
    from engine.pipeline.params import FAINT_MIN_POOL_SPIKES, MIN_USE_FRACTION
    from engine.pipeline.pruning import prune

    rng = np.random.default_rng(4)
    n_old = 4
    filters = np.stack([unit_norm(rng.standard_normal((N_CHANNELS, N_TAPS))).T for _ in range(n_old + 2)])
    busiest = 300
    idle_count = int(MIN_USE_FRACTION * busiest) - 5  # under pruning's idle bar
    # Old filter 2 now wins few events (the found filter 4 took its neuron); found filter 5 wins too few to stay.
    counts = [busiest, 280, idle_count, 250, 200, FAINT_MIN_POOL_SPIKES - 1]
    filter_of = np.repeat(np.arange(len(counts)), counts)
    times = np.sort(rng.choice(10_000_000, len(filter_of), replace=False)).astype(np.int64)
    events = SpikeEvents(times, rng.permutation(filter_of).astype(np.int32), np.full(len(times), 20.0, np.float32))
    decision = prune(filters, events, 0.99)

    kept, replaced = found_filters_kept(decision, n_old)

    assert kept == [4] and replaced == [2]
    # The same judgement without the found filter kept (it won too few): nothing is replaced.
    counts[4] = FAINT_MIN_POOL_SPIKES - 1
    filter_of = np.repeat(np.arange(len(counts)), counts)
    events = SpikeEvents(np.arange(len(filter_of), dtype=np.int64) * 1000, rng.permutation(filter_of).astype(np.int32),
                         np.full(len(filter_of), 20.0, np.float32))
    kept, replaced = found_filters_kept(prune(filters, events, 0.99), n_old)
    assert kept == [] and replaced == []


def test_a_searched_batch_is_coded_in_parts_and_a_lone_last_chunk_joins_the_part_before_it():
    """Each part holds a chunk of the batch's full length when the batch does, so each is padded as the batch
    is and codes as the sort's inference codes the whole batch."""
    from engine.pipeline.faint_units import search_parts
    from engine.pipeline.params import FAINT_PART_CHUNKS

    cores = [(i * 100, (i + 1) * 100) for i in range(2 * FAINT_PART_CHUNKS + 1)]
    parts = search_parts(cores)
    assert [chunk for part in parts for chunk in part] == cores  # every chunk once, in order
    assert all(len(part) >= FAINT_PART_CHUNKS for part in parts)
    assert len(parts) == 2
    assert search_parts(cores[:1]) == [cores[:1]]


def test_noise_with_as_many_peaks_as_a_faint_neuron_gives_no_candidate(monkeypatch):
    """A minute of noise crosses -4 σ more than FAINT_MIN_SPIKES times on each channel, and as often +4 σ:
    no candidate. Without the noise bar the same search makes one (the simulator's 60-s probes: a noise
    unit on every channel, 10 neurons sorted into 29-42 units)."""
    rng = np.random.default_rng(5)
    strong = 40.0 * shape([1.0, 0.6, 0.3, 0.1], 2.5, 0.3)
    seconds = 60.0
    recording = recording_with([(strong, spike_train(rng, int(seconds * RATE), 10.0))], seconds, rng)
    model = CRsAE(unit_norm(strong)[None], 4.5, 100)

    def search():
        return faint_candidates(recording, np.ones(N_CHANNELS, np.float32), model, 4.5, 15,
                                np.ones((N_CHANNELS, N_CHANNELS), bool)).candidates

    assert len(search()) == 0
    monkeypatch.setattr(faint_units, "FAINT_NOISE_EXCESS_Z", -np.inf)
    assert len(search()) >= 1


def test_a_channels_excess_of_negative_peaks_is_counted_in_standard_deviations():
    z = faint_units.noise_excess(np.array([49, 60, 0, 30]), np.array([6, 60, 0, 0]))
    np.testing.assert_allclose(z, [43 / np.sqrt(55), 0.0, 0.0, np.sqrt(30)])
