"""Does the recording, as it was opened, look like a recording? Checked on a few samples before training.

A raw binary file does not say how many channels it has, and a wrong count
still opens when it divides the file: a 1-channel file read as 2 channels
sorts into nonsense without a word. Nor does a flat file (all zeros, a dead
headstage) fail by itself: it trains and "finds" a unit with no spikes. These
checks read a few short stretches spread over the file, never the whole of it.
"""

from __future__ import annotations

import numpy as np

from engine.io.recording import Recording, RecordingError

N_STRETCHES = 16  # stretches read, spread evenly over the file
STRETCH_S = 0.05  # seconds per stretch
HIGH_PASS_MS = 1.0  # running mean removed before correlating: the spike band, not the LFP
MAX_CHANNELS_CHECKED = 64
NEAR_IDENTICAL = 0.98  # correlation above which two channels carry the same signal
# Below this, neighbours share too little for the comparison to mean anything (white noise, say).
MIN_TELLING_CORRELATION = 0.3


def check_not_flat(recording: Recording) -> None:
    """Raise RecordingError when every sampled value of every channel is the same."""
    values = _sample(recording)  # (n, c) µV
    if values.size and np.all(values == values.flat[0]):
        raise RecordingError(
            f"{recording.path or 'the recording'} is flat: all {values.shape[0]:,} samples read across the file "
            f"are {values.flat[0]:g} µV on every channel, so there are no spikes to find. "
            "Check that this is the right file, and its dtype and offset."
        )


def channel_count_warnings(recording: Recording) -> list[str]:
    """Sentences saying why the channel count looks wrong for the data; empty when it looks right.

    One channel read as several interleaves its consecutive samples across
    the "channels": each then looks more like its neighbour than like itself
    one sample later, the reverse of a real probe.
    """
    n_channels = min(recording.n_channels, MAX_CHANNELS_CHECKED)
    if n_channels < 2:
        return []
    width = max(3, int(round(HIGH_PASS_MS * 1e-3 * recording.sampling_rate)))
    stretches = [_high_passed(stretch[:, :n_channels], width) for stretch in _stretches(recording)]
    stretches = [s for s in stretches if len(s) > 2]
    if not stretches:
        return []
    values = np.concatenate(stretches)  # (n, c) high-passed µV
    spread = values.std(axis=0)
    live = spread > 0
    if live.sum() < 2:
        return []
    z = np.where(live, (values - values.mean(axis=0)) / np.where(live, spread, 1.0), 0.0)
    pairs = [c for c in range(n_channels - 1) if live[c] and live[c + 1]]
    neighbour = np.array([np.mean(z[:, c] * z[:, c + 1]) for c in pairs])  # (n_pairs,)
    itself_later = float(np.mean([np.mean(z[:-1, c] * z[1:, c]) for c in np.flatnonzero(live)]))
    warnings = []
    identical = [c for c, r in zip(pairs, neighbour) if r > NEAR_IDENTICAL]
    if identical:
        shown = ", ".join(f"{c} and {c + 1}" for c in identical[:5])
        warnings.append(
            f"channels {shown} are near-identical (correlation above {NEAR_IDENTICAL}): "
            "check the channel count and the channel map"
        )
    if len(neighbour) and neighbour.mean() > max(itself_later, MIN_TELLING_CORRELATION):
        warnings.append(
            f"{recording.n_channels} channels looks wrong for this file: neighbouring channels are more alike "
            f"(correlation {neighbour.mean():.2f}) than each channel with itself one sample later "
            f"({itself_later:.2f}), as happens when a file with fewer channels is read as {recording.n_channels}. "
            "Check --n-channels (or n_channels in the sidecar)"
        )
    return warnings


def _stretches(recording: Recording) -> list[np.ndarray]:
    length = max(1, min(int(STRETCH_S * recording.sampling_rate), recording.n_samples))
    starts = np.unique(np.linspace(0, recording.n_samples - length, N_STRETCHES).astype(np.int64))
    return [recording.get_traces(int(start), int(start) + length) for start in starts]  # each (length, c) µV


def _sample(recording: Recording) -> np.ndarray:
    return np.concatenate(_stretches(recording))


def _high_passed(traces: np.ndarray, width: int) -> np.ndarray:
    """traces minus their running mean over `width` samples (valid part only)."""
    if len(traces) < width + 2:
        return traces[:0]
    cumulative = np.cumsum(np.vstack([np.zeros((1, traces.shape[1])), traces.astype(np.float64)]), axis=0)
    running_mean = (cumulative[width:] - cumulative[:-width]) / width  # (n - width + 1, c)
    return traces[width // 2 : width // 2 + len(running_mean)] - running_mean
