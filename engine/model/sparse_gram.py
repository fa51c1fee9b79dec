"""HᵀH between a working set's codes, as a sparse matrix, and the FISTA steps it allows.

Two codes interact only when closer than one filter length, and only when their filters share
a channel: the matrix between a working set's codes (a few per spike) is sparse, and its
entries are read from the Gram tensor (the filters' cross-correlations, computed once per
dictionary, engine/model/working_set.gram_tensor). The working-set encoder builds one at its
first solve, at every optimality check and for debiasing. In numpy that took every pair within
a filter length listed out (two 64-bit index arrays), a three-axis gather from the tensor and a
pass to drop the pairs on far-apart channels: 7 % of inference on a 32-channel probe. Compiled,
it is one pass over each code's run of partners, writing the non-zero entries straight into
the matrix's arrays.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sparse


def sparse_gram(gram: np.ndarray, filters: np.ndarray, times: np.ndarray) -> sparse.csr_matrix:
    """HᵀH between the coordinates (filters[i], times[i]), as a sparse matrix in that order.

    Only pairs closer than one filter length whose Gram entry is not zero are stored (filters on
    far-apart channels do not interact). Rows are built in time order, so each coordinate's
    partners are one contiguous run found by binary search; the matrix is then permuted back to
    the callers' order.
    """
    n = len(times)
    n_taps = (gram.shape[2] + 1) // 2
    order = np.lexsort((filters, times))
    sorted_filters = np.ascontiguousarray(filters[order], dtype=np.int64)
    sorted_times = np.ascontiguousarray(times[order], dtype=np.int64)
    first, last = partner_runs(sorted_times, n_taps)
    most = int(np.sum(last - first))  # every pair within a filter length: room for all, zeros included
    # 32-bit indices where they fit: scipy's product is faster with them.
    index_type = np.int32 if most < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(n + 1, dtype=index_type)
    indices = np.empty(most, dtype=index_type)
    data = np.empty(most, dtype=np.float32)
    stored = _fill_rows(np.ascontiguousarray(gram, dtype=np.float32), sorted_filters, sorted_times,
                        first.astype(np.int64), last.astype(np.int64), indptr, indices, data)
    matrix = sparse.csr_matrix((data[:stored], indices[:stored], indptr), shape=(n, n))
    if np.all(order == np.arange(n)):
        return matrix
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return matrix[inverse][:, inverse].tocsr()


# nogil: inference encodes two batches at once in threads; cache: compiled once per machine.
@numba.njit(nogil=True, cache=True)
def _fill_rows(gram, filters, times, first, last, indptr, indices, data):
    """Row i of the matrix: the non-zero G[filters[i], filters[j], times[j] − times[i] + n_taps − 1] for j in
    [first[i], last[i]), in column order. Returns how many entries were written."""
    n_taps = (gram.shape[2] + 1) // 2
    stored = 0
    for row in range(times.size):
        source = filters[row]
        shift = n_taps - 1 - times[row]
        for column in range(first[row], last[row]):
            value = gram[source, filters[column], times[column] + shift]
            if value != 0.0:
                indices[stored] = column
                data[stored] = value
                stored += 1
        indptr[row + 1] = stored
    return stored


def gram_entries(sorted_times: np.ndarray, n_taps: int) -> int:
    """Pairs within a filter length among coordinates at these (sorted) times: what `sparse_gram` would
    hold before the pairs on far-apart channels are dropped."""
    first, last = partner_runs(sorted_times, n_taps)
    return int(np.sum(last - first))


def partner_runs(sorted_times: np.ndarray, n_taps: int) -> tuple[np.ndarray, np.ndarray]:
    """For each coordinate, [first, last): the coordinates closer than one filter length."""
    first = np.searchsorted(sorted_times, sorted_times - n_taps + 1, side="left")
    last = np.searchsorted(sorted_times, sorted_times + n_taps - 1, side="right")
    return first, last


def coordinate_steps(gram: sparse.csr_matrix) -> np.ndarray:
    """(n,) float32 FISTA step of each coordinate of a working set: 1 / the sum of |HᵀH| along its row.

    The dense encoder's step 1/L is set by the whole convolutional dictionary, where a code at every
    sample adds up coherently: L was 148 for the 32-channel probe's 27 filters. A working set holds
    a few codes per spike, and its Gram's rows sum to 6-12 there. Each coordinate's step is 1 / its
    row's absolute sum r_i: diag(r) − HᵀH is diagonally dominant, so HᵀH ⪯ diag(r), and FISTA with
    this diagonal metric is plain FISTA after the change of variables x = diag(r)^-½ z: the same lasso,
    the same fixed point, with steps up to r_i / L times longer (an isolated spike's code: step 1,
    solved in a step or two instead of hundreds).
    """
    row_sums = np.asarray(abs(gram).sum(axis=1), dtype=np.float64).ravel()
    return (1.0 / np.maximum(row_sums, 1e-12)).astype(np.float32)
