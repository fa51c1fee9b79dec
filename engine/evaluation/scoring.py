"""Accuracy against ground truth, with the field's definitions.

Spike-train scores follow SpikeInterface's `compare_sorter_to_ground_truth`
(delta_time, agreement, Hungarian matching, accuracy = tp / (tp + fn + fp)), so
a number we print can be put next to a number in a paper. One deliberate
difference: we count matches as a true one-to-one matching per unit pair (no
spike is matched twice), where SpikeInterface's counter can match a sorted spike
twice inside a burst shorter than the tolerance and then clips the count. On
spike trains with a refractory period longer than the tolerance the two agree.

Dictionary error is the shift-invariant distance used for convolutional
dictionary learning: sqrt(1 − ⟨h, ĥ⟩²) at the best integer lag, after both
shapes are scaled to unit norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine.model.similarity import normalised_cross_correlation


@dataclass
class GroundTruthComparison:
    """One sorting scored against ground truth; per-unit arrays follow `gt_unit_ids`."""

    gt_unit_ids: np.ndarray  # (n_gt_units,) int64
    sorted_unit_ids: np.ndarray  # (n_sorted_units,) int64
    match_counts: np.ndarray  # (n_gt_units, n_sorted_units) int64 spikes matched within tolerance
    agreement: np.ndarray  # (n_gt_units, n_sorted_units) float64 matches / (n_gt + n_sorted − matches)
    matched_unit: np.ndarray  # (n_gt_units,) int64 sorted unit id, −1 when none reaches match_score
    n_gt: np.ndarray  # (n_gt_units,) int64 spikes of each ground-truth unit
    n_sorted: np.ndarray  # (n_gt_units,) int64 spikes of the matched sorted unit (0 if none)
    tp: np.ndarray  # (n_gt_units,) int64
    fn: np.ndarray  # (n_gt_units,) int64
    fp: np.ndarray  # (n_gt_units,) int64
    accuracy: np.ndarray  # (n_gt_units,) float64 tp / (tp + fn + fp), 0 when unmatched
    precision: np.ndarray  # (n_gt_units,) float64 tp / (tp + fp)
    recall: np.ndarray  # (n_gt_units,) float64 tp / (tp + fn)
    tolerance_samples: int
    well_detected_score: float
    n_well_detected: int  # matched units whose agreement ≥ well_detected_score
    # The three counts below assume the ground truth is exhaustive (every real
    # neuron is in it), as in a simulation; SpikeInterface makes the same assumption.
    n_false_positive_units: int  # unmatched sorted units that resemble no ground-truth unit
    n_redundant: int  # unmatched sorted units that duplicate a ground-truth unit
    n_overmerged: int  # sorted units that agree with two or more ground-truth units

    @property
    def n_gt_units(self) -> int:
        return len(self.gt_unit_ids)

    @property
    def mean_accuracy(self) -> float:
        return float(self.accuracy.mean()) if self.n_gt_units else float("nan")

    def to_table(self) -> list[dict]:
        """One row per ground-truth unit, plain Python values (ready for JSON or a table view)."""
        return [
            {
                "gt_unit": int(self.gt_unit_ids[i]),
                "matched_unit": int(self.matched_unit[i]),
                "n_gt": int(self.n_gt[i]),
                "n_sorted": int(self.n_sorted[i]),
                "tp": int(self.tp[i]),
                "fn": int(self.fn[i]),
                "fp": int(self.fp[i]),
                "accuracy": float(self.accuracy[i]),
                "precision": float(self.precision[i]),
                "recall": float(self.recall[i]),
            }
            for i in range(self.n_gt_units)
        ]


def compare_to_ground_truth(
    gt_times: np.ndarray,
    gt_units: np.ndarray,
    sorted_times: np.ndarray,
    sorted_units: np.ndarray,
    sampling_rate: float,
    tolerance_ms: float = 0.4,
    match_score: float = 0.5,
    well_detected_score: float = 0.8,
    *,
    redundant_score: float = 0.2,
    overmerged_score: float = 0.2,
    chance_score: float = 0.1,
    gt_unit_ids: np.ndarray | None = None,
    sorted_unit_ids: np.ndarray | None = None,
) -> GroundTruthComparison:
    """Score a sorting against ground truth, spike times in samples.

    Units are the distinct labels present, unless `gt_unit_ids` / `sorted_unit_ids`
    are given (so that a unit without spikes still counts, as a miss or as nothing).
    The score thresholds are SpikeInterface's, with its defaults.
    """
    gt_times = np.asarray(gt_times, dtype=np.int64)
    sorted_times = np.asarray(sorted_times, dtype=np.int64)
    gt_ids, gt_index = _unit_index(np.asarray(gt_units), gt_unit_ids)
    sorted_ids, sorted_index = _unit_index(np.asarray(sorted_units), sorted_unit_ids)
    if len(gt_times) != len(gt_index) or len(sorted_times) != len(sorted_index):
        raise ValueError("each spike needs one time and one unit")
    # Same rounding as SpikeInterface, so the tolerance is the same number of samples.
    tolerance_samples = int(tolerance_ms / 1000 * sampling_rate)

    match_counts = _match_count_matrix(
        gt_times, gt_index, len(gt_ids), sorted_times, sorted_index, len(sorted_ids), tolerance_samples
    )
    gt_counts = np.bincount(gt_index, minlength=len(gt_ids)).astype(np.int64)  # (n_gt_units,)
    sorted_counts = np.bincount(sorted_index, minlength=len(sorted_ids)).astype(np.int64)  # (n_sorted_units,)
    union = gt_counts[:, None] + sorted_counts[None, :] - match_counts
    agreement = np.divide(match_counts, union, out=np.zeros(union.shape), where=union > 0)

    match_index = _hungarian_match(agreement, match_score)  # (n_gt_units,) column index or −1
    matched = match_index >= 0
    matched_rows, matched_cols = np.flatnonzero(matched), match_index[matched]
    matched_unit = np.full(len(gt_ids), -1, dtype=np.int64)
    matched_unit[matched_rows] = sorted_ids[matched_cols]
    tp = np.zeros(len(gt_ids), dtype=np.int64)
    tp[matched_rows] = match_counts[matched_rows, matched_cols]
    n_sorted = np.zeros(len(gt_ids), dtype=np.int64)
    n_sorted[matched_rows] = sorted_counts[matched_cols]
    fn = gt_counts - tp
    fp = n_sorted - tp
    scored = tp > 0  # SpikeInterface scores 0 for units it could not match at all
    accuracy = _ratio(tp, tp + fn + fp, scored)
    precision = _ratio(tp, tp + fp, scored)
    recall = _ratio(tp, tp + fn, scored)

    matched_agreement = agreement[matched_rows, matched_cols]
    unit_counts = _classify_sorted_units(
        agreement, match_index, chance_score, redundant_score, overmerged_score
    )
    return GroundTruthComparison(
        gt_unit_ids=gt_ids,
        sorted_unit_ids=sorted_ids,
        match_counts=match_counts,
        agreement=agreement,
        matched_unit=matched_unit,
        n_gt=gt_counts,
        n_sorted=n_sorted,
        tp=tp,
        fn=fn,
        fp=fp,
        accuracy=accuracy,
        precision=precision,
        recall=recall,
        tolerance_samples=tolerance_samples,
        well_detected_score=well_detected_score,
        n_well_detected=int(np.count_nonzero(matched_agreement >= well_detected_score)),
        **unit_counts,
    )


def _unit_index(labels: np.ndarray, unit_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unit ids, per-spike index into them)."""
    ids = np.unique(np.asarray(labels if unit_ids is None else unit_ids, dtype=np.int64))
    index = np.searchsorted(ids, labels)
    if np.any(index >= len(ids)) or np.any(ids[index] != labels):
        raise ValueError("spike labels contain units missing from the given unit ids")
    return ids, index


def _match_count_matrix(
    gt_times, gt_index, n_gt_units, sorted_times, sorted_index, n_sorted_units, tolerance
) -> np.ndarray:
    """(n_gt_units, n_sorted_units) spikes matched one-to-one within ±tolerance samples.

    Every (gt spike, sorted spike) pair within tolerance is a candidate. A
    candidate whose two spikes have no other candidate in the same unit pair
    is a match outright; that is nearly all of them, and needs no loop. The
    rest (bursts, duplicated detections) go through a greedy pass in time
    order, in which each ground-truth spike takes the earliest free sorted spike:
    for equal-width windows on a line that greedy matching is a maximum one.
    """
    gt_order = np.argsort(gt_times, kind="stable")
    sorted_order = np.argsort(sorted_times, kind="stable")
    gt_times, gt_index = gt_times[gt_order], gt_index[gt_order]
    sorted_times, sorted_index = sorted_times[sorted_order], sorted_index[sorted_order]

    window_start = np.searchsorted(sorted_times, gt_times - tolerance, side="left")  # (n_gt_spikes,)
    window_stop = np.searchsorted(sorted_times, gt_times + tolerance, side="right")
    window_size = window_stop - window_start
    # Candidates in (gt spike, sorted spike) order: (n_candidates,) indices into the time-sorted trains.
    gt_spike = np.repeat(np.arange(len(gt_times)), window_size)
    first_of_window = np.repeat(np.cumsum(window_size) - window_size, window_size)
    sorted_spike = np.repeat(window_start, window_size) + np.arange(len(gt_spike)) - first_of_window

    gt_unit = gt_index[gt_spike]
    sorted_unit = sorted_index[sorted_spike]
    pair = gt_unit * n_sorted_units + sorted_unit
    # A gt spike is "used" per sorted unit, a sorted spike per gt unit.
    gt_spike_key = gt_spike * n_sorted_units + sorted_unit
    sorted_spike_key = sorted_spike * n_gt_units + gt_unit
    alone = (_occurrences(gt_spike_key) == 1) & (_occurrences(sorted_spike_key) == 1)

    counts = np.bincount(pair[alone], minlength=n_gt_units * n_sorted_units).astype(np.int64)
    used_gt, used_sorted = set(), set()
    contested = ~alone
    contested_candidates = zip(
        pair[contested].tolist(), gt_spike_key[contested].tolist(), sorted_spike_key[contested].tolist()
    )
    for unit_pair, gt_key, sorted_key in contested_candidates:
        if gt_key in used_gt or sorted_key in used_sorted:
            continue
        used_gt.add(gt_key)
        used_sorted.add(sorted_key)
        counts[unit_pair] += 1
    return counts.reshape(n_gt_units, n_sorted_units)


def _occurrences(keys: np.ndarray) -> np.ndarray:
    """For each element, how many times its value occurs in `keys`."""
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)]


def _hungarian_match(agreement: np.ndarray, match_score: float) -> np.ndarray:
    """(n_rows,) column matched to each row one-to-one, −1 below match_score."""
    match = np.full(agreement.shape[0], -1, dtype=np.int64)
    if agreement.size == 0:
        return match
    # Zeroing the scores below threshold first, as SpikeInterface does, keeps
    # a weak pair from displacing nothing-at-all in the assignment.
    rows, cols = linear_sum_assignment(-np.where(agreement >= match_score, agreement, 0.0))
    keep = agreement[rows, cols] >= match_score
    match[rows[keep]] = cols[keep]
    return match


def _ratio(numerator: np.ndarray, denominator: np.ndarray, where: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=where & (denominator > 0))


def _classify_sorted_units(
    agreement: np.ndarray,
    match_index: np.ndarray,
    chance_score: float,
    redundant_score: float,
    overmerged_score: float,
) -> dict:
    """SpikeInterface's false-positive, redundant and over-merged unit counts."""
    n_gt_units, n_sorted_units = agreement.shape
    if n_gt_units == 0 or n_sorted_units == 0:
        return {"n_false_positive_units": n_sorted_units, "n_redundant": 0, "n_overmerged": 0}
    # Best match of each unit taken alone, ignoring the one-to-one constraint.
    best_sorted_for_gt = np.where(agreement.max(axis=1) >= chance_score, agreement.argmax(axis=1), -1)
    best_gt_for_sorted = np.where(agreement.max(axis=0) >= chance_score, agreement.argmax(axis=0), -1)
    unmatched = np.ones(n_sorted_units, dtype=bool)
    unmatched[match_index[match_index >= 0]] = False

    columns = np.arange(n_sorted_units)
    has_best = best_gt_for_sorted >= 0
    best_score = np.where(has_best, agreement[np.maximum(best_gt_for_sorted, 0), columns], 0.0)
    false_positive = unmatched & (~has_best | (best_score < redundant_score))
    is_best_of_its_gt = has_best & (best_sorted_for_gt[np.maximum(best_gt_for_sorted, 0)] == columns)
    redundant = unmatched & has_best & ~is_best_of_its_gt & (best_score >= redundant_score)
    overmerged = np.count_nonzero(agreement > overmerged_score, axis=0) > 1
    return {
        "n_false_positive_units": int(false_positive.sum()),
        "n_redundant": int(redundant.sum()),
        "n_overmerged": int(overmerged.sum()),
    }


@dataclass
class DictionaryErrorResult:
    """Learned filters against the true spike shapes; per-unit arrays follow the true units."""

    error_matrix: np.ndarray  # (n_true, n_learned) float64 in [0, 1], 0 = same shape up to a shift
    matched_filter: np.ndarray  # (n_true,) int64 learned filter index, −1 when there are fewer filters
    errors: np.ndarray  # (n_true,) float64 error to the matched filter, 1 when unmatched

    @property
    def mean_error(self) -> float:
        return float(self.errors.mean()) if len(self.errors) else float("nan")


def dictionary_error(true_waveforms: np.ndarray, learned_filters: np.ndarray) -> DictionaryErrorResult:
    """Shift-invariant distance between true shapes and learned filters, best one-to-one pairing.

    Both are (n, n_taps, n_channels); the tap counts may differ. The sign of a
    filter is not identifiable from the reconstruction alone, hence ⟨h, ĥ⟩².
    """
    correlation = normalised_cross_correlation(true_waveforms, learned_filters)  # (n_true, n_learned, n_lags)
    best_overlap = np.abs(correlation).max(axis=2) if correlation.shape[2] else np.zeros(correlation.shape[:2])
    error_matrix = np.sqrt(np.clip(1.0 - best_overlap**2, 0.0, None))

    matched_filter = np.full(error_matrix.shape[0], -1, dtype=np.int64)
    errors = np.ones(error_matrix.shape[0])
    if error_matrix.size:
        rows, cols = linear_sum_assignment(error_matrix)
        matched_filter[rows] = cols
        errors[rows] = error_matrix[rows, cols]
    return DictionaryErrorResult(error_matrix=error_matrix, matched_filter=matched_filter, errors=errors)


def format_report(
    comparison: GroundTruthComparison,
    dictionary_errors: DictionaryErrorResult | None = None,
    title: str | None = None,
) -> str:
    """Aligned text table, one row per ground-truth unit, then a summary line.

    `dictionary_errors` must list the true units in the order of `comparison.gt_unit_ids`.
    """
    if dictionary_errors is not None and len(dictionary_errors.errors) != comparison.n_gt_units:
        raise ValueError(
            f"dictionary errors cover {len(dictionary_errors.errors)} units, "
            f"the comparison {comparison.n_gt_units}"
        )
    header = ["unit", "matched", "n_gt", "n_sorted", "accuracy", "precision", "recall"]
    if dictionary_errors is not None:
        header.append("dict. error")
    rows = []
    for i in range(comparison.n_gt_units):
        matched = int(comparison.matched_unit[i])
        row = [
            str(comparison.gt_unit_ids[i]),
            str(matched) if matched >= 0 else "-",
            str(comparison.n_gt[i]),
            str(comparison.n_sorted[i]),
            f"{comparison.accuracy[i]:.3f}",
            f"{comparison.precision[i]:.3f}",
            f"{comparison.recall[i]:.3f}",
        ]
        if dictionary_errors is not None:
            row.append(f"{dictionary_errors.errors[i]:.3f}")
        rows.append(row)
    widths = [max(len(text) for text in column) for column in zip(header, *rows)]
    lines = [title] if title else []
    for row in [header, *rows]:
        lines.append("  ".join(text.rjust(width) for text, width in zip(row, widths)))
    summary = (
        f"mean accuracy {comparison.mean_accuracy:.3f}, well detected "
        f"{comparison.n_well_detected}/{comparison.n_gt_units} (agreement ≥ {comparison.well_detected_score:g})"
    )
    if dictionary_errors is not None:
        summary += f", mean dictionary error {dictionary_errors.mean_error:.3f}"
    lines.append(summary)
    return "\n".join(lines)
