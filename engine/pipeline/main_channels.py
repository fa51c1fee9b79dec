"""A unit's main channels: where its template is biggest in noise σ.

The stages that read the recording at a unit's spikes (the waveform split,
the merge, the spike reassignment, the locked events) read it there: where
two neurons of one shape differ most, where the unit holds signal rather
than noise, and a block's band-pass costs in proportion to its channels.
"""

from __future__ import annotations

import numpy as np

MAIN_CHANNELS = 4


def main_channels(template: np.ndarray, noise_levels: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The MAIN_CHANNELS of `allowed` (bool, n_channels) where `template` ((n_taps, n_channels) µV) is
    biggest in noise σ (peak to peak), ascending."""
    size = np.ptp(template, axis=0) / np.maximum(noise_levels, 1e-12)
    size = np.where(allowed, size, -np.inf)
    best = np.argsort(-size, kind="stable")[:min(MAIN_CHANNELS, int(allowed.sum()))]
    return np.sort(best)
