"""Kriging: a probe's value at any point as a weighted sum of its contacts (Kilosort 2.5's, SpikeInterface's).

The weights of a point are exp(-distance / 20 µm) to each contact, solved against the contacts' own
(with a tiny ridge, as SpikeInterface adds): SpikeInterface's get_spatial_interpolation_kernel with
method "kriging", p = 1. Motion correction reads each channel where the drift moved it
(engine/pipeline/motion.py) and a flat channel is filled from its neighbours
(engine/pipeline/bad_channels.py). The contacts' side never changes, so it is inverted once here
(SpikeInterface inverts it for every kernel: 31 ms at 384 channels), and each point's weights are one
row of a product: a few channels' weights cost a fraction of a millisecond.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.spatial.distance import cdist

SIGMA_UM = 20.0
RIDGE = 1e-6
# A contact whose weight in a point's value is under this fraction of that point's largest is dropped (not read).
WEIGHT_FLOOR = 1e-3


class Kriging:
    """Interpolation weights from a fixed set of contacts to any points."""

    def __init__(self, contacts: np.ndarray) -> None:
        self.contacts = np.asarray(contacts, dtype=np.float64)
        self.low, self.high = self.contacts.min(axis=0), self.contacts.max(axis=0)
        covariance = _covariance(self.contacts, self.contacts)
        self._inverse = np.linalg.pinv(covariance + RIDGE * np.eye(len(self.contacts)))

    def weights(self, points: np.ndarray, scale_outside: bool = True) -> np.ndarray:
        """(len(contacts), len(points)) float64: each point's weight on each contact. A point inside the
        contacts' extent has weights summing to 1 (an interpolation keeps the scale); outside it, they sum
        to 1 only with `scale_outside` (a copy of the nearest contacts) and otherwise fade with distance
        (SpikeInterface's force_extrapolate)."""
        points = np.asarray(points, dtype=np.float64)
        weights = _covariance(points, self.contacts) @ self._inverse  # (len(points), len(contacts))
        scaled = np.ones(len(points), dtype=bool) if scale_outside else self.inside(points)
        weights[scaled] /= weights[scaled].sum(axis=1, keepdims=True)
        return weights.T

    def inside(self, points: np.ndarray) -> np.ndarray:
        """(len(points),) bool: within the contacts' extent along every axis."""
        return np.all((points >= self.low) & (points <= self.high), axis=1)


def without_small_weights(weights: np.ndarray) -> np.ndarray:
    """`weights` (contacts, points) with each column's weights under WEIGHT_FLOOR of its largest zeroed, in place."""
    magnitude = np.abs(weights)
    weights[magnitude < WEIGHT_FLOOR * magnitude.max(axis=0, keepdims=True)] = 0.0
    return weights


def fill_weights(positions: np.ndarray, targets: np.ndarray, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How channels `targets` are filled from channels `sources` (indices into `positions`): (the sources
    that weigh, (n_weighing, len(targets)) float32 weights, each column summing to 1 less the weights under
    WEIGHT_FLOOR)."""
    if not len(targets):
        return sources[:0], np.empty((0, 0), np.float32)
    positions = np.asarray(positions, dtype=np.float64)
    weights = without_small_weights(Kriging(positions[sources]).weights(positions[targets]))
    weighing = np.any(weights != 0.0, axis=1)
    return sources[weighing], weights[weighing].astype(np.float32)


def with_filled_columns(read: Callable[[np.ndarray], np.ndarray], asked: np.ndarray, targets: np.ndarray,
                        sources: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_rows, len(asked)) float32: the columns of channels `asked`, those among `targets` (ascending) filled as
    `fill_weights` says (`sources` times `weights`), the others as `read(channels)` gives them ((n_rows,
    len(channels)) for ascending channels). Each channel is read once: the asked ones not filled and the sources."""
    filled = np.isin(asked, targets)
    if not filled.any():
        return read(asked)
    channels = np.union1d(asked[~filled], sources)
    values = read(channels)
    out = np.empty((values.shape[0], len(asked)), dtype=np.float32)
    out[:, ~filled] = values[:, np.searchsorted(channels, asked[~filled])]
    out[:, filled] = values[:, np.searchsorted(channels, sources)] @ weights[:, np.searchsorted(targets, asked[filled])]
    return out


def _covariance(points: np.ndarray, contacts: np.ndarray) -> np.ndarray:
    return np.exp(-cdist(points, contacts) / SIGMA_UM)
