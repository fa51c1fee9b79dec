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

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sparse
from scipy.sparse.csgraph import connected_components

from engine.model.crsae import channel_lists
from engine.model.pairs import pairs_in_runs

# Relative ridge on each group's Gram matrix: keeps the solve stable when two
# atoms are nearly the same (the very case this module exists for).
_RIDGE = 1e-6
# Overlapping pairs whose atoms' products are computed at once (AtomProducts.pairs holds nine numbers a pair in a
# few arrays: ~25 MB a block).
_PRODUCTS_AT_ONCE = 65_536
# Pairs of atoms multiplied sample by sample at once, when no Gram tensor gives their products.
_PAIRS_PER_BLOCK = 4096


@dataclass(frozen=True)
class AtomProducts:
    """Inner products of events' atoms from the filters' cross-correlations, without their samples.

    An atom is its filter at three code samples, so two atoms' product is nine entries of the Gram
    tensor (engine/model/working_set.gram_tensor, which the working-set encoder has already computed)
    weighted by their codes: nine multiplications a pair instead of a product over every channel and
    sample they share (that product was two thirds of explaining away on a 32-channel probe).
    """

    gram: np.ndarray  # (n_filters, n_filters, 2·n_taps − 1): G[k, j, d + n_taps − 1] = ⟨h_k at t, h_j at t + d⟩
    filters: np.ndarray  # (n_events,) each event's filter
    codes: np.ndarray  # (n_events, 3) its codes at index − 1, index, index + 1 (event_atoms' code_triplets)

    def subset(self, order: np.ndarray) -> "AtomProducts":
        return AtomProducts(self.gram, self.filters[order], self.codes[order])

    def pairs(self, first: np.ndarray, second: np.ndarray, lags: np.ndarray) -> np.ndarray:
        """<atom first[p], atom second[p] placed lags[p] samples later>, for each pair p."""
        reach = (self.gram.shape[2] - 1) // 2  # n_taps − 1: further apart, filters do not overlap
        own, other = np.divmod(np.arange(9), 3)  # the nine (first's code, second's code) combinations
        shifts = lags[:, None] + (other - own)[None, :]  # (pairs, 9)
        weights = self.codes[first][:, own] * self.codes[second][:, other]
        inside = np.abs(shifts) <= reach
        cross = self.gram[self.filters[first][:, None], self.filters[second][:, None], np.clip(shifts, -reach, reach) + reach]
        return np.einsum("pn,pn->p", weights, np.where(inside, cross, 0.0))

    def norms(self) -> np.ndarray:
        """(n_events,) each atom's squared norm."""
        events = np.arange(len(self.filters))
        return self.pairs(events, events, np.zeros(len(events), dtype=np.int64))


def event_atoms(code_index: np.ndarray, spike_filters: np.ndarray, code_triplets: np.ndarray,
                filters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, atoms, channels): atom e spans samples [starts[e], starts[e] + n_taps + 2) on its
    filter's channels only.

    filters: (n_filters, n_channels, n_taps); code_triplets: (n, 3) the codes
    at code index i - 1, i, i + 1. atoms: (n, most channels of a filter, n_taps + 2) float64,
    row j on channel channels[e, j]; channels: (n, same) int64, −1 (and a zero row) where a filter
    has fewer. On a 384-channel probe full-width atoms took 3.7 GB for one training batch.
    """
    shapes, channels = filters_on_their_channels(filters)
    spike_filters = _checked_events(spike_filters, code_triplets, len(code_index), len(shapes))
    atoms = np.zeros((len(code_index), channels.shape[1], filters.shape[2] + 2))
    # Compiled, each event's three placements summed where they land: built with numpy (a gather of
    # every event's filter, then three broadcast products) this was 40 % of a training step on a
    # 32-channel probe, whose ~3,000 events a batch make 100 MB of atoms.
    _build_atoms(atoms, shapes, spike_filters, np.asarray(code_triplets))
    return np.asarray(code_index, dtype=np.int64) - 1, atoms, channels[spike_filters]


def _checked_events(spike_filters: np.ndarray, code_triplets: np.ndarray, n_events: int, n_filters: int) -> np.ndarray:
    """spike_filters as int64, refused (before a compiled loop reads past an array) unless every event has a
    filter of the dictionary and three codes."""
    spike_filters = np.asarray(spike_filters, dtype=np.int64)
    if spike_filters.shape != (n_events,) or np.shape(code_triplets) != (n_events, 3):
        raise ValueError(f"{n_events} events need {n_events} filters and ({n_events}, 3) codes, got "
                         f"{spike_filters.shape} and {np.shape(code_triplets)}")
    if n_events and (spike_filters.min() < 0 or spike_filters.max() >= n_filters):
        raise ValueError(f"events name filters {spike_filters.min()}..{spike_filters.max()} of a {n_filters}-filter dictionary")
    return spike_filters


@numba.njit(nogil=True, cache=True)
def _build_atoms(atoms, shapes, spike_filters, code_triplets):
    """atoms[e, :, o : o + n_taps] += code_triplets[e, o] · shapes[spike_filters[e]] for o = 0, 1, 2 in
    turn, each product in the inputs' precision, as numpy's broadcast sums did (same result)."""
    n_taps = shapes.shape[2]
    for event in range(atoms.shape[0]):
        shape = shapes[spike_filters[event]]
        for offset in range(3):
            code = code_triplets[event, offset]
            for row in range(shape.shape[0]):
                for tap in range(n_taps):
                    atoms[event, row, offset + tap] += code * shape[row, tap]


def filters_on_their_channels(filters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shapes, channels): each filter on the channels it is non-zero on: shapes (n_filters, most
    channels of a filter, n_taps) with zero rows where channels (n_filters, same) is −1."""
    filters = np.asarray(filters)
    channels = channel_lists(np.any(filters != 0, axis=2))  # (n_filters, most channels of a filter)
    # Each filter on its channels once, then one gather per event (gathering every event's channels from
    # the full-width filters was 7 % of a training step on a 32-channel probe).
    shapes = np.where(channels[:, :, None] >= 0, np.take_along_axis(filters, np.maximum(channels, 0)[:, :, None], axis=1), 0.0)
    return shapes, channels


def _all_channels(n_events: int, n_channels: int) -> np.ndarray:
    return np.broadcast_to(np.arange(n_channels, dtype=np.int64), (n_events, n_channels))


def subtract_filters(signal: np.ndarray, starts: np.ndarray, scales: np.ndarray, filters: np.ndarray,
                     spike_filters: np.ndarray) -> np.ndarray:
    """A float32 copy of the (n_channels, n) `signal` less scales[e] × filters[spike_filters[e]] placed at
    starts[e] (cropped to the signal), each filter on its own channels: the residual of those events. Each
    atom is made where it is subtracted, never stored (the atoms of a 32-channel pool's 10,000 spikes
    took 300 MB).

    Subtracted in place from the one copy: the atoms summed into a float64 signal of their own, cast and
    subtracted (three fresh arrays of the signal's size) took 1.5-1.8 s for a 20-s pool of 32 channels
    inside a sort, most of it the first touch of that new memory, against 0.36 s this way (the copy's
    own first touch is most of that). Where atoms overlap, their products are rounded to float32
    one at a time rather than summed in float64 first: differences of ~1e-6 σ."""
    n_channels, n = np.shape(signal)
    filters = np.asarray(filters, dtype=np.float32)
    width = filters.shape[2]
    starts = np.asarray(starts, np.int64)
    if starts.size and (starts.min() < -width or starts.max() > n):
        # The compiled loop checks no bounds of its own beyond the cropping: such an atom is refused here.
        raise ValueError(f"atoms start at samples {starts.min()}..{starts.max()}, outside [-{width}, {n}] "
                         f"of a {n}-sample signal with {width}-sample atoms")
    if filters.shape[1] != n_channels:
        raise ValueError(f"{filters.shape[1]}-channel filters for a {n_channels}-channel signal")
    shapes, channels = filters_on_their_channels(filters)
    spike_filters = _checked_events(spike_filters, np.zeros((len(starts), 3)), len(starts), len(shapes))
    residual = np.array(signal, dtype=np.float32, order="C", copy=True)
    _subtract_scaled_shapes(residual, starts, np.asarray(scales, np.float32),
                            np.ascontiguousarray(shapes, dtype=np.float32), np.ascontiguousarray(channels, dtype=np.int64),
                            spike_filters)
    return residual


# Compiled: np.add.at (unbuffered, one index tuple per sample) was 4 % of inference on a 32-channel probe.
# Event by event, each atom's rows in turn: the samples it takes from are then near each other in memory.
@numba.njit(nogil=True, cache=True)
def _subtract_scaled_shapes(residual, starts, scales, shapes, channels, spike_filters):
    n_rows, width = shapes.shape[1], shapes.shape[2]
    n = residual.shape[1]
    for event in range(starts.size):
        k = spike_filters[event]
        at = starts[event]
        first, last = max(0, -at), min(width, n - at)  # the taps that land inside the signal
        if first >= last:
            continue
        scale = scales[event]
        for row in range(n_rows):
            channel = channels[k, row]
            if channel < 0:
                continue
            target = residual[channel, at + first : at + last]
            shape = shapes[k, row, first:last]
            for tap in range(last - first):
                target[tap] -= scale * shape[tap]


def eliminate_redundant_events(
    signal: np.ndarray,
    starts: np.ndarray,
    atoms: np.ndarray,
    min_energy: float | np.ndarray,
    channels: np.ndarray | None = None,
    products: AtomProducts | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(keep, scales): which events to keep, and each kept atom's refitted scale.

    signal: (n_channels, n) noise-normalised; starts: (n_events,) sorted or
    not; atoms and channels as event_atoms gives them (channels None: atoms are
    (n_events, n_channels, width)). `products`: the atoms' inner products from the
    filters' Gram tensor (faster; default: from the atoms' samples). Dropped events get scale 0.
    """
    n_events = len(starts)
    if n_events == 0:
        return np.ones(0, dtype=bool), np.ones(0)
    channels = _all_channels(n_events, atoms.shape[1]) if channels is None else channels
    order = np.argsort(starts, kind="stable")
    starts_sorted = starts[order]
    atoms_sorted = atoms[order]
    channels_sorted = channels[order]
    correlations = _atom_correlations(signal, starts_sorted, atoms_sorted, channels_sorted)
    if products is None:
        norms = np.einsum("ecw,ecw->e", atoms_sorted, atoms_sorted)

        def pair_products(first, second, lags):  # a block of pairs at a time: each holds two atoms' samples
            blocks = range(0, len(first), _PAIRS_PER_BLOCK)
            return np.concatenate([np.zeros(0)] + [
                _pair_products(first[i : i + _PAIRS_PER_BLOCK], second[i : i + _PAIRS_PER_BLOCK],
                               lags[i : i + _PAIRS_PER_BLOCK], atoms_sorted, channels_sorted) for i in blocks])
    else:
        products = products.subset(order)
        norms, pair_products = products.norms(), products.pairs
    return _eliminate(order, starts_sorted, atoms.shape[2], channels_sorted, signal.shape[0], correlations, norms,
                      pair_products, min_energy)


def eliminate_redundant_codes(
    signal: np.ndarray,
    code_index: np.ndarray,
    spike_filters: np.ndarray,
    code_triplets: np.ndarray,
    filters: np.ndarray,
    gram: np.ndarray,
    min_energy: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`eliminate_redundant_events` for events given by their codes (as `event_atoms` takes them), with
    the filters' Gram tensor for the atoms' products: the atoms themselves are never built. Each atom's
    product with the signal is summed from its filter and codes in one compiled pass; the atoms were
    100 MB a training batch on a 32-channel probe (120 taps), and their first touch of fresh memory
    most of a step's explaining away."""
    n_events = len(code_index)
    if n_events == 0:
        return np.ones(0, dtype=bool), np.ones(0)
    if signal.shape[0] != filters.shape[1]:
        raise ValueError(f"a {signal.shape[0]}-channel signal for {filters.shape[1]}-channel filters")
    shapes, channels = filters_on_their_channels(filters)
    spike_filters = _checked_events(spike_filters, code_triplets, n_events, len(shapes))
    starts = np.asarray(code_index, dtype=np.int64) - 1
    order = np.argsort(starts, kind="stable")
    code_triplets = np.asarray(code_triplets)
    correlations = _code_correlations(signal, starts[order], shapes, channels, spike_filters[order],
                                      np.ascontiguousarray(code_triplets[order]))
    products = AtomProducts(gram, spike_filters[order], code_triplets[order].astype(np.float64))
    return _eliminate(order, starts[order], filters.shape[2] + 2, channels[spike_filters[order]], signal.shape[0],
                      correlations, products.norms(), products.pairs, min_energy)


def _eliminate(order: np.ndarray, starts_sorted: np.ndarray, width: int, channels_sorted: np.ndarray, n_channels: int,
               correlations: np.ndarray, norms: np.ndarray, pair_products, min_energy: float | np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray]:
    """(keep, scales) in the callers' event order, from the events in start order (`order` maps one to the
    other): their atoms' width, channels, products with the signal, squared norms, and `pair_products`."""
    n_events = len(starts_sorted)
    keep = np.ones(n_events, dtype=bool)
    scales = np.ones(n_events)
    # Each event's own bar (a filter of a faint neuron may have a lower one), in start order.
    bars = np.broadcast_to(np.asarray(min_energy, dtype=np.float64), (n_events,))[order]
    groups = _overlapping_groups(starts_sorted, width, channels_sorted, n_channels)
    sizes = np.bincount(groups)

    keep_sorted = np.ones(n_events, dtype=bool)
    scale_sorted = np.ones(n_events)
    # Lone events: the least-squares scale and explained energy in closed form.
    lone = sizes[groups] == 1
    safe_norms = np.maximum(norms, 1e-12)
    scale_sorted[lone] = correlations[lone] / safe_norms[lone]
    keep_sorted[lone] = (correlations[lone] > 0) & (correlations[lone] ** 2 / safe_norms[lone] >= bars[lone])
    # Groups of two or more (a spike and the shadow or neighbour it overlaps; on a busy probe, runs of
    # dozens), each in one compiled loop (`_eliminate_groups`).
    grouped = np.argsort(groups, kind="stable")  # each group's events together, in start order
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    first, second, first_row, second_row, pair_offsets = _group_pairs(grouped, offsets, starts_sorted, width)
    lags = starts_sorted[second] - starts_sorted[first]
    blocks = [slice(i, i + _PRODUCTS_AT_ONCE) for i in range(0, len(first), _PRODUCTS_AT_ONCE)]
    products = np.concatenate([np.zeros(0)] + [pair_products(first[b], second[b], lags[b]) for b in blocks])
    _eliminate_groups(grouped, offsets, pair_offsets, first_row, second_row, products.astype(np.float64),
                      np.asarray(norms, dtype=np.float64), np.asarray(correlations, dtype=np.float64),
                      np.ascontiguousarray(bars, dtype=np.float64), keep_sorted, scale_sorted)
    keep[order] = keep_sorted
    scales[order] = np.where(keep_sorted, scale_sorted, 0.0)
    return keep, scales


@numba.njit(nogil=True, cache=True)
def _code_correlations(signal, starts, shapes, channels, spike_filters, code_triplets):
    """<atom_e, signal> for events given by their codes (see eliminate_redundant_codes): each atom's
    sample summed as _build_atoms sums it, times the signal there; zero outside the signal."""
    n_taps = shapes.shape[2]
    n_samples = signal.shape[1]
    correlations = np.zeros(starts.size)
    for event in range(starts.size):
        k = spike_filters[event]
        total = 0.0
        for row in range(shapes.shape[1]):
            channel = channels[k, row]
            if channel < 0:
                continue
            for sample in range(n_taps + 2):
                time = starts[event] + sample
                if time < 0 or time >= n_samples:
                    continue
                atom = 0.0
                for offset in range(3):
                    tap = sample - offset
                    if 0 <= tap < n_taps:
                        atom += code_triplets[event, offset] * shapes[k, row, tap]
                total += atom * signal[channel, time]
        correlations[event] = total
    return correlations


def _overlapping_groups(starts: np.ndarray, width: int, channels: np.ndarray, n_channels: int) -> np.ndarray:
    """(n_events,) group label of each event (`starts` sorted): events are linked when their atoms
    overlap in time and share a channel, and a group is what is linked, directly or through others.

    Time alone is not enough on a probe: at 384 channels spikes far apart on the shank overlap in
    time all the time, and a 1-second chunk became one group of thousands of events (its
    elimination loop costs the group's size to the fourth power)."""
    n_events = len(starts)
    on_channel = np.zeros((n_events, n_channels + 1), dtype=bool)  # the last column takes the −1 padding
    on_channel[np.arange(n_events)[:, None], channels] = True
    bits = np.packbits(on_channel[:, :n_channels], axis=1)  # (n_events, bytes): each atom's channels
    last = np.searchsorted(starts, starts + width, side="left")  # events from i + 1 to last - 1 overlap i
    first_pair, second_pair = pairs_in_runs(np.arange(n_events) + 1, last)
    linked = np.any(bits[first_pair] & bits[second_pair], axis=1)
    graph = sparse.coo_matrix((np.ones(int(linked.sum()), dtype=np.int8), (first_pair[linked], second_pair[linked])),
                              shape=(n_events, n_events))
    return connected_components(graph, directed=False)[1]


def _atom_correlations(signal: np.ndarray, starts: np.ndarray, atoms: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """<atom_e, signal> for each event, zero outside the signal and on padding channels (−1).

    Gathered from the signal where it is, not from a zero-padded float64 copy of it: at 384
    channels that copy was 110 MB a chunk, and making it 4 % of a sort."""
    width = atoms.shape[2]
    index = starts[:, None] + np.arange(width)[None, :]  # (n_events, width)
    inside = (index >= 0) & (index < signal.shape[1])
    index = np.clip(index, 0, signal.shape[1] - 1)
    correlations = np.zeros(len(starts))
    for row in range(atoms.shape[1]):
        channel = channels[:, row]
        samples = signal[np.maximum(channel, 0)[:, None], index].astype(np.float64)
        samples *= inside & (channel >= 0)[:, None]
        correlations += np.einsum("ew,ew->e", samples, atoms[:, row])
    return correlations


def _pair_products(first: np.ndarray, second: np.ndarray, lags: np.ndarray, atoms: np.ndarray,
                   channels: np.ndarray) -> np.ndarray:
    """<atom first[p], atom second[p] placed lags[p] samples later> over the channels they share, for each pair p."""
    width = atoms.shape[2]
    shifted_index = np.arange(width)[None, :] - lags[:, None]  # second's sample under each of first's
    valid = (shifted_index >= 0) & (shifted_index < width)
    # Each of first's channels is at most one row of second's (an atom's channels are distinct): that
    # row, shifted, is gathered under it in one step and one product is taken per channel, not one per
    # pair of channels (the all-pairs product was a sixth of inference on a 32-channel probe).
    same_channel = (channels[first][:, :, None] == channels[second][:, None, :]) & (channels[first] >= 0)[:, :, None]
    row_of_second = same_channel.argmax(axis=2)  # (pairs, first's channels)
    under = atoms[second[:, None, None], row_of_second[:, :, None], np.clip(shifted_index, 0, width - 1)[:, None, :]]
    per_channel = np.einsum("piw,piw->pi", atoms[first], under * valid[:, None, :])
    return np.where(same_channel.any(axis=2), per_channel, 0.0).sum(axis=1)


@numba.njit(nogil=True, cache=True)
def _group_pairs(grouped, offsets, starts, width):
    """(first, second, first_row, second_row, pair_offsets): the pairs of events of a group whose atoms
    overlap (start lag under `width`), group by group (group g is grouped[offsets[g]:offsets[g + 1]], in
    start order), first before second; their places in their group; group g's pairs at
    pair_offsets[g]:pair_offsets[g + 1]."""
    pair_offsets = np.zeros(offsets.size, dtype=np.int64)
    for group in range(offsets.size - 1):
        count = 0
        for a in range(offsets[group], offsets[group + 1]):
            b = a + 1
            while b < offsets[group + 1] and starts[grouped[b]] - starts[grouped[a]] < width:
                b += 1
            count += b - a - 1
        pair_offsets[group + 1] = pair_offsets[group] + count
    total = pair_offsets[-1]
    first = np.empty(total, dtype=np.int64)
    second = np.empty(total, dtype=np.int64)
    first_row = np.empty(total, dtype=np.int64)
    second_row = np.empty(total, dtype=np.int64)
    pair = 0
    for group in range(offsets.size - 1):
        for a in range(offsets[group], offsets[group + 1]):
            b = a + 1
            while b < offsets[group + 1] and starts[grouped[b]] - starts[grouped[a]] < width:
                first[pair], second[pair] = grouped[a], grouped[b]
                first_row[pair], second_row[pair] = a - offsets[group], b - offsets[group]
                pair += 1
                b += 1
    return first, second, first_row, second_row, pair_offsets


# error_model numpy: a bar of 0 makes a cost infinite (never under the bar), as numpy's division does, not an exception.
@numba.njit(nogil=True, cache=True, error_model="numpy")
def _eliminate_groups(grouped, offsets, pair_offsets, first_row, second_row, products, norms, correlations, bars,
                      keep, scales):
    """Backward elimination in every group of two or more events, writing `keep` and `scales` (start order).

    Groups are `grouped[offsets[g]:offsets[g + 1]]` (each in start order); their overlapping pairs
    at rows first_row[p], second_row[p] of the group for p in pair_offsets[g]:pair_offsets[g + 1], with
    their atoms' `products`;
    `norms`: each event's squared atom norm; `correlations`: its atom's product with the signal; `bars`:
    its own bar (λ² of its filter). Each round refits the group's active atoms by least squares (ridge
    `_RIDGE` times their mean squared norm) and drops the event whose removal costs the least explained
    energy, a_e² / (G⁻¹)_ee, as a share of its bar, while that is under 1 (an event fitted at or below 0
    goes first; of equal costs, the earliest); a group whose weakest event clears its bar is settled
    with its fitted scales, and its dropped events get 0. Compiled: the stacked numpy solves it replaces,
    a size of group at a time and the groups over 8 one by one, were 10 % of inference on a 32-channel
    probe, whose busy stretches link dozens of events."""
    for group in range(offsets.size - 1):
        size = offsets[group + 1] - offsets[group]
        if size < 2:
            continue
        members = grouped[offsets[group] : offsets[group + 1]]
        gram = np.zeros((size, size))
        for row in range(size):
            gram[row, row] = norms[members[row]]
        for pair in range(pair_offsets[group], pair_offsets[group + 1]):
            a, b = first_row[pair], second_row[pair]
            gram[a, b] = products[pair]
            gram[b, a] = products[pair]
        active = np.ones(size, dtype=np.bool_)
        fitted = np.zeros(size)
        settled = False
        for _ in range(size):
            rows = np.flatnonzero(active)
            n_active = rows.size
            if n_active == 0:
                break
            trace = 0.0
            for i in rows:
                trace += gram[i, i]
            ridge = _RIDGE * trace / n_active
            system = np.empty((n_active, n_active))
            for i in range(n_active):
                for j in range(n_active):
                    system[i, j] = gram[rows[i], rows[j]]
                system[i, i] += ridge
            inverse = np.linalg.inv(system)
            fitted[:] = 0.0
            weakest, lowest = -1, np.inf
            for i in range(n_active):
                value = 0.0
                for j in range(n_active):
                    value += inverse[i, j] * correlations[members[rows[j]]]
                fitted[rows[i]] = value
                if value <= 0:
                    cost = -np.inf
                else:
                    cost = value * value / max(inverse[i, i], 1e-12) / bars[members[rows[i]]]
                if cost < lowest or weakest < 0:
                    weakest, lowest = rows[i], cost
            if lowest < 1.0:
                active[weakest] = False
                continue
            settled = True
            break
        for row in range(size):
            keep[members[row]] = active[row] and settled
            scales[members[row]] = fitted[row] if (active[row] and settled) else 0.0
