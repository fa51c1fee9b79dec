"""Every pair of items within a run, and lists of indices laid end to end: the index arithmetic that
sparse Gram matrices, shadow screening, overlap grouping and the compiled loops' partner lists need,
written once."""

from __future__ import annotations

import numpy as np


def pairs_in_runs(first: np.ndarray, last: np.ndarray, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns): item `offset + i` paired with every column in [first[i], last[i]), row by row.

    Built without a Python loop: the runs of times within a radius of each sorted time are
    contiguous (found by binary search), so the pairs are a repeat and a running offset.
    An empty or reversed run gives no pair.
    """
    counts = np.maximum(np.asarray(last) - np.asarray(first), 0)
    rows = np.repeat(np.arange(offset, offset + len(counts)), counts)
    columns = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts - first, counts)
    return rows, columns


def ragged(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(starts, flat): index lists laid end to end for a compiled loop, row i being
    flat[starts[i]:starts[i + 1]] (int64 both; starts has len(rows) + 1 entries)."""
    counts = np.array([len(row) for row in rows], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return starts, np.concatenate([*rows, np.zeros(0, np.int64)]).astype(np.int64)
