"""Every pair of items within a run: the index arithmetic that sparse Gram matrices, shadow
screening and overlap grouping all need, written once."""

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
