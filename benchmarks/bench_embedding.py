"""How long the spike map takes: feature extraction, then t-SNE of 30,000 spikes on the CPU.

    python benchmarks/bench_embedding.py [--sklearn] [--spikes 30000] [--channels 8]

Simulates a recording (30 kHz, linear probe) with enough spikes, then times
SpikeFeatureExtractor.fit_transform on a stratified sample (the part that
reads and filters the recording), and openTSNE on the features with one
thread and with every core. With --sklearn, scikit-learn's Barnes-Hut t-SNE
runs the same number of iterations for comparison. Layout quality is the
fraction of each spike's 10 nearest neighbours on the map that belong to
its own unit (for the features: in feature space). Prints a table; nothing
is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.curation.embedding import TSNE_EARLY_EXAGGERATION_ITER, TSNE_ITER, stratified_subsample, tsne_layout  # noqa: E402
from engine.curation.features import SpikeFeatureExtractor  # noqa: E402
from engine.pipeline.preprocessing import PreprocessedRecording  # noqa: E402
from engine.io.recording import NumpyRecording  # noqa: E402
from engine.evaluation.simulator import simulate  # noqa: E402

SAMPLING_RATE = 30_000.0
N_UNITS = 20
FIRING_RATE_HZ = 12.0


def neighbour_purity(layout: np.ndarray, units: np.ndarray, k: int = 10) -> float:
    from sklearn.neighbors import NearestNeighbors

    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(layout).kneighbors(layout, return_distance=False)[:, 1:]
    return float(np.mean(units[neighbours] == units[:, None]))


def sklearn_layout(features: np.ndarray, n_jobs: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    return TSNE(
        n_components=2, perplexity=30.0, init="pca", learning_rate="auto",
        max_iter=TSNE_EARLY_EXAGGERATION_ITER + TSNE_ITER, n_jobs=n_jobs, random_state=0,
    ).fit_transform(features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sklearn", action="store_true", help="also time scikit-learn's t-SNE")
    parser.add_argument("--spikes", type=int, default=30_000, help="spikes on the map")
    parser.add_argument("--channels", type=int, default=8)
    arguments = parser.parse_args()

    duration_s = 1.1 * arguments.spikes / (N_UNITS * FIRING_RATE_HZ)
    started = time.perf_counter()
    traces, truth = simulate(
        duration_s=duration_s, n_units=N_UNITS, sampling_rate=SAMPLING_RATE, n_channels=arguments.channels,
        firing_rates=FIRING_RATE_HZ, seed=0,
    )
    recording = PreprocessedRecording(NumpyRecording(traces, SAMPLING_RATE, channel_positions=truth.channel_positions))
    sorting = truth.to_sorting()
    spikes = stratified_subsample(sorting.spike_units, arguments.spikes)
    units = sorting.spike_units[spikes]
    print(
        f"{len(spikes):,} spikes of {N_UNITS} units, {arguments.channels} channels, {duration_s:.0f} s at "
        f"{SAMPLING_RATE / 1000:g} kHz (simulated in {time.perf_counter() - started:.0f} s); "
        f"{os.cpu_count()} cores\n"
    )

    print(f"{'step':<32}{'seconds':>9}  {'spikes/s':>9}{'10-NN purity':>14}", flush=True)
    started = time.perf_counter()
    features = SpikeFeatureExtractor().fit_transform(recording, sorting, spikes)
    seconds = time.perf_counter() - started
    print_row("features (read, filter, PCA)", seconds, len(spikes), neighbour_purity(features, units))

    cores = os.cpu_count() or 1
    runs = [("openTSNE, 1 thread", lambda: tsne_layout(features, n_jobs=1))]
    if cores > 1:
        runs.append((f"openTSNE, {cores} threads", lambda: tsne_layout(features, n_jobs=cores)))
    if arguments.sklearn:
        runs.append(("scikit-learn, 1 thread", lambda: sklearn_layout(features, 1)))
        if cores > 1:
            runs.append((f"scikit-learn, {cores} threads", lambda: sklearn_layout(features, cores)))
    for name, run in runs:
        started = time.perf_counter()
        layout = run()
        print_row(name, time.perf_counter() - started, len(spikes), neighbour_purity(layout, units))


def print_row(step: str, seconds: float, n_spikes: int, purity: float) -> None:
    print(f"{step:<32}{seconds:>9.1f}  {n_spikes / seconds:>9,.0f}{purity:>14.3f}", flush=True)


if __name__ == "__main__":
    main()
