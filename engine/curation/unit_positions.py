"""Where each unit sits on the probe, and which channels around it to show (numpy only).

A unit's position is the centre of mass of its template's peak-to-peak over
the channels near its main channel (the largest one): far channels carry only
noise, and on a 384-channel probe their sum would pull every unit towards the
middle of the shank. This is the estimate spikeinterface calls
"center_of_mass"; a monopolar fit would also give a distance from the probe,
which no view here needs.
"""

from __future__ import annotations

import numpy as np

NEIGHBOURHOOD_UM = 100.0  # a spike is seen within about this distance of its neuron (DESIGN.md)
MAX_NEIGHBOURS = 16  # channels a unit's waveforms are drawn on, at most


def unit_positions(templates: np.ndarray, channel_positions: np.ndarray, radius_um: float = NEIGHBOURHOOD_UM) -> np.ndarray:
    """(n_units, 2) float64 µm: each template's peak-to-peak centre of mass near its main channel.

    templates: (n_units, n_taps, n_channels); channel_positions: (n_channels, 2) µm.
    A flat template sits on its main channel (channel 0 when all are flat).
    """
    templates = np.asarray(templates, dtype=np.float32)
    channel_positions = np.asarray(channel_positions, dtype=np.float64)
    if templates.ndim != 3:
        raise ValueError(f"templates must be (n_units, n_taps, n_channels), got shape {templates.shape}")
    if channel_positions.shape != (templates.shape[2], 2):
        raise ValueError(
            f"channel_positions must be ({templates.shape[2]}, 2) µm, one row per template channel; "
            f"got shape {channel_positions.shape}"
        )
    if templates.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.float64)
    return positions_from_peak_to_peak(np.ptp(templates, axis=1), channel_positions, radius_um)


def positions_from_peak_to_peak(
    peak_to_peak: np.ndarray, channel_positions: np.ndarray, radius_um: float = NEIGHBOURHOOD_UM
) -> np.ndarray:
    """unit_positions from the templates' (n_units, n_channels) peak-to-peak, for a caller that has it already
    (at 500 units × 384 channels each pass over the templates costs 0.1 s)."""
    peak_to_peak = np.asarray(peak_to_peak, dtype=np.float64)  # (n_units, n_channels) µV
    channel_positions = np.asarray(channel_positions, dtype=np.float64)
    if peak_to_peak.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.float64)
    main = peak_to_peak.argmax(axis=1)
    near = _distances(channel_positions, main) <= radius_um  # (n_units, n_channels)
    weights = np.where(near, peak_to_peak, 0.0)
    total = weights.sum(axis=1)
    positions = channel_positions[main].copy()
    has_weight = total > 0
    positions[has_weight] = (weights[has_weight] @ channel_positions) / total[has_weight, None]
    return positions


def main_channel(template: np.ndarray) -> int:
    """The channel of `template` (n_taps, n_channels) with the largest peak-to-peak."""
    return int(np.ptp(template, axis=0).argmax())


def neighbourhood(
    channel_positions: np.ndarray, centre: int, radius_um: float = NEIGHBOURHOOD_UM, max_channels: int = MAX_NEIGHBOURS
) -> np.ndarray:
    """(k,) int64 channels within `radius_um` of channel `centre`, nearest first, at most `max_channels` (centre included)."""
    distance = _distances(np.asarray(channel_positions, dtype=np.float64), np.array([centre]))[0]
    order = np.argsort(distance, kind="stable")
    return order[distance[order] <= radius_um][:max_channels].astype(np.int64)


def _distances(channel_positions: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(len(centres), n_channels) µm from each centre channel to every channel."""
    return np.linalg.norm(channel_positions[None, :, :] - channel_positions[centres][:, None, :], axis=2)
