"""Each spike's amplitude on two channels: the feature view's axes, and its lasso's split (numpy only).

Two neurons that one unit holds by mistake often differ in how their spike
spreads over neighbouring channels: on the unit's two best channels their
spikes form two clouds (phy's feature view shows the same on principal
components). A spike's amplitude on a channel is its preprocessed trace at the
tap where the reference unit's mean snippet on that channel peaks, so a
negative spike reads negative and the clouds keep their sign.

    taps = peak_taps(snippets_of_reference_unit)
    amplitudes = channel_amplitudes(recording, sorting.spike_times[spikes], channels, taps)  # (n, 2) µV
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from engine.curation.display_snippets import read_display_snippets
from engine.curation.features import Cancelled, snippet_window

BATCH_SPIKES = 5_000  # read at once when completing a lasso over a whole unit


def best_channel_pair(template: np.ndarray) -> np.ndarray:
    """(2,) int64: the channels of `template` (n_taps, n_channels) with the largest peak-to-peak, largest first
    (the one channel twice when there is only one)."""
    order = np.argsort(-np.ptp(template, axis=0), kind="stable")
    return np.array([order[0], order[min(1, len(order) - 1)]], dtype=np.int64)


def peak_taps(snippets: np.ndarray) -> np.ndarray:
    """(k,) int64 tap of the largest |mean| of `snippets` (n, length, k) on each channel."""
    return np.abs(snippets.mean(axis=0)).argmax(axis=0).astype(np.int64)


def read_amplitude_snippets(recording, spike_times: np.ndarray, channels: np.ndarray, sampling_rate: float) -> np.ndarray:
    """(n, length, k) µV snippets of the spikes on `channels`, the window the amplitudes are taken from."""
    before, after = snippet_window(sampling_rate)
    return read_display_snippets(recording, spike_times, channels, before, after)


def amplitudes_at(snippets: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """(n, k) float32: each snippet's value at `taps` (k,) on each of its k channels."""
    return snippets[:, taps, np.arange(snippets.shape[2])].astype(np.float32)


def channel_amplitudes(
    recording, spike_times: np.ndarray, channels: np.ndarray, taps: np.ndarray, sampling_rate: float,
    progress: Callable[[float], None] | None = None, should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """(n, k) float32 µV amplitude of each spike on `channels`, read BATCH_SPIKES at a time."""
    spike_times = np.asarray(spike_times, dtype=np.int64)
    amplitudes = np.zeros((len(spike_times), len(channels)), dtype=np.float32)
    for first in range(0, len(spike_times), BATCH_SPIKES):
        if should_stop is not None and should_stop():
            raise Cancelled()
        chosen = slice(first, first + BATCH_SPIKES)
        amplitudes[chosen] = amplitudes_at(read_amplitude_snippets(recording, spike_times[chosen], channels, sampling_rate), taps)
        if progress is not None:
            progress(min(first + BATCH_SPIKES, len(spike_times)) / len(spike_times))
    return amplitudes
