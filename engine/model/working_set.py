"""The encoder's FISTA, run only on the code coordinates that can be non-zero.

On a recording almost every code is zero: 0.5% of the demo's coordinates are
non-zero after the encoder's 100 FISTA steps. The dense encoder still updates
all of them at every step, with two convolutions over the whole chunk; on a
CPU that is the whole cost of sorting. This module solves the same problem,
0.5‖y − Hx‖² + Σ_k λ_k‖x_k‖₁ with x ≥ 0, with FISTA (same step 1/L, same
thresholds, same debiasing after), but only over a working set W of coordinates,
and to convergence rather than for T steps:

1. Screening. x_k(t) can leave zero only where its gradient Hᵀ(y − Hx) reaches
   λ_k. At x = 0 that gradient is the correlation Hᵀy, so W starts as the
   coordinates whose correlation exceeds `screen` × λ_k, is the largest of its
   filter's within a quarter filter length (a peak), and is not the shadow of
   a bigger peak of another filter (`_distinct`). A 50-σ spike lifts the
   correlation of every overlapping filter above λ: taking every coordinate
   above the bar put 18 % of all codes of a 32-channel recording in W; peaks
   alone, 19 k codes for 2 s (14 per spike), which made every solve run to
   its step limit; without shadows, 760, and the checks add what the lasso
   wants of the rest.
2. FISTA restricted to W. The gradient needs HᵀH only between coordinates of
   W, and two codes interact only when closer than one filter length, so it
   is a sparse matrix whose entries come from the filters' cross-correlations
   (the Gram tensor, computed once per dictionary). Codes that do not interact,
   even through others, form independent blocks (a spike, a few overlapping
   ones), and each block runs FISTA on its own (engine/model/block_fista.py):
   its momentum restarts when it points uphill, and it stops when none of its
   codes moves by CONVERGED_CHANGE (CHECK_CHANGE while W is still growing: see
   step 4). Converged codes sort better than T steps' worth: on the 5-minute
   tetrode simulation, 0.988 mean accuracy against 0.982.
3. Optimality check over the whole chunk: a coordinate outside W whose gradient
   exceeds λ_k violates the lasso's optimality conditions; the peaks among the
   violators that are not each other's shadows join W, and the codes of W
   near them are solved again with the others held fixed, the gradient
   updated by what changed; codes of W whose own conditions broke when their
   neighbours moved are solved again at the next check (`_unsettled`). When
   nothing is left to do, a coordinate outside W is zero in the solution, as
   in the dense encoder.
4. The solves before and between the checks only have to be close enough to
   show the next violators: they stop at CHECK_CHANGE, and once W stops
   growing all of it is solved once more, from there, to CONVERGED_CHANGE.

The result agrees with `CRsAE.encode` up to FISTA's not-yet-converged
transients (tested: same spikes, objective no worse).

Where spikes are dense in codes (many look-alike filters, long filters at a
high sampling rate) the working set's Gram matrix can cost more per step than
the dense encoder's convolutions; such a chunk goes to the dense encoder.
"""

from __future__ import annotations

import threading

import numpy as np
import scipy.sparse as sparse
import torch

from engine.model.block_fista import fista_by_block
from engine.model.crsae import CRsAE, _fast_fft_length, debias
from engine.model.gram_rows import GramRows
from engine.model.local_peaks import ChangedBlocks, peak_indices, peak_indices_in, peaks_above, shadows
from engine.model.pairs import pairs_in_runs
from engine.model.sparse_gram import coordinate_steps, gram_entries, sparse_gram

# Coordinates whose correlation with the signal exceeds this fraction of their
# threshold start in the working set. Lower admits more coordinates up front
# (slower FISTA steps) and leaves fewer to the optimality check's extra rounds.
DEFAULT_SCREEN = 0.8
# A coordinate outside W violates optimality when its gradient exceeds λ by this
# relative margin; W stops growing when none does (an ε-optimality stop: such a
# code would enter at about this fraction of λ, far under a spike's). On a probe
# the checks never ran out of violators at 1e-4: on the 32-channel recording (10 s,
# 28 filters) the violators' median excess fell 0.17, 0.09, 0.05 ... 0.015 × λ over
# the 8 checks and every batch ran all 8. Inference there: 17.2 s at 1e-4, 14.2 s at
# 0.02, 12.0 s at 0.05, 11.1 s at 0.1, accuracy 0.807 / 0.807 / 0.806 / 0.805. On the
# 60 s tetrode the whole sort scored 0.989 at 1e-4 and 0.02, 0.983 at 0.05 and 0.979 at
# 0.1: a small excess can be a look-alike filter that would take the spike over from
# the one the screening chose, so the margin stays small.
VIOLATION_MARGIN = 0.02
# A chunk whose first working set has more Gram entries than this many per code
# coordinate is encoded densely. Measured on the 2-core CPU: a sparse
# matrix-vector product costs about 1 ns per entry; a dense FISTA step about
# 55 ns per code on the demo (1 channel, 40 taps, direct convolutions) and
# 9 ns on the tetrode (4 channels, 120 taps, FFT route), whose first working
# set had 17 entries per code. Below 8 the working set wins on both.
MAX_ENTRIES_PER_CODE = 8.0
# Optimality checks before giving up on growing W (each one adds the peaks of what it
# finds). On the 32-channel recording above the violators fell 1611, 998, 584, ... 93
# in 8 rounds, the objective by 0.03 % in the last.
_MAX_CHECKS = 8
# A working-set FISTA solve has converged when no code moves by more than this in one step
# (codes are in noise-σ units; a spike's are 5-100).
CONVERGED_CHANGE = 1e-3
# ... and the solves while W still grows stop at this, the last one over the whole of W at CONVERGED_CHANGE.
# A probe's blocks are nearly degenerate (a spike coded at two adjacent samples, look-alike filters), so FISTA
# crawls over the last digits, and each of the 8 checks re-solved nearly all of W to them. Measured on 60 s of
# 32-channel recording seed 4 with its sort's dictionary, one thread: FISTA 2.62-2.86 -> 2.04-2.16 s of thread
# time, gradient updates 1.18-1.24 -> 1.06-1.12 s; 0.7 % of the events differ (time or filter), as the
# degenerate blocks end elsewhere; the whole sorts of recording seeds 0-7 scored the same to 3 decimals.
# (3e-2 and 1e-1: FISTA 1.93 and 1.61 s, 1.4 % and 4.5 % of the events differ.)
CHECK_CHANGE = 1e-2
# Pairs of (working-set code, moved code) compared at once when finding what a check re-solves (_near).
_PAIRS_PER_BLOCK = 2_000_000
# A code of W is unsettled when its gradient is off the lasso's optimality conditions by more
# than this fraction of its λ (WorkingSetEncoder._unsettled).
UNSETTLED_GAP = 0.01
# Where a rougher solution does (deciding which filters are neurons, training's codes), the
# checks may stop once one finds fewer new violators than this fraction of W. Measured on the
# 5-minute tetrode simulation: coding 20 s with the 32 filters of the k-means start, W grew
# 13 %, 4 %, 1.3 %, 0.5 %, 0.2 % ... and every batch ran all 8 checks (each a FISTA pass and a
# gradient over the whole chunk); stopping at 1 % took the sort from 137 s to 80 s, but when
# sorting itself stopped there too, accuracy fell from 0.984 to 0.978: the spikes stay exact.
ROUGH_SETTLED_FRACTION = 0.01


class WorkingSetEncoder:
    """Encodes batches of chunks on the CPU with the dictionary of `model`."""

    def __init__(self, model: CRsAE, lipschitz: float | None = None, screen: float = DEFAULT_SCREEN,
                 settled_fraction: float = 0.0, violation_margin: float = VIOLATION_MARGIN) -> None:
        """`settled_fraction` > 0: stop growing W once a check adds fewer than this fraction of it
        (ROUGH_SETTLED_FRACTION); 0, the default: until no coordinate violates optimality by more
        than `violation_margin` × λ (a small one, e.g. 1e-4, solves the lasso itself)."""
        if not 0.0 < screen <= 1.0:
            raise ValueError(f"screen must be in (0, 1], got {screen}")
        if violation_margin < 0:
            raise ValueError(f"violation_margin must be >= 0, got {violation_margin}")
        self.settled_fraction = float(settled_fraction)
        self.violation_margin = float(violation_margin)
        # A CPU copy of the dictionary: the sparse solve runs in numpy whatever the model's device.
        # The channel mask comes along so that its correlations run as the model's local convolutions.
        self.model = CRsAE(model.filters.detach().cpu(), model.lambdas.detach().cpu(), model.n_iterations,
                           model.n_debias_iterations, channel_mask=model.channel_mask.detach().cpu())
        # FISTA's step 1/L over the whole dictionary, needed only by the dense route and debiasing: found
        # when first asked (the power iteration was 4 % of a training step on a 32-channel probe,
        # where training's encoder, built anew each step, needs neither).
        self._step = None if lipschitz is None else np.float32(1.0 / lipschitz)
        self.lambdas = self.model.lambdas.numpy().astype(np.float32)
        self.screen = float(screen)
        self.gram = gram_tensor(self.model)
        # Filters on far-apart neighbourhoods of a probe never interact (their Gram is exactly 0):
        # the fraction that do scales the size of the sparse problem.
        interacting = np.any(self.gram != 0, axis=2)  # (K, K)
        self.interacting_fraction = float(np.mean(interacting)) if self.gram.size else 1.0
        self.partners = [np.flatnonzero(row) for row in interacting]  # the filters each one interacts with
        # ... and those its partners interact with: what re-solving near a new code may touch.
        two_steps = (interacting.astype(np.int32) @ interacting.astype(np.int32)) > 0
        self.nearby = two_steps  # (K, K) bool: the filters a moved code's re-solve reaches
        self.gram_rows = GramRows(self.gram, self.partners)  # HᵀHx's compiled loop reads these
        self.sparse_chunks = 0  # how many chunks each route encoded, for reports
        self.dense_chunks = 0
        self._counts_lock = threading.Lock()  # batches may be encoded in several threads at once

    @property
    def step(self) -> np.float32:
        if self._step is None:
            self._step = np.float32(1.0 / self.model.lipschitz())
        return self._step

    @property
    def n_taps(self) -> int:
        return self.model.n_taps

    def encode(self, signal: np.ndarray) -> np.ndarray:
        """(batch, n_channels, n) noise-normalised signals -> (batch, n_filters, n - n_taps + 1) float32 codes.

        The chunks of a batch are solved as one sparse problem (their
        coordinates laid end to end, more than a filter length apart, so they
        never interact): numpy's per-call overhead is paid once per batch.
        """
        return self.encode_with_correlation(signal)[0]

    def encode_with_correlation(self, signal: np.ndarray, together: Lockstep | None = None,
                                ) -> tuple[np.ndarray, np.ndarray]:
        """(codes, Hᵀy): `encode`'s codes and the signal's correlation with every filter (batch, n_filters,
        n - n_taps + 1) float32, which the encoder computes first; refinement reads the residual's from it.

        `together`: this signal is one part of a batch whose other parts other threads encode at the same
        time; the choices that look at the whole batch (the dense route, when the checks stop) are then
        made on the whole batch's counts (`Lockstep`), so that each part's codes are those the whole
        batch encoded at once would give. Chunks never interact, so nothing else depends on the batch."""
        total = together.total if together is not None else (lambda *counts: counts)
        signal_tensor = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))
        with torch.no_grad():
            correlation = self.model.analysis(signal_tensor).numpy()  # (batch, K, m) float32, as the encoder
        lambdas = self.lambdas[None, :, None]
        # W as its coordinates (chunk, filter, common-axis time) in `_coordinates` order, kept up to date as it
        # grows, and as a mask for the peak search to leave out; never listed again from the mask.
        members = self._distinct_coordinates(self._peak_coordinates(correlation, self.screen * lambdas), correlation)
        chunks, filters, times = members
        in_set = np.zeros(correlation.shape, dtype=bool)
        in_set[self._batch_index(members, correlation)] = True
        entries, size = total(gram_entries(times, self.n_taps), in_set.size)
        if entries * self.interacting_fraction > MAX_ENTRIES_PER_CODE * size:
            with self._counts_lock:
                self.dense_chunks += len(signal)
            with torch.no_grad():
                return self.model.encode(signal_tensor, lipschitz=1.0 / self.step).numpy(), correlation
        with self._counts_lock:
            self.sparse_chunks += len(signal)
        codes = np.zeros_like(correlation)
        gram = sparse_gram(self.gram, filters, times)
        index = self._batch_index(members, codes)
        codes[index] = self._fista(gram, correlation[index], self.lambdas[filters], codes[index], CHECK_CHANGE)
        gradient = correlation - self._gram_product(codes, members)  # the lasso's gradient, kept up to date as codes move
        set_size = total(len(times))[0]  # the whole batch's, with `together`
        bars = lambdas * (1.0 + self.violation_margin)
        radius = max(self.n_taps // 4, 1)
        # After the first check, peaks are looked for again only where the gradient moved or W grew since the
        # last look (local_peaks.ChangedBlocks): elsewhere the peaks are the last look's that stayed out of W
        # as shadows. The same violators as a look at the whole batch, for 8 % of inference on a 32-channel probe.
        changed: ChangedBlocks | None = None
        passed_over = np.zeros(0, dtype=np.int64)  # the last look's shadows, as flat indices into the batch
        for _ in range(_MAX_CHECKS):
            if changed is None:
                flat = peak_indices(gradient, bars, radius, in_set)
            else:
                flat = np.concatenate([peak_indices_in(gradient, bars, radius, in_set, changed),
                                       passed_over[~changed.holds(passed_over)]])
            candidates = self._sorted_coordinates(flat, gradient.shape)
            outdone = self._outdone(candidates, gradient)
            violators = tuple(axis[~outdone] for axis in candidates)
            # Codes of W whose neighbours moved since they were solved (see _unsettled).
            unsettled = self._unsettled(codes, gradient, members)
            n_violators, n_unsettled = total(len(violators[0]), int(unsettled.sum()))
            if n_violators == 0 and n_unsettled == 0:
                break
            if n_violators < self.settled_fraction * set_size:
                break
            joined = self._batch_index(violators, in_set)
            in_set[joined] = True
            set_size += n_violators
            moved = tuple(np.concatenate([new, old[unsettled]]) for new, old in zip(violators, members))
            members = self._merged(members, violators, codes.shape[1])
            changed = ChangedBlocks(gradient.shape, radius)
            changed.excluded(*joined)
            changed.values_moved(*self._solve_near(moved, members, codes, gradient), reach=self.n_taps - 1,
                                 starts=self.gram_rows.starts, partner=self.gram_rows.partner)
            left_chunks, left_filters, left_times = self._batch_index(
                tuple(axis[outdone] for axis in candidates), gradient)
            passed_over = (left_chunks * gradient.shape[1] + left_filters) * gradient.shape[2] + left_times
        if self.settled_fraction == 0:  # W has stopped growing: its codes to convergence (CHECK_CHANGE says why)
            chunks, filters, times = members
            index = self._batch_index(members, codes)
            codes[index] = self._fista(sparse_gram(self.gram, filters, times), correlation[index],
                                       self.lambdas[filters], codes[index])
        # The support, listed from W (every non-zero code is W's) in its order, `_coordinates`' order.
        positive = codes[self._batch_index(members, codes)] > 0
        if positive.any() and self.model.n_debias_iterations > 0:
            chunks, filters, times = (axis[positive] for axis in members)
            gram = sparse_gram(self.gram, filters, times)
            index = (chunks, filters, times - chunks * self._stride(codes))
            codes[index] = self._debias(gram, correlation[index], codes[index])
        return codes, correlation  # float32, as `correlation`

    def _peak_coordinates(self, values: np.ndarray, thresholds: np.ndarray,
                          excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`_peaks_above`'s peaks as coordinates (`_coordinates`' form and order), listed as they are found."""
        flat = peak_indices(values, thresholds, max(self.n_taps // 4, 1), excluded)
        return self._sorted_coordinates(flat, values.shape)

    def _distinct_coordinates(self, candidates: tuple[np.ndarray, np.ndarray, np.ndarray],
                              correlation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `candidates` (coordinates) that are not another candidate's shadow (see `_distinct`)."""
        outdone = self._outdone(candidates, correlation)
        return tuple(axis[~outdone] for axis in candidates)

    def _outdone(self, candidates: tuple[np.ndarray, np.ndarray, np.ndarray], values: np.ndarray) -> np.ndarray:
        """(n,) bool: which of the `candidates` (coordinates) are another candidate's shadow (see `_distinct`),
        given the `values` (correlation or gradient) at them."""
        chunks, filters, times = candidates
        if times.size < 2:
            return np.zeros(times.size, dtype=bool)
        radius = max(self.n_taps // 2, 1)
        return shadows(self.gram, filters, times, values[self._batch_index(candidates, values)], self.lambdas, radius)

    def _batch_index(self, coordinates: tuple[np.ndarray, np.ndarray, np.ndarray],
                     batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index into a (chunks, filters, codes) array of the coordinates (chunk, filter, common-axis time)."""
        chunks, filters, times = coordinates
        return chunks, filters, times - chunks * self._stride(batch)

    @staticmethod
    def _merged(members: tuple[np.ndarray, np.ndarray, np.ndarray], added: tuple[np.ndarray, np.ndarray, np.ndarray],
                n_filters: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """W with `added` (none of them already in it), in `_coordinates` order: by common-axis time, then filter."""
        merged = tuple(np.concatenate([old, new]) for old, new in zip(members, added))
        order = np.argsort(merged[2] * n_filters + merged[1], kind="stable")
        return tuple(axis[order] for axis in merged)

    def _peaks_above(self, values: np.ndarray, thresholds: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
        """(batch, K, m) bool: where `values` exceed their filter's `thresholds` and are the largest of
        their filter's within a quarter filter length (ties included), `excluded` coordinates (W's)
        neither counting nor competing (engine/model/local_peaks.py)."""
        return peaks_above(values, thresholds, max(self.n_taps // 4, 1), excluded)

    def _unsettled(self, codes: np.ndarray, gradient: np.ndarray,
                   members: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """(len(W),) bool for W's coordinates `members` (chunks, filters, common-axis times): whether each
        breaks the lasso's optimality conditions by more than UNSETTLED_GAP × λ, a non-zero code whose
        gradient is not λ, or a zero one whose gradient exceeds it.

        A check re-solves only the codes near what it adds; the codes just beyond keep their values
        though their neighbours moved. They are re-solved at the next check, so that W ends at the
        lasso's solution, not at a point that is only optimal outside W. (FISTA's stop leaves a gap of
        about its tolerance × the code's Gram row sum: at CONVERGED_CHANGE far below this bar; at
        CHECK_CHANGE, between the checks, it can reach it, and such a code is re-solved at the next check.)"""
        chunks, filters, times = members
        index = (chunks, filters, times - chunks * self._stride(codes))
        values, slopes, lambdas = codes[index], gradient[index], self.lambdas[filters]
        gap = UNSETTLED_GAP * lambdas
        return np.where(values > 0, np.abs(slopes - lambdas) > gap, slopes > lambdas + gap)

    def _distinct(self, candidates: np.ndarray, correlation: np.ndarray) -> np.ndarray:
        """The `candidates` that are not another candidate's shadow: one code per spike to start from, not
        one per filter that overlaps it.

        A spike of code x on filter j lifts the correlation of filter k at lag d by G[k, j, d]·x. A candidate
        (k, t) is a shadow when a bigger candidate (j, t'), relative to their thresholds, within half a filter
        length would leave it under λ_k once explained (its correlation less G·x_j, with x_j ≈ its
        correlation). Shadows that the lasso does want join W at the optimality checks. Measured on 10 s of a
        32-channel probe (28 filters): W started at 19 k codes for 2 s, 760 without shadows; inference took
        96 s without this, 31 s with it, at the same accuracy (0.831 before amplitude splits).
        """
        kept = np.zeros_like(candidates)
        kept[self._batch_index(self._distinct_coordinates(self._coordinates(candidates), correlation), candidates)] = True
        return kept

    def _stride(self, mask: np.ndarray) -> int:
        """Offset between chunks on the common time axis: a chunk plus a filter length of gap."""
        return mask.shape[2] + self.n_taps

    def _coordinates(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(chunk, filter, time on the common axis) of the set coordinates, in time order."""
        # The set coordinates are few: found in memory order, then sorted, rather than read
        # through a transposed (strided) view of the whole batch.
        return self._sorted_coordinates(np.flatnonzero(mask), mask.shape)

    def _sorted_coordinates(self, flat: np.ndarray, shape: tuple[int, int, int]
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(chunk, filter, common-axis time) of flat indices into a (chunks, filters, codes) batch, in time order."""
        n_chunks, n_filters, n_codes = shape
        chunks, within = np.divmod(flat, n_filters * n_codes)
        filters, times = np.divmod(within, n_codes)
        order = np.lexsort((filters, times, chunks))
        chunks, filters, times = chunks[order], filters[order], times[order]
        return chunks, filters, times + chunks * (n_codes + self.n_taps)

    def _fista(self, gram: sparse.csr_matrix, correlation: np.ndarray, lambdas: np.ndarray,
               start: np.ndarray, tolerance: float = CONVERGED_CHANGE) -> np.ndarray:
        """FISTA on the working set from `start`: the dense encoder's loop, restricted, run on until no
        code moves by `tolerance` in a step (at most _MAX_CHECKS × T steps); a rough encoder
        (settled_fraction > 0) takes the encoder's T steps.

        Each solve is final (later checks re-solve only near what they add), so for sorting it must
        be the lasso's solution, not T steps towards it: with T = 100 steps the demo's codes were
        7.8 % of the largest from the converged ones, where the dense encoder's were 3 %."""
        steps = coordinate_steps(gram)
        if self.settled_fraction > 0:  # rough: T steps of the whole set are enough there
            # The blocks' T steps without restarts are FISTA's over the whole set (tested). scipy's product
            # beat the sparse compiled rows here (10 s of the 32-channel probe: 2.5 s against 5.4 s); the
            # blocks' dense copies now beat scipy (30 s coded roughly: 2.63 s against 2.95 s, the same events).
            return fista_by_block(gram, correlation, lambdas * steps, steps, start, self.model.n_iterations,
                                  tolerance=0.0, restart=False)
        # To convergence, block by block: most blocks settle in a few steps, the slowest sets none's count.
        return fista_by_block(gram, correlation, lambdas * steps, steps, start, _MAX_CHECKS * self.model.n_iterations,
                              tolerance=tolerance, restart=True)

    def _debias(self, gram: sparse.csr_matrix, correlation: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The encoder's debiasing; every coordinate here is on the support, so no mask."""
        return debias(codes, correlation, lambda codes: gram @ codes, float(self.step), self.model.n_debias_iterations)

    def _solve_near(self, moved: tuple[np.ndarray, np.ndarray, np.ndarray],
                    members: tuple[np.ndarray, np.ndarray, np.ndarray], codes: np.ndarray,
                    gradient: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FISTA again on the working set's codes near the coordinates that `moved` (new violators,
        unsettled codes), updating `codes` in place, the others held where they are, and `gradient`
        by HᵀH times the change. Both are (chunks, filters, common-axis times); `members` is all of
        W, in `_coordinates` order. Returns the codes that changed, as (chunks, filters, times) indices
        into the batch.

        A check's violators are few (the tetrode's: 15 %, then 6 %, 2 % ... of W) and interact only
        with the codes within a filter length, so re-solving all of W for them, and taking the
        gradient over whole chunks again, cost most of a sort's time; the codes within two filter
        lengths of a violator, on the filters it interacts with and theirs, are re-solved, the rest keep their values,
        and their pull on the local codes is in `gradient`.
        """
        near = self._near(moved, members, reach=2 * (self.n_taps - 1))
        chunks, filters, times = (axis[near] for axis in members)
        index = (chunks, filters, times - chunks * self._stride(codes))
        gram = sparse_gram(self.gram, filters, times)
        before = codes[index]
        # This block's lasso with the rest fixed: Hᵀy less the fixed codes' pull, i.e. the gradient plus the block's own.
        local_correlation = (gradient[index] + gram @ before).astype(np.float32)
        codes[index] = self._fista(gram, local_correlation, self.lambdas[filters], before, CHECK_CHANGE)
        change = codes[index] - before
        moved = change != 0
        changed = tuple(axis[moved] for axis in index)
        self.gram_rows.subtract_from(gradient, *changed, change[moved])
        return changed

    def _near(self, moved: tuple[np.ndarray, np.ndarray, np.ndarray],
              members: tuple[np.ndarray, np.ndarray, np.ndarray], reach: int) -> np.ndarray:
        """(len(members),) bool: the members within `reach` samples of a moved coordinate of the same
        chunk on a nearby filter (`nearby`: on a probe, a violator reaches only the filters
        near its channels). Pairs are found by binary search over both lists in time order, so the
        cost follows the coordinates, not the batch's size."""
        moved_chunks, moved_filters, moved_times = moved
        chunks, filters, times = members
        near = np.zeros(times.size, dtype=bool)
        if moved_times.size == 0 or times.size == 0:
            return near
        # Common-axis chunks are a filter length apart: spread them by `reach` more, so that no pair spans two.
        spacing = 2 * reach + 1
        moved_key = moved_times + moved_chunks * spacing
        order = np.argsort(moved_key, kind="stable")
        moved_key, moved_filters = moved_key[order], moved_filters[order]
        key = times + chunks * spacing
        first = np.searchsorted(moved_key, key - reach, side="left")
        last = np.searchsorted(moved_key, key + reach, side="right")
        counts = last - first
        pairs_before = np.concatenate([[0], np.cumsum(counts)])
        block_starts = np.searchsorted(pairs_before, np.arange(0, pairs_before[-1], _PAIRS_PER_BLOCK), side="right") - 1
        for start, stop in zip(block_starts, [*block_starts[1:], times.size]):
            rows, columns = pairs_in_runs(first[start:stop], last[start:stop], offset=start)
            reaches = self.nearby[moved_filters[columns], filters[rows]]
            near[rows[reaches]] = True
        return near

    def _gram_product(self, codes: np.ndarray, members: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """HᵀHx over whole chunks (batch, K, m) of dense `codes`, whose non-zeros are all among the coordinates
        `members` (W): what the codes explain, seen through the filters.

        Hᵀ(y − Hx) = Hᵀy − HᵀHx is the lasso's gradient. HᵀHx is summed from the Gram tensor, one row of it
        per non-zero code, not by synthesising the chunks and correlating them again: the codes are
        sparse, so this costs (non-zeros × interacting filters × 2 filter lengths) instead of two
        convolutions over every channel and sample (on a 32-channel probe the convolutions were 40 % of
        the pruning pass), in one compiled loop (engine/model/gram_rows.py), which the checks also use
        to update the gradient in place as codes move (`_solve_near`).
        """
        # The non-zeros listed from W, not by a pass over the whole batch (3 % of inference on a 32-channel
        # probe), in np.nonzero's order (chunk, filter, time): the same sums, added in the same order.
        chunks, filters, times = self._batch_index(members, codes)
        values = codes[chunks, filters, times]
        nonzero = np.flatnonzero(values)
        order = nonzero[np.lexsort((times[nonzero], filters[nonzero], chunks[nonzero]))]
        return self.gram_rows.product(chunks[order], filters[order], times[order], values[order], codes.shape)


class Lockstep:
    """The parts of one batch, encoded each in a thread of its own at the same time, deciding what looks at the
    whole batch (the dense route, when to stop the checks) on the sums of their counts.

    Every part must be encoding at once (a thread each, not a pool smaller than the parts), and each
    calls `total` the same number of times, which the shared decisions guarantee."""

    def __init__(self, parts: int) -> None:
        self._barrier = threading.Barrier(parts)
        self._lock = threading.Lock()
        self._sums: list[int] | None = None

    def total(self, *counts: int) -> tuple[int, ...]:
        """The sums over the parts of each of `counts`, once every part has given its own."""
        with self._lock:
            self._sums = list(counts) if self._sums is None else [a + b for a, b in zip(self._sums, counts)]
        self._barrier.wait()  # every part has added its counts
        sums = tuple(self._sums)
        if self._barrier.wait() == 0:  # every part has read them: one clears them for the next call
            self._sums = None
        self._barrier.wait()
        return sums

    def abort(self) -> None:
        """Release the other parts (they raise threading.BrokenBarrierError) when one of them failed."""
        self._barrier.abort()


def gram_tensor(model: CRsAE) -> np.ndarray:
    """(n_filters, n_filters, 2·n_taps − 1) float32: G[k, j, d + n_taps − 1] = ⟨h_k at t, h_j at t + d⟩.

    The cross-correlations of every pair of filters, summed over the channels
    they share, computed channel by channel in the frequency domain: on a probe
    each channel carries a few of the filters, so the cost grows with the pairs
    that share a channel, not with filters² × channels × taps² as the model's
    HᵀH applied to one impulse per filter did (minutes at 384 channels). The
    values are that operator's (tested against it).
    """
    filters = model.filters.detach().cpu().numpy().astype(np.float64)
    n_filters, n_channels, n_taps = filters.shape
    n_fft = _fast_fft_length(2 * n_taps - 1)
    spectra = np.fft.rfft(filters, n_fft, axis=-1)  # (K, C, F)
    on_channel = np.any(filters != 0, axis=2)  # (K, C): the channels each filter lives on
    cross_spectra = np.zeros((n_filters, n_filters, spectra.shape[-1]), dtype=np.complex128)
    for channel in range(n_channels):
        members = np.flatnonzero(on_channel[:, channel])
        if members.size:
            spectrum = spectra[members, channel]  # (m, F)
            cross_spectra[np.ix_(members, members)] += spectrum[:, None, :] * spectrum.conj()[None, :, :]
    gram = np.empty((n_filters, n_filters, 2 * n_taps - 1), dtype=np.float32)
    for start in range(0, n_filters, 64):  # a block of rows at a time: the full inverse would be K² × n_fft
        lags = np.fft.irfft(cross_spectra[start : start + 64], n_fft, axis=-1)
        gram[start : start + 64] = np.concatenate([lags[..., n_fft - n_taps + 1 :], lags[..., :n_taps]], axis=-1)
    # The transform's rounding leaves ±1e-18 where two filters' taps do not meet at a lag, on one side of the
    # pair and not the other: below what float32 resolves next to the largest entry, they are zeros. Then
    # G[k, j, d] = G[j, k, −d] exactly, as HᵀH is symmetric: a working set's Gram matrix has the same
    # non-zeros in both directions.
    gram[np.abs(gram) <= np.finfo(np.float32).eps * float(np.abs(gram).max(initial=0.0))] = 0.0
    return 0.5 * (gram + gram.transpose(1, 0, 2)[:, :, ::-1])


def interacting_partners(gram: np.ndarray) -> list[np.ndarray]:
    """For each filter, the filters whose Gram rows with it are not all zero (those sharing a channel)."""
    return [np.flatnonzero(row) for row in np.any(gram != 0, axis=2)]
