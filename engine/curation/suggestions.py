"""Merge suggestions: which pairs of units look like one neuron, how strongly, and why.

For every unit only a few partners are weighed: those whose main channels
lie within `radius_um` of its own, and among them the `n_candidates` whose
templates are most alike (shift-invariant cosine on the unit's own
channels). Each candidate pair then gets four pieces of evidence:

- template similarity (the backbone of the score);
- the cross-correlogram's refractory dip: one neuron split in two leaves
  its refractory period in the pair's cross-correlogram (few spikes of
  either within ~1.5 ms of the other's, against the correlogram's own
  flanks); two neurons firing independently leave no dip. This is
  SpikeInterface's `x_contaminations` / `similarity_correlograms` idea;
- amplitude continuity: where both units fire, their amplitudes agree;
  where one takes over from the other in time (a drift split), the
  amplitude where one ends matches the other's where it starts;
- code co-activation, for a CRsAE sort only: two filters that code one
  neuron both fire on the same events (within a quarter millisecond) far
  more often than chance, each explaining what the other left over.

Unit ids are never reused (engine.curation.model), so the evidence of a
pair never changes once computed: `update(record)` computes only the
pairs of the units an action added, and an undo finds everything cached.

    suggestions = MergeSuggestions(curation, sorting, duration_s)
    curation.on_change(suggestions.update)
    suggestions.ranked()          # best first
    suggestions.for_unit(12)      # the best partners of unit 12
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.pipeline.sorting import Sorting, template_mix

if TYPE_CHECKING:
    from engine.curation.model import ChangeRecord, Curation

Progress = Callable[[float], None]
ShouldStop = Callable[[], bool]
# (unit, its spike indices) -> (n_taps, n_channels) µV template, or (template, energy of its noise in µV²)
TemplateSource = Callable[[int, np.ndarray], "np.ndarray | tuple[np.ndarray, float]"]
MIN_RELIABILITY = 0.1  # a template more noise than this is not trusted further

PAIR_BATCH = 4096  # pairs whose local templates are held at once
MIN_EXPECTED_REFRACTORY = 3.0  # fewer expected refractory coincidences than this, and the correlogram says nothing
MIN_SPIKES_PER_AMPLITUDE_BIN = 3


class SuggestionsCancelled(Exception):
    """`should_stop()` turned true; the computation was abandoned."""


@dataclass(frozen=True)
class SuggestionSettings:
    n_candidates: int = 8  # partners weighed per unit, the most alike by template
    radius_um: float = 100.0  # units whose main channels are further apart are never paired
    n_local_channels: int = 8  # a template is compared on this many channels around its main one
    max_shift_ms: float = 0.3  # templates are aligned within ± this
    refractory_ms: float = 1.5  # a split neuron leaves its cross-correlogram empty below this
    coactivation_ms: float = 0.25  # two filters firing within this are coding one event
    flank_ms: tuple[float, float] = (3.0, 10.0)  # where the cross-correlogram's baseline is read
    n_amplitude_bins: int = 20  # time bins in which amplitudes are compared
    # Weights of the evidence on top of template similarity (each evidence lies in [-1, 1]).
    refractory_weight: float = 0.3
    amplitude_weight: float = 0.3
    coactivation_weight: float = 0.2

    def __post_init__(self) -> None:
        if self.n_candidates < 1 or self.n_local_channels < 1 or self.n_amplitude_bins < 1:
            raise ValueError("n_candidates, n_local_channels and n_amplitude_bins must be at least 1")
        if not 0 < self.coactivation_ms < self.refractory_ms < self.flank_ms[0] < self.flank_ms[1]:
            raise ValueError("need 0 < coactivation_ms < refractory_ms < flank_ms[0] < flank_ms[1]")


@dataclass(frozen=True)
class PairEvidence:
    """Why two units may be one neuron. Evidence values lie in [-1, 1]; 0 means "cannot tell"."""

    unit_a: int  # the smaller id
    unit_b: int
    template_similarity: float  # best cosine of the two templates over the allowed shifts
    refractory_observed: int  # spikes of one within [coactivation_ms, refractory_ms) of the other's
    refractory_expected: float  # the same, expected from the cross-correlogram's flanks
    refractory: float  # +1: a clean refractory dip (one neuron); -1: none (two independent neurons)
    amplitude: float  # +1: amplitudes continue; -1: they differ by 2 spreads or more
    amplitude_gap: float  # amplitude difference in units of the within-unit spread
    coactivation: float  # 0..1, CRsAE sorts only: excess fraction of events both filters coded
    score: float  # 0..1, higher = more likely one neuron
    reason: str  # for people

    @property
    def units(self) -> tuple[int, int]:
        return self.unit_a, self.unit_b

    def partner_of(self, unit: int) -> int:
        return self.unit_b if unit == self.unit_a else self.unit_a


@dataclass
class _UnitSummary:
    main_channel: int
    local_channels: np.ndarray  # (K,) int64 channels nearest the main one, main first
    template: np.ndarray  # (n_taps, n_channels) float32 µV
    norm: float  # of the whole template
    # Share of the template's energy that is signal, not noise left by averaging few
    # spikes; 1 for the sort's own (noiseless) templates.
    reliability: float
    n_spikes: int
    amplitude_counts: np.ndarray  # (n_amplitude_bins,) int64 spikes per time bin
    amplitude_means: np.ndarray  # (n_amplitude_bins,) float64 mean amplitude per time bin, nan if empty
    amplitude_spread: float  # pooled within-bin standard deviation of the amplitudes


class MergeSuggestions:
    """Ranked merge suggestions for the current units of a curation, kept current from change records."""

    def __init__(
        self,
        curation: Curation,
        sorting: Sorting,
        duration_s: float,
        settings: SuggestionSettings = SuggestionSettings(),
        template_source: TemplateSource | None = None,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> None:
        """`template_source(unit, spikes)`: the template of a unit (default: the spike-weighted
        mean of the sort's templates of its spikes, engine.curation.features.mean_template;
        pass mean waveforms read from the data to tell the halves of a manual split apart)."""
        if curation.n_spikes != sorting.n_spikes:
            raise ValueError(f"curation has {curation.n_spikes} spikes, sorting {sorting.n_spikes}")
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        self._curation = curation
        self._sorting = sorting
        self._duration_s = float(duration_s)
        self.settings = settings
        self._template_source = template_source
        self._is_crsae = sorting.filter_index is not None
        positions = np.asarray(sorting.channel_positions, dtype=np.float64)
        self._channel_distances = np.linalg.norm(positions[:, None] - positions[None], axis=2)  # (C, C) µm
        n_local = min(settings.n_local_channels, sorting.n_channels)
        self._nearest_channels = np.argsort(self._channel_distances, axis=1, kind="stable")[:, :n_local]
        rate = sorting.sampling_rate
        self._max_shift = int(round(settings.max_shift_ms * rate / 1000))
        self._bin_samples = settings.coactivation_ms * rate / 1000  # lag histograms count in these bins
        self._max_lag = int(settings.flank_ms[1] * rate / 1000)
        self._units: dict[int, _UnitSummary] = {}  # every unit ever summarised, alive or not
        self._pairs: dict[tuple[int, int], PairEvidence] = {}  # every pair ever weighed
        self._similarities: dict[tuple[int, int], float] = {}
        self._pair_index: dict[int, set[tuple[int, int]]] = {}  # unit -> the weighed pairs it is in
        self._current: set[int] = set()
        self._add_units([int(u) for u in curation.unit_ids], progress, should_stop)

    # ---- queries ----------------------------------------------------------------------------
    def ranked(self, rejected: Iterable[tuple[int, int]] = ()) -> list[PairEvidence]:
        """Every pair of current units that was weighed, best first, without the rejected ones."""
        skip = {tuple(sorted(map(int, pair))) for pair in rejected}
        alive = [
            evidence
            for units, evidence in self._pairs.items()
            if units[0] in self._current and units[1] in self._current and units not in skip
        ]
        return sorted(alive, key=lambda e: (-e.score, e.unit_a, e.unit_b))

    def for_unit(self, unit: int, rejected: Iterable[tuple[int, int]] = ()) -> list[PairEvidence]:
        """The pairs of `unit` with current units, best first, without the rejected ones."""
        unit = int(unit)
        skip = {tuple(sorted(map(int, pair))) for pair in rejected}
        pairs = [
            self._pairs[key]
            for key in self._pairs_of(unit)
            if key not in skip and key[0] in self._current and key[1] in self._current
        ]
        return sorted(pairs, key=lambda e: (-e.score, e.partner_of(unit)))

    def evidence(self, unit_a: int, unit_b: int) -> PairEvidence | None:
        return self._pairs.get(tuple(sorted((int(unit_a), int(unit_b)))))

    # ---- keeping current ----------------------------------------------------------------------
    def update(self, record: ChangeRecord) -> None:
        """Follow one action (or its undo): forget deleted units, weigh the pairs of added ones."""
        self._current.difference_update(record.deleted)
        self._add_units([int(u) for u in record.added], None, None)

    def follow(self, curation: Curation) -> None:
        """Continue on `curation`, a curation of the same spikes whose units may have moved on.

        For suggestions computed off a copy in a worker while the person
        kept curating: the units the copy had and `curation` no longer has
        are dropped, those it has now are weighed.
        """
        if curation.n_spikes != self._curation.n_spikes:
            raise ValueError(f"curation has {curation.n_spikes} spikes, these suggestions {self._curation.n_spikes}")
        self._curation = curation
        now = set(map(int, curation.unit_ids))
        self._current &= now
        self._add_units(sorted(now - self._current), None, None)

    # ---- internals --------------------------------------------------------------------------------
    def _pairs_of(self, unit: int) -> list[tuple[int, int]]:
        return list(self._pair_index.get(unit, ()))

    def _add_units(self, units: list[int], progress: Progress | None, should_stop: ShouldStop | None) -> None:
        new = [u for u in units if u not in self._units]
        for done, unit in enumerate(new):
            if should_stop is not None and should_stop():
                raise SuggestionsCancelled()
            self._units[unit] = self._summarise(unit)
            if progress is not None and done % 50 == 0:
                progress(0.3 * done / max(len(new), 1))
        self._current.update(units)
        # Revived units (an undo) found their partners when first added; only new ones need a search.
        candidate_pairs = self._candidate_pairs(new, should_stop)
        wanted = [pair for pair in candidate_pairs if pair not in self._pairs]
        if progress is not None:
            progress(0.6)
        for evidence in self._weigh(wanted, should_stop):
            self._pairs[evidence.units] = evidence
        for pair in candidate_pairs:
            for unit in pair:
                self._pair_index.setdefault(unit, set()).add(pair)
        if progress is not None:
            progress(1.0)

    def _summarise(self, unit: int) -> _UnitSummary:
        sorting = self._sorting
        spikes = self._curation.spikes_of(unit)
        if self._template_source is not None:
            made = self._template_source(unit, spikes)
            template, noise_energy = made if isinstance(made, tuple) else (made, 0.0)
            template = np.asarray(template, dtype=np.float32)
        else:
            # The spike-weighted mean of the sort's templates of its spikes, over the few templates present.
            counts = np.bincount(sorting.spike_units[spikes], minlength=sorting.n_units)
            present = np.flatnonzero(counts)
            if len(present) == 1:
                template = sorting.templates[present[0]]
            else:
                weights = counts[present] / counts.sum()
                template = template_mix(weights, sorting.templates[present])
            noise_energy = 0.0
        main = int(np.abs(template).max(axis=0).argmax()) if template.size else 0
        counts, means, spread = self._amplitude_profile(spikes)
        return _UnitSummary(
            main_channel=main,
            local_channels=self._nearest_channels[main],
            template=template,
            norm=float(np.linalg.norm(template)),
            reliability=_reliability(template, noise_energy),
            n_spikes=len(spikes),
            amplitude_counts=counts,
            amplitude_means=means,
            amplitude_spread=spread,
        )

    def _amplitude_profile(self, spikes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        n_bins = self.settings.n_amplitude_bins
        times = self._sorting.spike_times[spikes]
        amplitudes = np.abs(self._sorting.amplitudes[spikes].astype(np.float64))
        bins = np.clip((times / self._sorting.sampling_rate / self._duration_s * n_bins).astype(np.int64), 0, n_bins - 1)
        counts = np.bincount(bins, minlength=n_bins)
        sums = np.bincount(bins, weights=amplitudes, minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts
        deviations = amplitudes - np.nan_to_num(means)[bins]
        dof = len(spikes) - np.count_nonzero(counts)
        spread = float(np.sqrt(np.sum(deviations**2) / dof)) if dof > 0 else np.nan
        return counts, means, spread

    def _candidate_pairs(self, new_units: list[int], should_stop: ShouldStop | None) -> list[tuple[int, int]]:
        """Unordered pairs (smaller id first): each new unit with its most alike neighbours."""
        if not new_units:
            return []
        current = np.array(sorted(self._current), dtype=np.int64)
        mains = np.array([self._units[u].main_channel for u in current])
        pairs_a, pairs_b = [], []
        for unit in new_units:
            near = self._channel_distances[self._units[unit].main_channel, mains] <= self.settings.radius_um
            partners = current[near & (current != unit)]
            pairs_a.append(np.full(len(partners), unit))
            pairs_b.append(partners)
        first = np.concatenate(pairs_a) if pairs_a else np.zeros(0, np.int64)
        second = np.concatenate(pairs_b) if pairs_b else np.zeros(0, np.int64)
        similarity = self._template_similarities(first, second, should_stop)
        chosen = set()
        k = self.settings.n_candidates
        # Each new unit keeps its k most alike; a pair of two new units is seen from both sides.
        order = np.lexsort((-similarity, first))
        first, second, similarity = first[order], second[order], similarity[order]
        starts = np.flatnonzero(np.r_[True, first[1:] != first[:-1]]) if len(first) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(first)]
        for start, end in zip(starts, ends):
            stop = min(start + k, end)
            for a, b, value in zip(first[start:stop], second[start:stop], similarity[start:stop]):
                pair = (int(min(a, b)), int(max(a, b)))
                chosen.add(pair)
                self._similarities[pair] = float(value)
        return sorted(chosen)

    def _template_similarities(self, first: np.ndarray, second: np.ndarray, should_stop: ShouldStop | None) -> np.ndarray:
        """(n_pairs,) best cosine over shifts of each pair's templates, on the first unit's channels."""
        result = np.zeros(len(first), dtype=np.float64)
        if len(first) == 0:
            return result
        taps = next(iter(self._units.values())).template.shape[0]
        for start in range(0, len(first), PAIR_BATCH):
            if should_stop is not None and should_stop():
                raise SuggestionsCancelled()
            batch_a, batch_b = first[start : start + PAIR_BATCH], second[start : start + PAIR_BATCH]
            channels = np.stack([self._units[u].local_channels for u in batch_a])  # (P, K)
            local_a = np.stack([self._units[u].template[:, ch] for u, ch in zip(batch_a, channels)])  # (P, T, K)
            local_b = np.stack([self._units[u].template[:, ch] for u, ch in zip(batch_b, channels)])
            norms = np.array([self._units[a].norm * self._units[b].norm for a, b in zip(batch_a, batch_b)])
            # Averaging noise shrinks the cosine of two noisy estimates of one shape; undo that
            # shrinkage (Spearman's correction for attenuation), so that the halves of a small
            # unit look as alike as those of a large one.
            norms *= np.sqrt([self._units[a].reliability * self._units[b].reliability for a, b in zip(batch_a, batch_b)])
            best = np.full(len(batch_a), -np.inf)
            for shift in range(-self._max_shift, self._max_shift + 1):
                lo, hi = max(shift, 0), taps + min(shift, 0)
                dots = np.einsum("ptk,ptk->p", local_a[:, lo - shift : hi - shift], local_b[:, lo:hi])
                np.maximum(best, dots, out=best)
            with np.errstate(invalid="ignore", divide="ignore"):
                result[start : start + PAIR_BATCH] = np.minimum(np.where(norms > 0, best / norms, 0.0), 1.0)
        return result

    def _weigh(self, pairs: list[tuple[int, int]], should_stop: ShouldStop | None) -> list[PairEvidence]:
        if not pairs:
            return []
        pair_units = np.array(pairs, dtype=np.int64)  # (P, 2)
        histograms = self._lag_histograms(pair_units, should_stop)  # (P, n_bins) counts of |lag|
        settings = self.settings
        refractory_bins = int(round(settings.refractory_ms / settings.coactivation_ms))
        flank_first = int(round(settings.flank_ms[0] / settings.coactivation_ms))
        coincident = histograms[:, 0]
        refractory = histograms[:, 1:refractory_bins].sum(axis=1)
        flank_per_bin = histograms[:, flank_first:].mean(axis=1)
        result = []
        for index, (a, b) in enumerate(pairs):
            result.append(
                self._evidence(a, b, int(coincident[index]), int(refractory[index]),
                               float(flank_per_bin[index]) * (refractory_bins - 1), float(flank_per_bin[index]))
            )
        return result

    def _lag_histograms(self, pair_units: np.ndarray, should_stop: ShouldStop | None) -> np.ndarray:
        """(P, n_bins) int64: spike pairs of each unit pair, by |lag| in bins of coactivation_ms, up to flank_ms[1]."""
        n_bins = int(np.floor(self._max_lag / self._bin_samples)) + 1
        involved = np.unique(pair_units)
        spikes = self._curation.spikes_of(involved.tolist())  # ascending, so in time order
        times = self._sorting.spike_times[spikes]  # (n,) samples, ascending
        rows = np.searchsorted(involved, self._curation.spike_clusters[spikes])  # (n,) row of each spike's unit
        n_rows = len(involved)
        rows_a, rows_b = np.searchsorted(involved, pair_units[:, 0]), np.searchsorted(involved, pair_units[:, 1])
        # (n_rows * n_rows,) pair index of each (row, row), -1 for pairs not asked for: one
        # lookup per spike pair. Rows are the involved units only, so this stays small.
        pair_of_rows = np.full(n_rows * n_rows, -1, dtype=np.int64)
        pair_of_rows[rows_a * n_rows + rows_b] = np.arange(len(pair_units))
        pair_of_rows[rows_b * n_rows + rows_a] = np.arange(len(pair_units))
        counts = np.zeros(len(pair_units) * n_bins, dtype=np.int64)
        first = np.arange(len(times) - 1)
        shift = 1
        # Pair each spike with the one `shift` places later while any pair is within the window:
        # the work is the number of spike pairs within flank_ms[1], not n².
        while first.size:
            if should_stop is not None and should_stop():
                raise SuggestionsCancelled()
            first = first[first + shift < len(times)]
            lags = times[first + shift] - times[first]
            inside = lags <= self._max_lag
            first, lags = first[inside], lags[inside]
            pairs = pair_of_rows[rows[first] * n_rows + rows[first + shift]]
            known = pairs >= 0
            lag_bins = np.minimum((lags[known] / self._bin_samples).astype(np.int64), n_bins - 1)
            counts += np.bincount(pairs[known] * n_bins + lag_bins, minlength=counts.size)
            shift += 1
        return counts.reshape(len(pair_units), n_bins)

    def _evidence(self, a: int, b: int, coincident: int, observed: int, expected: float, flank_per_bin: float) -> PairEvidence:
        settings = self.settings
        similarity = self._similarities.get((a, b), 0.0)
        unit_a, unit_b = self._units[a], self._units[b]
        noisy = min(unit_a.reliability, unit_b.reliability) < 0.9
        reasons = [f"templates {similarity:.2f} alike" + (" (corrected for their noise)" if noisy else "")]

        refractory = 0.0
        if expected >= MIN_EXPECTED_REFRACTORY:
            ratio = observed / expected
            confidence = min(1.0, expected / (4 * MIN_EXPECTED_REFRACTORY))
            # A split neuron keeps its refractory period: a third of the flanks' rate
            # already says "two neurons" (+1 at none, 0 at a third, -1 from two thirds on;
            # with slope 2 instead, two crowded 10-SNR neurons at 12 vs 17 expected
            # outranked true halves on SpikeInterface's 30-unit recording).
            refractory = float(np.clip(1 - 3 * ratio, -1, 1)) * confidence
            if ratio < 1 / 3:
                reasons.append(f"refractory dip in their correlogram ({observed} vs {expected:.0f} expected)")
            else:
                reasons.append(f"no refractory dip ({observed} within {settings.refractory_ms:g} ms, {expected:.0f} expected)")

        gap, where = _amplitude_gap(unit_a, unit_b)
        amplitude = 0.0 if np.isnan(gap) else float(np.clip(1 - gap, -1, 1))
        if not np.isnan(gap):
            verb = "match" if gap < 1 else "differ"
            reasons.append(f"amplitudes {verb} {where} ({gap:.1f} spreads apart)")

        coactivation = 0.0
        if self._is_crsae:
            smaller = max(min(unit_a.n_spikes, unit_b.n_spikes), 1)
            coactivation = float(np.clip(5 * (coincident - flank_per_bin) / smaller, 0, 1))
            if coactivation > 0.2:
                reasons.append(f"their codes co-fire on {coincident} events")

        evidence = (
            settings.refractory_weight * refractory
            + settings.amplitude_weight * amplitude
            + settings.coactivation_weight * coactivation
        )
        top = 1 + settings.refractory_weight + settings.amplitude_weight + settings.coactivation_weight
        score = max(similarity, 0.0) * (1 + evidence) / top
        return PairEvidence(
            unit_a=a, unit_b=b, template_similarity=similarity,
            refractory_observed=observed, refractory_expected=expected, refractory=refractory,
            amplitude=amplitude, amplitude_gap=gap, coactivation=coactivation,
            score=float(score), reason="; ".join(reasons),
        )


def data_template_source(recording, sorting: Sorting, max_spikes: int = 300, max_channels: int = 32,
                         seed: int = 0) -> TemplateSource:
    """Templates as mean waveforms read from `recording`, up to `max_spikes` spikes a unit.

    Unlike the sort's templates, these tell the two halves of a manual split
    apart: each half's mean is its own. On probes with more than
    `max_channels` channels only the channels nearest the unit's main one (by
    the sort's templates) are read; the rest of the template stays zero.
    (300 spikes: with 100, the halves of low-SNR units were measured only
    0.4 alike on SpikeInterface's generated recordings, and lost to neighbours.)
    """
    from engine.curation.features import read_snippets, snippet_window

    before, after = snippet_window(sorting.sampling_rate)
    positions = np.asarray(sorting.channel_positions, dtype=np.float64)
    main_channels = sorting.main_channels()

    def template(unit: int, spikes: np.ndarray) -> np.ndarray:
        if len(spikes) > max_spikes:
            chosen = np.random.default_rng(seed + unit).choice(len(spikes), max_spikes, replace=False)
            spikes = spikes[np.sort(chosen)]
        channels = np.arange(recording.n_channels)
        if recording.n_channels > max_channels and len(spikes):
            main = main_channels[np.bincount(sorting.spike_units[spikes]).argmax()]
            distances = np.linalg.norm(positions - positions[main], axis=1)
            channels = np.sort(np.argsort(distances, kind="stable")[:max_channels])
        result = np.zeros((before + after, recording.n_channels), np.float32)
        noise_energy = 0.0
        if len(spikes):
            snippets = read_snippets(recording, sorting.spike_times[spikes], channels, before, after)
            result[:, channels] = snippets.mean(axis=0)
            if len(spikes) > 1:
                # What averaging n spikes leaves of their spread, summed over the template.
                noise_energy = float(snippets.var(axis=0, ddof=1).sum() / len(spikes))
        return result, noise_energy

    return template


def _reliability(template: np.ndarray, noise_energy: float) -> float:
    energy = float(np.sum(template.astype(np.float64) ** 2))
    if energy <= 0:
        return 1.0
    return float(np.clip((energy - noise_energy) / energy, MIN_RELIABILITY, 1.0))


def _amplitude_gap(a: _UnitSummary, b: _UnitSummary) -> tuple[float, str]:
    """Amplitude difference in within-unit spreads where both fire, else across the hand-over; and which."""
    variances = np.array([a.amplitude_spread**2, b.amplitude_spread**2], dtype=float)
    variances = variances[np.isfinite(variances)]
    spread = np.sqrt(variances.mean()) if variances.size else np.nan
    if not np.isfinite(spread) or spread <= 0:
        return np.nan, ""
    present_a = a.amplitude_counts >= MIN_SPIKES_PER_AMPLITUDE_BIN
    present_b = b.amplitude_counts >= MIN_SPIKES_PER_AMPLITUDE_BIN
    shared = present_a & present_b
    if shared.any():
        # A signed mean, each bin weighted by how precisely it knows the difference: noise
        # cancels, while two neurons of different sizes differ the same way in every bin.
        weights = 1 / (1 / a.amplitude_counts[shared] + 1 / b.amplitude_counts[shared])
        differences = a.amplitude_means[shared] - b.amplitude_means[shared]
        gap = abs(np.sum(weights * differences) / np.sum(weights))
        return float(gap / spread), "where both fire"
    bins_a, bins_b = np.flatnonzero(present_a), np.flatnonzero(present_b)
    if not len(bins_a) or not len(bins_b):
        return np.nan, ""
    # The closest bins in time of the two: where one unit hands over to the other.
    distances = np.abs(bins_a[:, None] - bins_b[None, :])
    i, j = np.unravel_index(distances.argmin(), distances.shape)
    gap = abs(a.amplitude_means[bins_a[i]] - b.amplitude_means[bins_b[j]])
    return float(gap / spread), "where one hands over to the other"
