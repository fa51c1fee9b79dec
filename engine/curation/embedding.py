"""A 2-D map of the spikes: t-SNE of their features, with every unit represented.

`embed_spikes` samples up to ~30,000 spikes (small units whole, large ones
evenly thinned), computes their features (engine.curation.features), and lays them out
with openTSNE (measured 3.4× faster than scikit-learn's t-SNE here; see
benchmarks/bench_embedding.py). The PCA of the features is reported first,
then the t-SNE layout as it settles, so a viewer can draw something at once.

A lasso drawn on the map encloses sampled spikes only; `extend_selection`
carries it over to the unsampled spikes of the same units, each following
its nearest sampled neighbour in feature space.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from engine.curation.features import Cancelled, SpikeFeatureExtractor, progress_part
from engine.curation.grouping import group_by_unit
from engine.io.recording import Recording
from engine.pipeline.sorting import Sorting

MAX_EMBEDDED_SPIKES = 30_000
MIN_TSNE_SPIKES = 10  # fewer than this, and the PCA is the layout
TSNE_EARLY_EXAGGERATION_ITER = 250
TSNE_ITER = 500
CALLBACK_EVERY_ITERS = 10


@dataclass(frozen=True)
class SpikeEmbedding:
    spike_indices: np.ndarray  # (m,) int64 embedded spikes, ascending indices into the sorting
    features: np.ndarray  # (m, n_features) float32: the t-SNE input, principal components first
    extractor: SpikeFeatureExtractor  # maps other spikes into the same feature space
    layout: np.ndarray  # (m, 2) float32 where each spike is drawn: the t-SNE layout, or the PCA until it is ready
    tsne_fraction: float  # 0: the layout is the PCA; 1: t-SNE finished


def stratified_subsample(spike_units: np.ndarray, max_spikes: int = MAX_EMBEDDED_SPIKES) -> np.ndarray:
    """(m,) int64 ascending spike indices, m ≤ max_spikes, every unit represented.

    Water-filling: each unit gets the same quota, the quota that spends the
    whole budget; units smaller than it are taken whole, the others are
    thinned evenly in time (so drift stays visible in the sample).
    """
    spike_units = np.asarray(spike_units)
    if len(spike_units) <= max_spikes:
        return np.arange(len(spike_units), dtype=np.int64)
    order, _units, bounds = group_by_unit(spike_units)  # spikes grouped by unit, ascending in time within
    starts, counts = bounds[:-1], np.diff(bounds)
    quota = _water_level(counts, max_spikes)
    chosen = []
    for start, count in zip(starts, counts):
        take = min(count, quota)
        chosen.append(order[start + np.linspace(0, count - 1, take).astype(np.int64)])
    return np.sort(np.concatenate(chosen))


def _water_level(counts: np.ndarray, budget: int) -> int:
    """The largest per-unit quota q with sum(min(counts, q)) ≤ budget (at least 1)."""
    sorted_counts = np.sort(counts)
    spent_below = np.concatenate([[0], np.cumsum(sorted_counts)])  # spikes of the i smallest units
    for i, count in enumerate(sorted_counts):
        # With quota q ≥ sorted_counts[i-1], the i smallest units are whole, the rest take q each.
        quota = (budget - spent_below[i]) // (len(sorted_counts) - i)
        if quota < count:
            return max(int(quota), 1)
    return int(sorted_counts[-1])


def tsne_layout(
    features: np.ndarray,
    *,
    seed: int = 0,
    n_jobs: int = 1,
    on_update: Callable[[float, np.ndarray], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """(n, 2) float32 openTSNE layout of `features` (n, d), started from their PCA.

    `on_update(fraction, layout)` receives copies of the layout as it settles,
    every CALLBACK_EVERY_ITERS iterations; `should_stop()` true interrupts it
    (raising Cancelled).
    """
    from openTSNE import TSNE

    n = len(features)
    total_iterations = TSNE_EARLY_EXAGGERATION_ITER + TSNE_ITER
    calls = 0

    def callback(_iteration, _error, embedding) -> bool:
        nonlocal calls
        calls += 1
        if should_stop is not None and should_stop():
            return True
        if on_update is not None:
            on_update(min(calls * CALLBACK_EVERY_ITERS / total_iterations, 1.0), np.array(embedding, dtype=np.float32))
        return False

    tsne = TSNE(
        n_components=2,
        # openTSNE needs 3 × perplexity neighbours per point.
        perplexity=float(min(30.0, max((n - 1) / 3.0, 1.0))),
        early_exaggeration_iter=TSNE_EARLY_EXAGGERATION_ITER,
        n_iter=TSNE_ITER,
        initialization="pca",
        n_jobs=n_jobs,
        random_state=seed,
        callbacks=callback,
        callbacks_every_iters=CALLBACK_EVERY_ITERS,
    )
    layout = np.asarray(tsne.fit(np.asarray(features, dtype=np.float64)), dtype=np.float32)
    if should_stop is not None and should_stop():
        raise Cancelled()
    return layout


def embed_spikes(
    recording: Recording,
    sorting: Sorting,
    *,
    max_spikes: int = MAX_EMBEDDED_SPIKES,
    seed: int = 0,
    n_jobs: int = 1,
    progress: Callable[[float, str], None] | None = None,
    on_layout: Callable[[SpikeEmbedding], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SpikeEmbedding:
    """Sample, featurise and lay out the spikes of `sorting` (from the preprocessed `recording`).

    `progress(fraction, message)` follows the whole; `on_layout(embedding)`
    gets the PCA layout as soon as the features exist, then each intermediate
    t-SNE layout. Raises Cancelled when `should_stop()` turns true.
    """
    report = progress or (lambda _fraction, _message: None)
    spike_indices = stratified_subsample(sorting.spike_units, max_spikes)
    extractor = SpikeFeatureExtractor(seed=seed)
    report(0.0, "Reading spike waveforms")
    features = extractor.fit_transform(
        recording, sorting, spike_indices, lambda fraction: report(0.3 * fraction, "Reading spike waveforms"),
        should_stop,
    )
    pca_layout = features[:, :2] if features.shape[1] >= 2 else np.pad(features, ((0, 0), (0, 2 - features.shape[1])))
    embedding = SpikeEmbedding(spike_indices, features, extractor, np.ascontiguousarray(pca_layout), 0.0)
    if on_layout is not None:
        on_layout(embedding)
    if len(spike_indices) < MIN_TSNE_SPIKES:
        report(1.0, "Done")
        return dataclasses.replace(embedding, tsne_fraction=1.0)

    def on_update(fraction: float, layout: np.ndarray) -> None:
        report(0.3 + 0.7 * fraction, "t-SNE")
        if on_layout is not None:
            on_layout(dataclasses.replace(embedding, layout=layout, tsne_fraction=fraction))

    report(0.3, "t-SNE: finding neighbours")
    layout = tsne_layout(features, seed=seed, n_jobs=n_jobs, on_update=on_update, should_stop=should_stop)
    return dataclasses.replace(embedding, layout=layout, tsne_fraction=1.0)


def extend_selection(
    embedding: SpikeEmbedding,
    inside: np.ndarray,
    unit_spikes: dict[int, np.ndarray],
    recording: Recording,
    sorting: Sorting,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """(n,) int64 ascending: the spikes of `unit_spikes`' units that a lasso on the map selects.

    `inside`: (m,) bool, which embedded spikes the lasso encloses.
    `unit_spikes`: unit -> its spike indices now. Sampled spikes count as the
    lasso says; each unsampled one follows its nearest sampled neighbour of
    the same unit, in feature space.
    """
    from sklearn.neighbors import NearestNeighbors

    sampled = embedding.spike_indices
    selected = []
    missing_per_unit = {}
    for unit, spikes in unit_spikes.items():
        is_sampled = np.isin(spikes, sampled, assume_unique=True)
        rows = np.searchsorted(sampled, spikes[is_sampled])  # their rows in the embedding
        selected.append(spikes[is_sampled][inside[rows]])
        if is_sampled.any() and not is_sampled.all():
            missing_per_unit[unit] = (spikes[~is_sampled], rows)
    if missing_per_unit:
        missing = np.concatenate([spikes for spikes, _ in missing_per_unit.values()])
        features = embedding.extractor.transform(
            recording, sorting, missing, progress_part(progress, 0.0, 0.9), should_stop
        )
        start = 0
        for spikes, rows in missing_per_unit.values():
            unit_features = features[start : start + len(spikes)]
            start += len(spikes)
            neighbours = NearestNeighbors(n_neighbors=1).fit(embedding.features[rows])
            nearest = neighbours.kneighbors(unit_features, return_distance=False)[:, 0]
            selected.append(spikes[inside[rows[nearest]]])
    if progress is not None:
        progress(1.0)
    return np.sort(np.concatenate(selected)) if selected else np.zeros(0, dtype=np.int64)
