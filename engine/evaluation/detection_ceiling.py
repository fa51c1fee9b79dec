"""How well a detector told a neuron's true shape finds its spikes: a ceiling on what a sorter can score.

SpikeInterface's generator places some neurons far from every contact, and a
benchmark's mean accuracy counts them. When no sorter finds a unit, either the
sorters fall short or the unit's spikes are lost in the noise; this module tells
which, by giving a detector everything a sorter has to guess:

1. the unit's shape: its mean waveform at its true spike times on the band-passed
   recording (thousands of spikes make it exact to a few hundredths of the noise);
2. every other neuron: each one's mean waveform is subtracted at each of its true
   spike times, on the CHANNELS channels where the unit's waveform stands out most
   from the noise;
3. the optimal linear detector of a known waveform in Gaussian noise: the waveform
   whitened by the noise's covariance over its window and channels (estimated from
   the recording with every unit subtracted, at random times). Its output, scaled
   to the noise's σ, averages d' (the detectability index) at a spike;
4. every local maximum of that output (the largest within half a millisecond on
   either side) above a threshold is a detection, scored with SpikeInterface's
   definitions (engine.evaluation.scoring, 0.4 ms); the best threshold is kept.

So the accuracy is what the true shapes buy a linear detector at its best
threshold, with the other neurons known exactly. It is a measurement, not a proof
for every method, but below d' ≈ 3 no rule does much better: even at the true
times alone, deciding "spike or noise" errs on Q(d'/2) of each (d' 1.8: 18 %),
and a recording holds a thousand noise windows for every spike. The mean waveform
carries its own noise, which lifts d'² by about (window × CHANNELS) / spikes: 0.24
for a unit of 4,500 spikes (5 minutes at 15 Hz), 3.6 for one of 300 (20 s): on
short recordings the ceiling of a faint unit reads high.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import oaconvolve

from engine.evaluation.scoring import compare_to_ground_truth
from engine.pipeline.preprocessing import bandpass_filter

# The unit's waveform is taken on this many of its channels (those where it stands out most from the noise).
CHANNELS = 12
# Its window around the spike's time, in ms before and after.
BEFORE_MS, AFTER_MS = 1.0, 2.0
# Random windows of the recording (every unit subtracted) that estimate the noise's covariance.
NOISE_WINDOWS = 20_000
# Channels band-passed at once when the units' waveforms are measured: the filtered copy is this many columns.
_CHANNEL_GROUP = 16
# Thresholds tried, from 1 σ to the larger of 1.5 d' and 3 σ.
_THRESHOLDS = 100
_SPIKES_AT_ONCE = 4_096  # spikes placed or averaged per step: their windows are gathered at once


@dataclass(frozen=True)
class UnitCeiling:
    """The detector's best on one ground-truth unit."""

    unit: int
    detectability: float  # d': the whitened detector's mean output at a spike, in units of its noise σ
    accuracy: float  # tp / (tp + fn + fp), SpikeInterface's definition, at the best threshold
    precision: float
    recall: float
    threshold: float  # in σ of the detector's noise


def detection_ceiling(traces: np.ndarray, sampling_rate: float, spike_times: np.ndarray, spike_units: np.ndarray,
                      units: list[int], seed: int = 0) -> list[UnitCeiling]:
    """The ceiling (see the module's docstring) of each of `units` (ids in `spike_units`).

    traces: (n_samples, n_channels) the raw recording; spike_times, spike_units: the ground truth, in samples.
    Memory: one filtered copy of CHANNEL_GROUP channels at a time, then CHANNELS per unit."""
    traces = np.asarray(traces)
    spike_times, spike_units = np.asarray(spike_times, np.int64), np.asarray(spike_units, np.int64)
    n_samples, n_channels = traces.shape
    before = int(round(BEFORE_MS * 1e-3 * sampling_rate))
    lags = np.arange(-before, int(round(AFTER_MS * 1e-3 * sampling_rate)))
    whole = (spike_times + lags[0] >= 0) & (spike_times + lags[-1] < n_samples)
    all_units = np.unique(spike_units)
    shapes, noise = _mean_waveforms(traces, sampling_rate, spike_times[whole], spike_units[whole], all_units, lags)
    rng = np.random.default_rng(seed)
    ceilings = []
    for unit in units:
        if unit not in shapes:  # a unit without a whole window of its own is not measurable
            continue
        stands_out = np.sum((shapes[unit] / noise) ** 2, axis=0)
        channels = np.sort(np.argsort(stands_out)[::-1][: min(CHANNELS, n_channels)])
        own = spike_times[spike_units == unit]
        residual = bandpass_filter(traces[:, channels], sampling_rate)  # (n, CHANNELS) float32
        for other in all_units:  # every unit, the asked one too: the noise's covariance is read from this
            inside = whole & (spike_units == other)
            _place(residual, spike_times[inside], lags, -shapes[other][:, channels])
        waveform = shapes[unit][:, channels]  # (window, CHANNELS)
        whitened, detectability = _whitened(residual, waveform, lags, rng)
        _place(residual, spike_times[whole & (spike_units == unit)], lags, waveform)  # the asked unit back in
        output = _correlate(residual, whitened, before) / max(detectability, 1e-12)
        ceilings.append(_best_threshold(unit, output, own, detectability, sampling_rate))
    return ceilings


def _mean_waveforms(traces: np.ndarray, sampling_rate: float, times: np.ndarray, units: np.ndarray,
                    all_units: np.ndarray, lags: np.ndarray) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """({unit: (window, n_channels) mean band-passed waveform}, (n_channels,) the noise's σ by the median rule)."""
    n_channels = traces.shape[1]
    shapes = {int(unit): np.zeros((lags.size, n_channels), np.float64) for unit in all_units}
    noise = np.empty(n_channels)
    for start in range(0, n_channels, _CHANNEL_GROUP):
        group = slice(start, min(start + _CHANNEL_GROUP, n_channels))
        filtered = bandpass_filter(traces[:, group], sampling_rate)
        noise[group] = np.median(np.abs(filtered), axis=0) / 0.6745
        for unit in all_units:
            at = times[units == unit]
            total = np.zeros((lags.size, filtered.shape[1]))
            for first in range(0, at.size, _SPIKES_AT_ONCE):
                total += filtered[at[first: first + _SPIKES_AT_ONCE, None] + lags[None, :]].sum(axis=0)
            shapes[int(unit)][:, group] = total / max(at.size, 1)
    return shapes, np.maximum(noise, 1e-12)


def _place(signal: np.ndarray, times: np.ndarray, lags: np.ndarray, waveform: np.ndarray) -> None:
    """Adds `waveform` (window, channels) to `signal` at each of `times` (overlapping windows add up)."""
    waveform = waveform.astype(signal.dtype)
    for first in range(0, times.size, _SPIKES_AT_ONCE):
        rows = times[first: first + _SPIKES_AT_ONCE, None] + lags[None, :]
        np.add.at(signal, rows, waveform[None])


def _whitened(residual: np.ndarray, waveform: np.ndarray, lags: np.ndarray, rng: np.random.Generator
              ) -> tuple[np.ndarray, float]:
    """(Σ⁻¹·waveform as a (window, channels) kernel, d' = sqrt(waveformᵀ Σ⁻¹ waveform)), Σ the covariance of
    `residual`'s windows (every unit subtracted) at NOISE_WINDOWS random times."""
    at = rng.integers(-lags[0], residual.shape[0] - lags[-1], NOISE_WINDOWS)
    windows = residual[at[:, None] + lags[None, :]].reshape(at.size, -1).astype(np.float64)
    covariance = np.cov(windows, rowvar=False)
    covariance += 1e-6 * np.trace(covariance) / covariance.shape[0] * np.eye(covariance.shape[0])
    flat = waveform.reshape(-1).astype(np.float64)
    kernel = np.linalg.solve(covariance, flat)
    return kernel.reshape(waveform.shape), float(np.sqrt(max(flat @ kernel, 0.0)))


def _correlate(signal: np.ndarray, kernel: np.ndarray, before: int) -> np.ndarray:
    """(n,) Σ over channels and lags of kernel[lag] · signal[t + lag − before]: the detector's output at t."""
    n, window = signal.shape[0], kernel.shape[0]
    output = np.zeros(n, np.float64)
    for channel in range(signal.shape[1]):
        full = oaconvolve(signal[:, channel].astype(np.float64), kernel[::-1, channel], mode="full")
        output += full[window - 1 - before: window - 1 - before + n]
    return output


def _best_threshold(unit: int, output: np.ndarray, own: np.ndarray, detectability: float,
                    sampling_rate: float) -> UnitCeiling:
    """The detections (local maxima of `output` within ±0.5 ms) above the threshold that scores best."""
    reach = max(int(round(0.5e-3 * sampling_rate)), 1)
    peaks = np.flatnonzero((output == maximum_filter1d(output, 2 * reach + 1)) & (output > 1.0))
    values = output[peaks]
    best = UnitCeiling(unit, detectability, 0.0, 0.0, 0.0, float("nan"))
    for threshold in np.linspace(1.0, max(1.5 * detectability, 3.0), _THRESHOLDS):
        detected = peaks[values > threshold]
        score = compare_to_ground_truth(own, np.zeros(own.size, np.int64), detected,
                                        np.zeros(detected.size, np.int64), sampling_rate,
                                        gt_unit_ids=np.zeros(1, np.int64), sorted_unit_ids=np.zeros(1, np.int64))
        tp = int(score.match_counts[0, 0])  # the comparison's own tp is 0 under its match score; this is not
        accuracy = tp / max(detected.size + own.size - tp, 1)  # tp / (tp + fp + fn)
        if accuracy > best.accuracy:
            best = UnitCeiling(unit, detectability, accuracy, tp / max(detected.size, 1), tp / max(own.size, 1),
                               float(threshold))
    return best
