"""Would a low-rank dictionary sort a probe faster at equal accuracy? Measured, not assumed.

    python benchmarks/bench_low_rank.py                        # 32 channels, 24 units, 10 s
    python benchmarks/bench_low_rank.py --channels 384 --units 100 --duration 4

Kilosort's templates are low rank: each is a few spatial weights per channel
times temporal components shared by every template, so correlating the data
with all of them (Hᵀy) is R convolutions per channel and then one matrix
product, instead of one convolution per filter over its neighbourhood. This
benchmark learns Sparsort's dictionary on one SpikeInterface-generated probe
recording (the default sort), then, in the same run:

  accuracy  sorts the recording (infer_spikes, coincidences, the same amplitude
            prior, λ and dead time) with the learned filters and with their
            best rank-R approximations on R temporal components shared by all
            filters (the top right singular vectors of every filter's channel
            rows, weighted by their energy), for each R of --ranks;
  speed     times Hᵀy on one batch of the encoder's chunks both ways: the
            model's block convolutions (what sorting runs) and the factored
            form (R temporal convolutions of every channel, then spatial weights
            as one matrix product), medians of --repeats.

Hᵀy is the only step a low-rank form makes cheaper here: the working-set
solver works on the Gram tensor (computed once per dictionary) and the spike
read-out on each spike's own atoms. So the printed share of Hᵀy in a whole
inference bounds what the form could save. Wall-clock on a shared machine:
the load average and peak memory are printed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_sort import si_truth  # noqa: E402
from benchmarks.machine_state import engine_version, load_note, median_seconds  # noqa: E402


def shared_temporal_basis(filters: np.ndarray, rank: int) -> np.ndarray:
    """(rank, n_taps): the temporal components that best span every filter's channel rows.

    filters: (n_filters, n_channels, n_taps); rows that are zero (off a filter's neighbourhood)
    add nothing to the SVD, big rows weigh by their energy."""
    rows = filters.reshape(-1, filters.shape[2]).astype(np.float64)
    rows = rows[np.any(rows != 0, axis=1)]
    _, _, components = np.linalg.svd(rows, full_matrices=False)
    return components[:rank].astype(np.float32)


def low_rank(filters: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(spatial weights (n_filters, rank, n_channels), approximated filters (n_filters, n_channels, n_taps))."""
    weights = np.einsum("kct,rt->krc", filters, basis)
    return weights, np.einsum("krc,rt->kct", weights, basis).astype(np.float32)


def factored_analysis(signal: torch.Tensor, basis: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Hᵀy of the low-rank dictionary: (batch, n_channels, n) -> (batch, n_filters, n - n_taps + 1).

    R convolutions of every channel with the shared components, then the spatial weights
    (n_filters, rank × n_channels) as one matrix product."""
    batch, n_channels, n = signal.shape
    projected = F.conv1d(signal.reshape(batch * n_channels, 1, n), basis[:, None, :])  # (b·C, R, m)
    projected = projected.reshape(batch, n_channels, basis.shape[0], -1).transpose(1, 2)  # (b, R, C, m)
    flat = projected.reshape(batch, basis.shape[0] * n_channels, -1)
    return torch.matmul(weights.reshape(weights.shape[0], -1), flat)  # (b, K, m)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--units", type=int, default=24)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--ranks", default="1,2,3,6", help="comma-separated ranks R")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ranks = [int(r) for r in args.ranks.split(",")]

    from engine.evaluation.scoring import compare_to_ground_truth
    from engine.io.recording import NumpyRecording
    from engine.model.crsae import CRsAE
    from engine.pipeline.coincidences import resolve_coincidences
    from engine.pipeline.inference import infer_spikes
    from engine.pipeline.params import COINCIDENCE_MS
    from engine.pipeline.refinement import AmplitudePrior
    from engine.pipeline.run import SortPipeline
    from engine.pipeline.training import TrainingConfig

    print(f"bench_low_rank: {engine_version()}; {load_note()}; torch threads {torch.get_num_threads()}")
    truth = si_truth(args.duration, args.units, args.seed, n_channels=args.channels)
    recording = NumpyRecording(truth.traces, truth.sampling_rate, channel_positions=truth.channel_positions)
    started = time.perf_counter()
    pipeline = SortPipeline(recording, TrainingConfig(seed=args.seed))
    pipeline.prepare()
    pipeline.train()
    pipeline.sort()  # the final pruning: the dictionary every row below starts from
    print(f"{truth.name}: {args.duration:g} s; dictionary learned and pruned in {time.perf_counter() - started:.0f} s: "
          f"{pipeline.model.n_filters} filters on {args.channels} channels × {pipeline.n_taps} taps")
    pool_events = pipeline._events_of_pool()
    prior = AmplitudePrior.from_events(pool_events.amplitudes, pool_events.filters, pipeline.model.n_filters)
    learned = pipeline.model.filters.detach().cpu().numpy()
    mask = pipeline.model.channel_mask.cpu().numpy()
    target, noise = pipeline.recording, pipeline.noise_levels
    window = max(int(round(COINCIDENCE_MS * 1e-3 * pipeline.sampling_rate)), 1)

    # One batch of the encoder's chunks (8 × 1 s), noise-normalised, for the Hᵀy timings.
    chunk = int(pipeline.sampling_rate)
    n = min(8 * chunk, target.n_samples)
    signal = torch.from_numpy(np.ascontiguousarray(
        (target.get_traces(0, n).T / noise[:, None])[:, : (n // chunk) * chunk]
        .reshape(args.channels, -1, chunk).transpose(1, 0, 2), dtype=np.float32))

    rows = []
    for rank in [None, *ranks]:
        if rank is None:
            filters, label = learned, "learned (full)"
        else:
            basis = shared_temporal_basis(learned, rank)
            weights, filters = low_rank(learned, basis)
            label = f"rank {rank}"
        model = CRsAE(filters, pipeline.model.lambdas.cpu().numpy(), pipeline.model.n_iterations,
                      pipeline.model.n_debias_iterations, channel_mask=mask)
        cosine = float(np.sum(model.filters.detach().numpy() * learned) / len(learned))  # mean cosine to the learned
        started = time.perf_counter()
        events = infer_spikes(model, target, noise, pipeline.dead_time, pipeline.lambda_, prior=prior)
        inference_s = time.perf_counter() - started
        events = resolve_coincidences(events, window)
        comparison = compare_to_ground_truth(truth.spike_times, truth.spike_units, events.times.astype(np.int64),
                                             events.filters.astype(np.int64), truth.sampling_rate)
        with torch.no_grad():
            blocks_s = median_seconds(lambda: model.analysis(signal), args.repeats)
            if rank is None:
                factored_s = float("nan")
            else:
                basis_t, weights_t = torch.from_numpy(basis), torch.from_numpy(weights)
                factored_s = median_seconds(lambda: factored_analysis(signal, basis_t, weights_t), args.repeats)
                normalised = model.filters.detach()  # unit norm, as the model holds them
                check = factored_analysis(signal[:1], basis_t, weights_t)
                scale = torch.from_numpy(np.linalg.norm(filters, axis=(1, 2)))[None, :, None]
                error = float((check / scale - F.conv1d(signal[:1], normalised)).abs().max())
                assert error < 1e-2, f"factored Hᵀy disagrees with the convolution by {error}"
        rows.append((label, cosine, comparison.mean_accuracy, comparison.n_well_detected, inference_s,
                     blocks_s, factored_s))

    print(f"\n{'dictionary':<16} {'cos to learned':>14} {'mean acc':>8} {'well det.':>9} {'inference s':>11} "
          f"{'Hᵀy blocks s':>12} {'Hᵀy factored s':>14}")
    for label, cosine, accuracy, well, inference_s, blocks_s, factored_s in rows:
        factored = f"{factored_s:14.3f}" if np.isfinite(factored_s) else f"{'-':>14}"
        print(f"{label:<16} {cosine:14.3f} {accuracy:8.3f} {f'{well}/{args.units}':>9} {inference_s:11.1f} "
              f"{blocks_s:12.3f} {factored}")
    batch_s = rows[0][5]
    n_batches = target.n_samples / (8 * chunk)
    print(f"Hᵀy over the recording with the learned filters ≈ {batch_s * n_batches:.1f} s of its "
          f"{rows[0][4]:.1f} s inference ({batch_s * n_batches / rows[0][4]:.0%}): the most a faster Hᵀy can save.")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; {load_note()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
