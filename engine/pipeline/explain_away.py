"""Keep only the spikes the data need: backward elimination over overlapping events.

The lasso splits a spike between look-alike filters when FISTA has not fully
converged on a coherent dictionary, and debiasing on that support keeps both
parts. Measured on the simulated tetrode with the *true* waveforms as the
dictionary: the smallest unit's filter also fired on 650 spikes of four
bigger, 0.85-0.93 similar units, so it matched none of its own.

Each event is an atom: its filter spread over the three code samples around
its maximum, i.e. exactly what the codes put into the reconstruction. Events
whose atoms overlap in time on a shared channel form a group; within a group the atoms' amplitudes are
refitted by least squares, and the event whose removal costs the least
explained energy is dropped while that cost is below `min_energy`; then the
rest are refitted, and so on. For a lone spike of amplitude a the cost is a²,
so with `min_energy` = λ² an event survives exactly when, with its
neighbours free to take up the slack, it explains as much as the lasso asks
of a lone spike. A genuine overlap keeps both spikes: the neighbour cannot
take up a different neuron's shape.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sparse
from scipy.sparse.csgraph import connected_components

# Relative ridge on each group's Gram matrix: keeps the solve stable when two
# atoms are nearly the same (the very case this module exists for).
_RIDGE = 1e-6


def event_atoms(code_index: np.ndarray, spike_filters: np.ndarray, code_triplets: np.ndarray,
                filters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, atoms): atom e spans samples [starts[e], starts[e] + n_taps + 2).

    filters: (n_filters, n_channels, n_taps); code_triplets: (n, 3) the codes
    at code index i - 1, i, i + 1. atoms: (n, n_channels, n_taps + 2) float64.
    """
    n_filters, n_channels, n_taps = filters.shape
    own = filters[spike_filters].astype(np.float64)  # (n, n_channels, n_taps)
    atoms = np.zeros((len(code_index), n_channels, n_taps + 2))
    for offset in range(3):
        atoms[:, :, offset : offset + n_taps] += code_triplets[:, offset][:, None, None] * own
    return np.asarray(code_index, dtype=np.int64) - 1, atoms


def place_atoms(shape: tuple[int, int], starts: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """Sum of atoms placed at their starts, cropped to a (n_channels, n) signal."""
    n_channels, n = shape
    width = atoms.shape[2]
    placed = np.zeros((n_channels, n + 2 * width), dtype=np.float64)
    columns = starts[:, None] + width + np.arange(width)[None, :]  # (n_events, width)
    for channel in range(n_channels):
        np.add.at(placed[channel], columns.ravel(), atoms[:, channel, :].ravel())
    return placed[:, width : width + n].astype(np.float32)


def eliminate_redundant_events(
    signal: np.ndarray,
    starts: np.ndarray,
    atoms: np.ndarray,
    min_energy: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(keep, scales): which events to keep, and each kept atom's refitted scale.

    signal: (n_channels, n) noise-normalised; starts: (n_events,) sorted or
    not; atoms: (n_events, n_channels, width). Dropped events get scale 0.
    """
    n_events = len(starts)
    keep = np.ones(n_events, dtype=bool)
    scales = np.ones(n_events)
    if n_events == 0:
        return keep, scales
    width = atoms.shape[2]
    order = np.argsort(starts, kind="stable")
    starts_sorted = starts[order]
    atoms_sorted = atoms[order]
    correlations = _atom_correlations(signal, starts_sorted, atoms_sorted)
    norms = np.einsum("ecw,ecw->e", atoms_sorted, atoms_sorted)
    groups = _overlapping_groups(starts_sorted, atoms_sorted)
    sizes = np.bincount(groups)

    keep_sorted = np.ones(n_events, dtype=bool)
    scale_sorted = np.ones(n_events)
    # Lone events: the least-squares scale and explained energy in closed form.
    lone = sizes[groups] == 1
    safe_norms = np.maximum(norms, 1e-12)
    scale_sorted[lone] = correlations[lone] / safe_norms[lone]
    keep_sorted[lone] = (correlations[lone] > 0) & (correlations[lone] ** 2 / safe_norms[lone] >= min_energy)
    shared = np.flatnonzero(~lone)
    by_group = shared[np.argsort(groups[shared], kind="stable")]  # each group's members stay in start order
    for members in np.split(by_group, np.flatnonzero(np.diff(groups[by_group])) + 1) if by_group.size else []:
        kept, fitted = _eliminate_in_group(starts_sorted[members], atoms_sorted[members], correlations[members],
                                           min_energy)
        keep_sorted[members] = kept
        scale_sorted[members] = fitted
    keep[order] = keep_sorted
    scales[order] = np.where(keep_sorted, scale_sorted, 0.0)
    return keep, scales


def _overlapping_groups(starts: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """(n_events,) group label of each event (`starts` sorted): events are linked when their atoms
    overlap in time and share a channel, and a group is what is linked, directly or through others.

    Time alone is not enough on a probe: at 384 channels spikes far apart on the shank overlap in
    time all the time, and a 1-second chunk became one group of thousands of events (its
    elimination loop costs the group's size to the fourth power)."""
    n_events, width = len(starts), atoms.shape[2]
    channels = np.packbits(np.any(atoms != 0, axis=2), axis=1)  # (n_events, bytes): each atom's channels
    last = np.searchsorted(starts, starts + width, side="left")  # events from i + 1 to last - 1 overlap i
    counts = np.maximum(last - np.arange(n_events) - 1, 0)
    first_pair = np.repeat(np.arange(n_events), counts)
    second_pair = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + first_pair + 1
    linked = np.any(channels[first_pair] & channels[second_pair], axis=1)
    graph = sparse.coo_matrix((np.ones(int(linked.sum()), dtype=np.int8), (first_pair[linked], second_pair[linked])),
                              shape=(n_events, n_events))
    return connected_components(graph, directed=False)[1]


def _atom_correlations(signal: np.ndarray, starts: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """<atom_e, signal> for each event, zero outside the signal."""
    n_channels, n = signal.shape
    width = atoms.shape[2]
    padded = np.pad(signal.astype(np.float64), ((0, 0), (width, width)))
    index = starts[:, None] + width + np.arange(width)[None, :]  # (n_events, width)
    windows = padded[:, index]  # (n_channels, n_events, width)
    return np.einsum("cew,ecw->e", windows, atoms)


def _gram(starts: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """Inner products of a group's atoms, at their relative positions."""
    size, n_channels, width = atoms.shape
    gram = np.zeros((size, size))
    for a in range(size):
        gram[a, a] = float(np.sum(atoms[a] * atoms[a]))
        for b in range(a + 1, size):
            lag = int(starts[b] - starts[a])
            if lag >= width:
                break  # sorted by start: later atoms are further away
            value = float(np.sum(atoms[a][:, lag:] * atoms[b][:, : width - lag]))
            gram[a, b] = gram[b, a] = value
    return gram


def _eliminate_in_group(starts: np.ndarray, atoms: np.ndarray, correlations: np.ndarray,
                        min_energy: float) -> tuple[np.ndarray, np.ndarray]:
    gram = _gram(starts, atoms)
    active = np.arange(len(starts))
    scales = np.zeros(len(starts))
    while active.size:
        sub = gram[np.ix_(active, active)]
        sub = sub + _RIDGE * np.trace(sub) / active.size * np.eye(active.size)
        inverse = np.linalg.inv(sub)
        fitted = inverse @ correlations[active]
        # Energy lost by removing one event with the others refitted: a_e² / (G⁻¹)_ee.
        cost = fitted**2 / np.maximum(np.diag(inverse), 1e-12)
        cost[fitted <= 0] = -np.inf  # a negative amplitude is never a spike: drop those first
        weakest = int(np.argmin(cost))
        if cost[weakest] >= min_energy:
            scales[active] = fitted
            break
        active = np.delete(active, weakest)
    keep = np.zeros(len(starts), dtype=bool)
    keep[active] = True
    return keep, scales
