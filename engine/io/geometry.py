"""Where the channels are: probe geometry in µm."""

from __future__ import annotations

import numpy as np


def linear_positions(n_channels: int, pitch_um: float = 20.0) -> np.ndarray:
    """Channels on a vertical line, `pitch_um` apart: the default probe."""
    positions = np.zeros((n_channels, 2), dtype=np.float64)
    positions[:, 1] = np.arange(n_channels) * pitch_um
    return positions
