"""The working set's FISTA, run block by block: one compiled loop per independent sub-problem.

A working set holds the codes of a whole batch of chunks, and two codes interact
only when their filters overlap in time and space. Its Gram matrix is therefore
block-diagonal up to a permutation: one block per spike or per group of
overlapping spikes. FISTA over the whole set runs every block for as many steps
as the slowest needs (median 290 steps, up to 760, on the 32-channel probe),
while an isolated spike's code is solved in two steps of the working set's
diagonal metric. Here each block (a connected component of the Gram's sparsity
graph) is solved on its own, with its own momentum, restart and stop: the same
lasso, as the blocks share no term, and the same FISTA step on each.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sparse

# A block of codes interacts densely: on the 32-channel probe a block held a median 69 codes with 52 Gram
# entries a row (75 % of its square). Its sparse rows cost a gathered load per entry (~1.3 ns); a dense
# copy's rows are contiguous and the CPU multiplies 8 at once, so even a block filling a sixteenth of
# its square (a 400-code block of overlapping spikes: 12 %) is faster dense.
DENSE_FILL = 1.0 / 16.0
# ... up to this many codes (a dense copy of 16 MB); a larger block stays on its sparse rows.
MAX_DENSE_CODES = 2048


def independent_blocks(gram: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): the coordinates grouped by block (connected component of `gram`'s non-zeros,
    an entry in either direction joining its row and column), block b being order[starts[b]:starts[b + 1]],
    its coordinates in increasing order.

    A compiled union-find over the entries: scipy's connected_components first built the matrix's
    transpose to treat it as undirected (5 % of inference on a 32-channel probe). Either direction
    must join: a block's dense copy places every entry of its rows by the block's own coordinates."""
    return _blocks_of(gram.indptr.astype(np.int64), gram.indices.astype(np.int64))


@numba.njit(nogil=True, cache=True)
def _root(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving: later look-ups take half the steps
        i = parent[i]
    return i


@numba.njit(nogil=True, cache=True)
def _blocks_of(indptr, indices):
    n = indptr.size - 1
    parent = np.arange(n)
    for i in range(n):
        for entry in range(indptr[i], indptr[i + 1]):
            a, b = _root(parent, i), _root(parent, indices[entry])
            if a != b:  # the smaller index stays the root: blocks are then numbered by their first coordinate
                parent[max(a, b)] = min(a, b)
    labels = np.empty(n, dtype=np.int64)
    label_of_root = np.full(n, -1, dtype=np.int64)
    n_blocks = 0
    for i in range(n):
        root = _root(parent, i)
        if label_of_root[root] < 0:
            label_of_root[root] = n_blocks
            n_blocks += 1
        labels[i] = label_of_root[root]
    # Counting sort by block: each block's coordinates in increasing order, as a stable sort gives them.
    starts = np.zeros(n_blocks + 1, dtype=np.int64)
    for i in range(n):
        starts[labels[i] + 1] += 1
    for block in range(n_blocks):
        starts[block + 1] += starts[block]
    filled = starts[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        order[filled[labels[i]]] = i
        filled[labels[i]] += 1
    return order, starts


def fista_by_block(gram: sparse.csr_matrix, correlation: np.ndarray, shrink: np.ndarray, steps: np.ndarray,
                   start: np.ndarray, n_iterations: int, tolerance: float, restart: bool,
                   dense_fill: float = DENSE_FILL) -> np.ndarray:
    """FISTA on 0.5 xᵀGx − cᵀx + Σ shrink/steps·x, x ≥ 0 (G = `gram`, c = `correlation`), from `start`,
    with one step per coordinate (`steps`, a diagonal metric; `shrink` = λ·step): each independent
    block runs until no code of it moves by `tolerance` in a step (0: exactly `n_iterations` steps),
    at most `n_iterations`; with `restart`, its momentum restarts when it points uphill.
    A block whose Gram entries fill at least `dense_fill` of its square runs on a dense copy of it
    (DENSE_FILL says why; > 1: never).
    Returns the codes (float32); what `engine.model.crsae.fista` returns for each block."""
    indptr, indices = gram.indptr.astype(np.int64), gram.indices.astype(np.int64)
    order, starts = _blocks_of(indptr, indices)  # independent_blocks, on the 64-bit copies made once
    codes = np.array(start, dtype=np.float32)
    _fista_blocks(indptr, indices, gram.data.astype(np.float32),
                  np.asarray(correlation, np.float32), np.asarray(shrink, np.float32), np.asarray(steps, np.float32),
                  codes, order, starts, int(n_iterations), float(tolerance), bool(restart), float(dense_fill))
    return codes


# nogil: inference encodes two batches at once in threads; cache: compiled once per machine.
@numba.njit(nogil=True, cache=True)
def _fista_blocks(indptr, indices, data, correlation, shrink, steps, codes, order, starts, n_iterations, tolerance,
                  restart, dense_fill):
    n = codes.size
    momentum_point = codes.copy()
    codes_next = np.empty(n, dtype=np.float32)
    local = np.empty(n, dtype=np.int64)  # a coordinate's place in its block's dense copy
    for block in range(starts.size - 1):
        members = order[starts[block] : starts[block + 1]]
        size = members.size
        entries = 0
        for i in members:
            entries += indptr[i + 1] - indptr[i]
        if size <= MAX_DENSE_CODES and entries >= dense_fill * size * size:
            _fista_dense_block(members, local, indptr, indices, data, correlation, shrink, steps, codes,
                               n_iterations, tolerance, restart)
            continue
        momentum = 1.0
        for _ in range(n_iterations):
            # The gradient step from the momentum point, thresholded: every partner of a member is a member.
            for i in members:
                explained = 0.0
                for entry in range(indptr[i], indptr[i + 1]):
                    explained += data[entry] * momentum_point[indices[entry]]
                value = momentum_point[i] + steps[i] * (correlation[i] - explained) - shrink[i]
                codes_next[i] = value if value > 0.0 else 0.0
            momentum, largest_change = _momentum_step(members, codes, codes_next, momentum_point, steps, momentum,
                                                      restart)
            if tolerance > 0.0 and largest_change < tolerance:
                break


@numba.njit(nogil=True, cache=True, fastmath=True)
def _fista_dense_block(members, local, indptr, indices, data, correlation, shrink, steps, codes, n_iterations,
                       tolerance, restart):
    """`_fista_blocks`' iterations for one block, on a dense copy of its Gram rows and contiguous copies of its
    codes (fastmath: the row products are summed in SIMD lanes, in another order than the sparse rows)."""
    size = members.size
    for position in range(size):
        local[members[position]] = position
    gram = np.zeros((size, size), dtype=np.float32)
    for position in range(size):
        i = members[position]
        for entry in range(indptr[i], indptr[i + 1]):
            gram[position, local[indices[entry]]] = data[entry]
    c = np.empty(size, dtype=np.float32)
    step = np.empty(size, dtype=np.float32)
    cut = np.empty(size, dtype=np.float32)
    x = np.empty(size, dtype=np.float32)
    for position in range(size):
        i = members[position]
        c[position], step[position], cut[position], x[position] = correlation[i], steps[i], shrink[i], codes[i]
    point = x.copy()
    x_next = np.empty(size, dtype=np.float32)
    everyone = np.arange(size)
    momentum = 1.0
    for _ in range(n_iterations):
        for a in range(size):
            explained = np.float32(0.0)
            for b in range(size):
                explained += gram[a, b] * point[b]
            value = point[a] + step[a] * (c[a] - explained) - cut[a]
            x_next[a] = value if value > 0.0 else 0.0
        momentum, largest_change = _momentum_step(everyone, x, x_next, point, step, momentum, restart)
        if tolerance > 0.0 and largest_change < tolerance:
            break
    for position in range(size):
        codes[members[position]] = x[position]


@numba.njit(nogil=True, cache=True)
def _momentum_step(members, codes, codes_next, momentum_point, steps, momentum, restart):
    """FISTA's move to `codes_next` for the coordinates `members`: the momentum restarts (with `restart`)
    when the step points uphill, the momentum point moves on, `codes` takes `codes_next`.
    Returns (the next momentum, the largest change of a code)."""
    if restart:
        uphill = 0.0  # ⟨momentum point − next, next − codes⟩ in the step's metric
        for i in members:
            uphill += (momentum_point[i] - codes_next[i]) / steps[i] * (codes_next[i] - codes[i])
        if uphill > 0.0:
            momentum = 1.0
    momentum_next = (1.0 + np.sqrt(1.0 + 4.0 * momentum * momentum)) / 2.0
    weight = (momentum - 1.0) / momentum_next
    largest_change = 0.0
    for i in members:
        change = codes_next[i] - codes[i]
        largest_change = max(largest_change, abs(change))
        momentum_point[i] = codes_next[i] + weight * change
        codes[i] = codes_next[i]
    return momentum_next, largest_change
