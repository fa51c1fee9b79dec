"""Where a batch of codes' values peak above their filter's bar: the working set's screening, compiled.

The working-set encoder starts from, and grows by, the coordinates whose correlation (or
gradient) exceeds their filter's bar and is the largest of their filter's within a radius.
In numpy that took a pass over the whole batch for the bar, another to leave W's coordinates
out, one to list the survivors, then a gather of each survivor's window: 12 % of inference on
a 32-channel probe, most of it on the flanks of big spikes, where a coordinate is outdone by
its immediate neighbour. Here one compiled pass tests each coordinate against its bar and then
walks outwards from it, stopping at the first bigger neighbour. Most of a gradient lies under
its bars (on the 32-channel probe 87 % of runs of 32 samples hold no value above), so each
run is first screened by its largest value, which the CPU takes 8 samples at a time; the
sample-by-sample test runs only where that clears the bar. On recording seed 4's gradients
`_list_peaks` took 0.82 of its time, the same peaks: the runs that clear the bar hold most of
the work (half their samples are above it, each walked to its first bigger neighbour).

Of those peaks, the ones that are only another filter's echo of a bigger spike nearby are left
out (`shadows`): in numpy, every pair within half a filter length listed out and a three-axis
gather from the Gram tensor, 7 % of inference on the 32-channel probe; compiled, each candidate
walks its neighbours and stops at the first that explains it away.
"""

from __future__ import annotations

import numba
import numpy as np


def peaks_above(values: np.ndarray, thresholds: np.ndarray, radius: int,
                excluded: np.ndarray | None = None) -> np.ndarray:
    """(batch, K, m) bool: where `values` (batch, K, m) exceed their filter's threshold (`thresholds`,
    one per filter, any shape that holds K values) and are at least every value of their filter's row
    within `radius` samples, `excluded` coordinates neither counting nor competing (ties are peaks)."""
    peaks = np.zeros(values.shape, dtype=np.bool_)
    peaks.reshape(-1)[peak_indices(values, thresholds, radius, excluded)] = True
    return peaks


def peak_indices(values: np.ndarray, thresholds: np.ndarray, radius: int,
                 excluded: np.ndarray | None = None) -> np.ndarray:
    """`peaks_above`'s peaks as flat indices into `values` (int64, increasing), found without writing or
    scanning a batch-sized mask: the working set's checks look for a few thousand peaks among millions of
    values, and listing them from a mask (np.flatnonzero) cost as much as finding them."""
    rows, bars, skip = _as_rows(values, thresholds, excluded)
    # The whole batch: one block a row, every one looked at.
    return _list_peaks(rows, bars, skip, excluded is not None, int(radius),
                       np.ones((rows.shape[0], 1), dtype=np.bool_), max(rows.shape[1], 1))


def _as_rows(values: np.ndarray, thresholds: np.ndarray, excluded: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values as (chunks · filters, codes) float32 rows, each filter's bar, `excluded` as rows or an empty
    array) for the compiled look."""
    n_chunks, n_filters, n_codes = values.shape
    bars = np.ascontiguousarray(np.asarray(thresholds, dtype=np.float32).reshape(-1))
    if bars.size != n_filters:
        raise ValueError(f"thresholds hold {bars.size} values, expected one per filter ({n_filters})")
    rows = np.ascontiguousarray(values, dtype=np.float32).reshape(n_chunks * n_filters, n_codes)
    skip = (np.zeros((0, 0), dtype=np.bool_) if excluded is None
            else np.ascontiguousarray(excluded, dtype=np.bool_).reshape(n_chunks * n_filters, n_codes))
    return rows, bars, skip


# Samples a row's run screened at once by its largest value (see the module's docstring): shorter runs
# are skipped more often but screened at more cost each; 16, 32 and 64 took 1.3, 1.1 and 1.0 parts of
# the screen's time on seed 4's gradients, and 9, 13 and 19 % of runs were then tested sample by sample.
SCREENED_RUN = 32


# nogil: inference encodes two batches at once in threads; cache: compiled once per machine.
@numba.njit(nogil=True, cache=True)
def _list_peaks(values, bars, excluded, has_excluded, radius, flags, block_size):
    """The peaks in the flagged blocks of `block_size` samples of each row (flags (rows, blocks)), as flat
    indices; a coordinate's neighbours outside its block are compared too."""
    n_rows, n_codes = values.shape
    n_filters = bars.size
    found = np.empty(1024, dtype=np.int64)
    n_found = 0
    for row in range(n_rows):
        bar = bars[row % n_filters]
        for block in range(flags.shape[1]):
            if not flags[row, block]:
                continue
            for first in range(block * block_size, min((block + 1) * block_size, n_codes), SCREENED_RUN):
                last = min(first + SCREENED_RUN, (block + 1) * block_size, n_codes)
                # Only a run whose largest value clears the bar can hold a peak (neighbours beyond the
                # run are still compared by _peaks_of_row).
                if not _largest(values[row], first, last) > bar:
                    continue
                found, n_found = _peaks_of_row(values, bar, excluded, has_excluded, radius, row, first, last,
                                               found, n_found)
    return found[:n_found].copy()


# fastmath: the maximum is taken in SIMD lanes (exact in any order; the values are finite, as
# recordings are checked for NaN and inf when opened).
@numba.njit(nogil=True, cache=True, fastmath=True)
def _largest(row, first, last):
    """The largest of row[first:last] (last > first)."""
    largest = row[first]
    for t in range(first + 1, last):
        largest = max(largest, row[t])
    return largest


@numba.njit(nogil=True, cache=True)
def _peaks_of_row(values, bar, excluded, has_excluded, radius, row, first, last, found, n_found):
    """`_list_peaks`' peaks of one row among samples [first, last), added to found[:n_found] (grown when full)."""
    n_codes = values.shape[1]
    for t in range(first, last):
        value = values[row, t]
        if not value > bar or (has_excluded and excluded[row, t]):
            continue
        peak = True
        # Outwards from t, nearest first: on a spike's flank the next sample is already bigger.
        for distance in range(1, radius + 1):
            before, after = t - distance, t + distance
            if before >= 0 and values[row, before] > value and not (has_excluded and excluded[row, before]):
                peak = False
                break
            if after < n_codes and values[row, after] > value and not (has_excluded and excluded[row, after]):
                peak = False
                break
        if peak:
            if n_found == found.size:  # room for twice as many
                grown = np.empty(2 * found.size, dtype=np.int64)
                grown[:n_found] = found
                found = grown
            found[n_found] = row * n_codes + t
            n_found += 1
    return found, n_found


def shadows(gram: np.ndarray, filters: np.ndarray, times: np.ndarray, values: np.ndarray, lambdas: np.ndarray,
            radius: int) -> np.ndarray:
    """(n,) bool: which of the candidate codes (filters[i], times[i]), in time order, are shadows.

    Candidate i is a shadow when a bigger candidate j (value relative to its filter's λ; on a tie, the
    earlier in the list) within `radius` samples would leave it under its λ once explained: values[i] −
    G[filters[i], filters[j], times[j] − times[i] + n_taps − 1] · values[j] < λ[filters[i]]
    (WorkingSetEncoder._distinct says why). `gram` is the (K, K, 2·n_taps − 1) Gram tensor, `values`
    the candidates' correlations (float32)."""
    outdone = np.zeros(len(times), dtype=np.bool_)
    _mark_shadows(np.ascontiguousarray(gram, dtype=np.float32), np.asarray(filters, np.int64),
                  np.asarray(times, np.int64), np.asarray(values, np.float32), np.asarray(lambdas, np.float32),
                  int(radius), outdone)
    return outdone


@numba.njit(nogil=True, cache=True)
def _mark_shadows(gram, filters, times, values, lambdas, radius, outdone):
    n_taps = (gram.shape[2] + 1) // 2
    first = 0
    for row in range(times.size):
        while times[first] < times[row] - radius:
            first += 1
        source = filters[row]
        bar = lambdas[source]
        value = values[row]
        score = value / bar
        for column in range(first, times.size):
            if times[column] > times[row] + radius:
                break
            other = values[column] / lambdas[filters[column]]
            if not (other > score or (other == score and column < row)):
                continue
            shadow = gram[source, filters[column], times[column] - times[row] + n_taps - 1] * values[column]
            if value - shadow < bar:
                outdone[row] = True
                break


def local_maxima(codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, indices, (n, 3) values at i − 1, i, i + 1) of each positive value of `codes` (n_rows, n) that is
    at least every value of its row within `radius` (ties included; outside the row counts as 0), in row-major
    order: what maximum_filter1d over the whole array found, from one compiled pass that stops only at
    the non-zeros (a chunk's codes are 99.5 % zeros; the filter and its masks were 3 % of inference)."""
    values = np.ascontiguousarray(codes)
    rows, indices = _list_local_maxima(values, int(radius))
    padded_values = np.zeros((len(rows), 3), dtype=values.dtype)
    n = values.shape[1]
    for column, offset in enumerate((-1, 0, 1)):
        at = indices + offset
        inside = (at >= 0) & (at < n)
        padded_values[inside, column] = values[rows[inside], at[inside]]
    return rows, indices, padded_values


@numba.njit(nogil=True, cache=True)
def _list_local_maxima(values, radius):
    n_rows, n = values.shape
    rows = np.empty(256, dtype=np.int64)
    indices = np.empty(256, dtype=np.int64)
    found = 0
    for row in range(n_rows):
        for i in range(n):
            value = values[row, i]
            if not value > 0:
                continue
            peak = True
            for j in range(max(i - radius, 0), min(i + radius + 1, n)):
                if values[row, j] > value:
                    peak = False
                    break
            if peak:
                if found == rows.size:  # room for twice as many
                    rows = np.concatenate((rows, np.empty(rows.size, dtype=np.int64)))
                    indices = np.concatenate((indices, np.empty(indices.size, dtype=np.int64)))
                rows[found] = row
                indices[found] = i
                found += 1
    return rows[:found].copy(), indices[:found].copy()


# Where the working set's checks look again for peaks, in blocks of this many samples of a row (a chunk's
# filter): a block is looked at again when a value within it, or within the peak radius of it, moved.
CHANGED_BLOCK = 64


class ChangedBlocks:
    """Which blocks of a batch's (chunks, filters, codes) values may hold a peak that the last look did not
    see, or no longer hold one it saw: those within reach of a value that changed since, or of a coordinate
    that joined the excluded set. A look at these blocks alone, with the peaks the last look found elsewhere
    and left, finds what a look at the whole batch would find (WorkingSetEncoder's checks; tested)."""

    def __init__(self, shape: tuple[int, int, int], radius: int) -> None:
        n_chunks, n_filters, n_codes = shape
        self.shape, self.radius = shape, int(radius)
        self.flags = np.zeros((n_chunks * n_filters, -(-n_codes // CHANGED_BLOCK)), dtype=np.bool_)

    def values_moved(self, chunks: np.ndarray, filters: np.ndarray, times: np.ndarray, reach: int,
                     starts: np.ndarray, partner: np.ndarray) -> None:
        """Codes at (chunks, filters, times) changed, and with them the values of each partner filter of
        theirs (partner[starts[k]:starts[k + 1]] for filter k) within `reach` samples."""
        _flag_blocks(self.flags, self.shape[1], np.asarray(chunks, np.int64), np.asarray(filters, np.int64),
                     np.asarray(times, np.int64), reach + self.radius, starts, partner, False)

    def excluded(self, chunks: np.ndarray, filters: np.ndarray, times: np.ndarray) -> None:
        """Coordinates that joined the excluded set: the peaks of their own row within the radius may change."""
        none = np.zeros(1, dtype=np.int64)
        _flag_blocks(self.flags, self.shape[1], np.asarray(chunks, np.int64), np.asarray(filters, np.int64),
                     np.asarray(times, np.int64), self.radius, none, none, True)

    def holds(self, flat: np.ndarray) -> np.ndarray:
        """(n,) bool: whether each of these flat indices into the batch falls in a flagged block."""
        n_codes = self.shape[2]
        return self.flags[flat // n_codes, (flat % n_codes) // CHANGED_BLOCK]


def peak_indices_in(values: np.ndarray, thresholds: np.ndarray, radius: int, excluded: np.ndarray,
                    blocks: ChangedBlocks) -> np.ndarray:
    """`peak_indices` of the flagged `blocks` only (flat indices, increasing): a coordinate's neighbours
    outside its block are still compared."""
    rows, bars, skip = _as_rows(values, thresholds, excluded)
    return _list_peaks(rows, bars, skip, True, int(radius), blocks.flags, CHANGED_BLOCK)


@numba.njit(nogil=True, cache=True)
def _flag_blocks(flags, n_filters, chunks, filters, times, reach, starts, partner, own_row):
    n_blocks = flags.shape[1]
    for i in range(times.size):
        first = max(times[i] - reach, 0) // CHANGED_BLOCK
        last = min(max(times[i] + reach, 0) // CHANGED_BLOCK, n_blocks - 1)
        if own_row:
            row = chunks[i] * n_filters + filters[i]
            for block in range(first, last + 1):
                flags[row, block] = True
            continue
        for pair in range(starts[filters[i]], starts[filters[i] + 1]):
            row = chunks[i] * n_filters + partner[pair]
            for block in range(first, last + 1):
                flags[row, block] = True
