"""Where the channels are: probe geometry in µm."""

from __future__ import annotations

import numpy as np


def linear_positions(n_channels: int, pitch_um: float = 20.0) -> np.ndarray:
    """Channels on a vertical line, `pitch_um` apart: the default probe."""
    positions = np.zeros((n_channels, 2), dtype=np.float64)
    positions[:, 1] = np.arange(n_channels) * pitch_um
    return positions


# A spike reaches the channels within about 100 µm of its neuron: Kilosort's and
# SpikeInterface's default sparsity radius, and ours.
DEFAULT_RADIUS_UM = 100.0


class GeometryError(ValueError):
    """Channel positions or a neighbourhood radius that cannot describe a probe; says what to fix."""


def duplicate_positions_problem(positions: np.ndarray) -> str | None:
    """What is wrong when channels share a position, in words (None when each has its own)."""
    duplicates = duplicate_positions(positions)
    if not duplicates:
        return None
    shown = ", ".join(f"{a} and {b}" for a, b in duplicates[:5])
    return (f"{len(duplicates)} channel(s) share a position with another ({shown}): each channel needs its own "
            f"(x, y) in µm; check the probe file or channel_positions")


def duplicate_positions(positions: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of channels given the same (x, y)."""
    rounded = np.round(np.asarray(positions, dtype=np.float64), 6)
    _, first, inverse = np.unique(rounded, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    return [(int(first[group]), int(channel)) for channel, group in enumerate(inverse) if first[group] != channel]


def channel_neighbourhoods(positions: np.ndarray, radius_um: float = DEFAULT_RADIUS_UM) -> np.ndarray:
    """(n_channels, n_channels) bool: channel j is within `radius_um` of channel i (each channel is its own).

    Raises GeometryError for duplicated positions, or for a radius that leaves
    a channel of a multi-channel probe without any neighbour.
    """
    positions = np.asarray(positions, dtype=np.float64)  # (n_channels, 2) µm
    if not np.isfinite(radius_um) or radius_um <= 0:
        raise GeometryError(f"the neighbourhood radius must be a positive number of µm, got {radius_um!r}")
    problem = duplicate_positions_problem(positions)
    if problem:
        raise GeometryError(problem)
    distances = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=2)
    neighbours = distances <= radius_um
    if len(positions) > 1:
        np.fill_diagonal(distances, np.inf)
        nearest = distances.min(axis=1)
        lonely = np.flatnonzero(nearest > radius_um)
        if lonely.size:
            raise GeometryError(
                f"with a radius of {radius_um:g} µm, {lonely.size} channel(s) have no neighbour "
                f"(channel {lonely[0]}: nearest is {nearest[lonely[0]]:.1f} µm away): use a radius of at least "
                f"{float(nearest.max()):.0f} µm"
            )
    return neighbours
