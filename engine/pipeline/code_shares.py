"""A spike the lasso split between look-alike filters, each share under the bar: one spike, not none.

The lasso codes a spike whose shape two filters nearly share (0.8 alike or more)
partly on each. When the spike is big, the bigger share passes the bar (λ on the
code's three samples around its maximum) and the split is mended afterwards
(coincidences.join_split_shares). When it is faint, both shares can fall under
the bar and the spike is lost.

Traced on SpikeInterface's tetrode (recording seed 0, 5 min): a 3-SNR neuron
(usual amplitude ~12 σ once refitted) and a 5-SNR one (~18 σ) have shapes 0.97
alike and filters 0.82 alike. Of the faint neuron's 1,838 spikes with no other
neuron's spike within 4 ms, 654 had no event at all: their code maxima were
~2.6 on one filter and ~3.0 on the other (medians), each under λ = 4.49, their
sum 5.2.

So, before the bar, each code maximum is pooled with the maxima of filters at
least SPLIT_SHARE_SIMILARITY alike within SAME_SPIKE_MS of it (each weighted by
that likeness, what its share projects onto the other filter), and the biggest
share of a group passes when the pool reaches its bar. The smaller shares do
not: they are the same spike. What passes is then refitted on the data and must
still explain its λ² of energy (explain_away), so noise that only pools up
goes there.

Measured (sorter seed 0 unless said; before -> after): SpikeInterface's tetrode
rec 0: 0.925 -> 0.949 (seed 1: 0.934 -> 0.959), the faint neuron 0.557 -> 0.763
(recall 0.62 -> 0.86, precision 0.85 -> 0.87); recs 1-4: 0.991 -> 0.991,
0.847 -> 0.847, 0.948 -> 0.948, 0.787 -> 0.786; the tetrode preset 0.988 ->
0.988; 32 channels, recording seeds 0 and 6: 0.897 -> 0.897, 0.979 -> 0.980.

Only the sort's spikes are read so; the training pool's events, which decide
how many neurons there are by counting them, are read as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.model.similarity import shift_invariant_similarity
from engine.pipeline.params import SAME_SPIKE_MS, SPLIT_SHARE_SIMILARITY


@dataclass(frozen=True)
class CodeShares:
    """What pooling a split spike's shares needs: which filters are look-alikes, and how close is one spike."""

    alike: np.ndarray  # (n_filters, n_filters) float64 likeness where ≥ the bar, else 0 (and 0 on the diagonal)
    window: int  # samples: shares this close in time (at their filters' peaks) are one spike's
    filter_peak_taps: np.ndarray  # (n_filters,) tap of each filter's peak: a maximum's time is its index + this

    @classmethod
    def of(cls, filters: np.ndarray, sampling_rate: float, filter_peak_taps: np.ndarray) -> "CodeShares":
        """filters: (n_filters, n_channels, n_taps), the model's."""
        likeness = shift_invariant_similarity(np.asarray(filters).transpose(0, 2, 1))
        np.fill_diagonal(likeness, 0.0)
        alike = np.where(likeness >= SPLIT_SHARE_SIMILARITY, likeness, 0.0)
        window = max(1, int(round(SAME_SPIKE_MS * sampling_rate / 1000.0)))
        return cls(alike, window, np.asarray(filter_peak_taps, dtype=np.int64))

    def passes(self, spike_filters: np.ndarray, indices: np.ndarray, sums: np.ndarray,
               bars: float | np.ndarray) -> np.ndarray:
        """(n,) bool: the code maxima that pass their bar alone, or as the biggest share of a split spike."""
        alone = sums >= bars
        if not self.alike.any():
            return alone
        biggest, pooled = pool_shares(indices + self.filter_peak_taps[spike_filters], spike_filters, sums,
                                      self.alike, self.window)
        return alone | (biggest & (pooled >= bars))


def pool_shares(times: np.ndarray, filters: np.ndarray, sums: np.ndarray, alike: np.ndarray,
                window: int) -> tuple[np.ndarray, np.ndarray]:
    """(biggest, pooled) per code maximum: whether no look-alike maximum within `window` samples is bigger,
    and its own sum plus theirs, each weighted by its likeness (`alike[f, g]`, 0 for filters not alike).

    One pass over pairs of maxima close in time (a chunk's maxima sorted by time, each paired with the
    next ones until they are farther than `window`): a handful of steps, never a pair of all maxima."""
    order = np.argsort(times, kind="stable")
    t, f, a = times[order], filters[order], sums[order].astype(np.float64)
    pooled = a.copy()
    biggest = np.ones(len(t), dtype=bool)
    for step in range(1, len(t)):
        first = np.flatnonzero(t[step:] - t[:-step] <= window)
        if first.size == 0:
            break
        second = first + step
        weight = alike[f[first], f[second]]
        pair = weight > 0
        first, second, weight = first[pair], second[pair], weight[pair]
        np.add.at(pooled, first, weight * a[second])
        np.add.at(pooled, second, weight * a[first])
        second_bigger = a[second] > a[first]
        biggest[first[second_bigger]] = False
        biggest[second[~second_bigger]] = False
    unsorted_biggest, unsorted_pooled = np.empty_like(biggest), np.empty_like(pooled)
    unsorted_biggest[order], unsorted_pooled[order] = biggest, pooled
    return unsorted_biggest, unsorted_pooled
