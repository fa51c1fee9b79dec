"""The curation views' fast snippet reads (engine.curation.display_snippets) match the sort's preprocessing closely."""

import numpy as np
import pytest

from engine.curation.display_snippets import display_margin, read_display_snippets, reference_channels
from engine.curation.features import read_snippets
from engine.io.recording import NumpyRecording
from engine.pipeline.preprocessing import PreprocessedRecording, filter_margin


def _recording(n_channels: int, common_mode: float = 0.0) -> PreprocessedRecording:
    rng = np.random.default_rng(3)
    n = 30_000
    traces = rng.normal(0, 10, (n, n_channels)).astype(np.float32)
    traces += common_mode * rng.normal(0, 1, (n, 1)).astype(np.float32)  # what every channel shares
    spike = -120 * np.exp(-0.5 * ((np.arange(30) - 10) / 3.0) ** 2)
    for t in range(500, n - 500, 997):  # a unit on channels 40-43
        traces[t: t + 30, 40:44] += spike[:, None].astype(np.float32)
    return PreprocessedRecording(NumpyRecording(traces, sampling_rate=10_000.0))


def test_without_a_common_reference_the_snippets_are_the_preprocessed_ones():
    recording = _recording(4)
    assert not recording.common_reference
    times = np.array([5, 700, 15_000, 29_990])  # both ends of the recording included
    channels = np.array([3, 1])
    exact = read_snippets(recording, times, channels, 10, 15)
    fast = read_display_snippets(recording, times, channels, 10, 15)
    assert fast.shape == exact.shape == (4, 25, 2)
    inner = slice(1, 3)  # away from the ends, where the read starts from zeros instead of the data
    np.testing.assert_allclose(fast[inner], exact[inner], atol=0.02 * np.abs(exact[inner]).max())


def test_on_a_probe_only_the_asked_and_reference_channels_are_read_and_the_shared_noise_is_still_removed():
    recording = _recording(128, common_mode=40.0)
    reads = []
    parent_read = recording.parent._read_block

    def counting(start, stop, channel_index):
        reads.append(None if channel_index is None else len(channel_index))
        return parent_read(start, stop, channel_index)

    recording.parent._read_block = counting
    times = np.arange(500, 29_000, 997)[:20] + 10  # the unit's spikes, at their trough
    channels = np.arange(38, 46)
    fast = read_display_snippets(recording, times, channels, 10, 15)
    assert max(reads) <= len(channels) + len(reference_channels(128))  # never all 128 channels
    recording.parent._read_block = parent_read
    exact = read_snippets(recording, times, channels, 10, 15)
    noise = float(np.median(recording.noise_levels))
    # The common mode (4× the noise) is gone: what is left differs from the full median's by a fraction of σ...
    assert np.sqrt(np.mean((fast - exact) ** 2)) < 0.5 * noise
    # ...and the spikes keep their size on their channels.
    np.testing.assert_allclose(fast.mean(axis=0)[10, 2:6], exact.mean(axis=0)[10, 2:6], rtol=0.05)


def test_the_display_margin_is_shorter_than_the_sorts():
    assert display_margin(30_000.0, 300.0, 6_000.0) < filter_margin(30_000.0, 300.0, 6_000.0) / 2


@pytest.mark.parametrize("n_channels, count", [(384, 32), (20, 32)])
def test_reference_channels_spread_over_the_probe(n_channels, count):
    channels = reference_channels(n_channels, count)
    assert channels[0] == 0 and channels[-1] == n_channels - 1
    assert len(channels) == min(count, n_channels)


def test_block_cached_reads_equal_the_recordings_and_scrolling_reads_only_new_blocks():
    from engine.curation.block_cache import BlockCachedRecording

    recording = NumpyRecording(np.random.default_rng(0).normal(0, 1, (10_000, 3)).astype(np.float32), 1_000.0)
    reads = []
    original = recording._read_block
    recording._read_block = lambda start, stop, index: reads.append((start, stop)) or original(start, stop, index)
    cached = BlockCachedRecording(recording, block_s=0.5, max_values=3 * 2_000)  # four blocks of 500 samples fit
    np.testing.assert_array_equal(cached.get_traces(250, 1_750), recording.get_traces(250, 1_750))
    reads.clear()
    np.testing.assert_array_equal(cached.get_traces(750, 2_250), recording.get_traces(750, 2_250))
    assert reads[:1] == [(2_000, 2_500)], "blocks 0.5-2 s were kept: only the new one is read"
    assert cached._values <= 3 * 2_000, "the oldest block made room"
    np.testing.assert_array_equal(cached.get_traces(1_000, 2_600, [2, 0]), recording.get_traces(1_000, 2_600, [2, 0]))


def test_the_views_reader_of_a_long_probe_reads_every_channel_with_a_subset_median():
    from engine.curation.display_snippets import SubsetReferencedRecording, for_views

    recording = _recording(128, common_mode=40.0)
    reader = for_views(recording)
    assert isinstance(reader, SubsetReferencedRecording)
    assert for_views(_recording(64)) is not None and not isinstance(for_views(_recording(64)), SubsetReferencedRecording)
    every = reader.get_traces(5_000, 8_000)
    some = reader.get_traces(5_000, 8_000, [40, 41, 100])
    np.testing.assert_allclose(some, every[:, [40, 41, 100]], atol=1e-4)
    exact = recording.get_traces(5_000, 8_000)
    assert np.sqrt(np.mean((every - exact) ** 2)) < 0.5 * float(np.median(recording.noise_levels))
