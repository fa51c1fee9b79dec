"""Short probe recordings: accuracy and how many units the sort makes of each neuron, whitened and not.

People try a sorter on a minute of a probe before they give it an hour, and they
judge it by the units it shows them: a neuron cut into five units, or a unit of
noise on every channel, costs them more curation than a missed spike. The other
benchmarks sort 5 minutes and more. This one sorts the simulator's probes (10
neurons at 20 Hz, a linear probe of --channels, --seeds) of each --durations,
unwhitened and whitened side by side in one process, and prints for each sort:

    mean accuracy against the ground truth, the neurons found (accuracy >= 0.8)
    the units made and, of them, those that match no neuron (agreement < 0.5, SpikeInterface's
    match score, with every neuron: fragments, noise, small events set apart)
    wall time, and the load average

then, per duration and channel count, the medians, and the process's peak memory.
(The automatic choice whitens from 2 minutes of recording: see engine/pipeline/whitening.py.)

    python benchmarks/bench_short_recordings.py [--durations 10 60 --channels 16 32 --seeds 11 12 13 14]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_state import engine_version, load_note  # noqa: E402

from engine.evaluation.scoring import compare_to_ground_truth  # noqa: E402
from engine.evaluation.simulator import simulate  # noqa: E402
from engine.io.geometry import linear_positions  # noqa: E402
from engine.io.recording import NumpyRecording  # noqa: E402
from engine.sorter import CRsAESorter  # noqa: E402

N_NEURONS = 10
FIRING_HZ = 20.0
SAMPLING_RATE = 30_000.0


def sort_once(traces: np.ndarray, positions: np.ndarray, truth, seed: int, whiten: bool) -> dict:
    started = time.perf_counter()
    sorting = CRsAESorter(seed=seed, whiten=whiten).fit_predict(
        NumpyRecording(traces, SAMPLING_RATE, channel_positions=positions))
    seconds = time.perf_counter() - started
    comparison = compare_to_ground_truth(truth.spike_times, truth.spike_units, sorting.spike_times,
                                         sorting.spike_units, SAMPLING_RATE,
                                         sorted_unit_ids=np.arange(sorting.n_units))
    accuracy = np.asarray(comparison.accuracy)
    # A unit matching no neuron: its agreement with every one under SpikeInterface's match score (0.5).
    unmatched = int(np.count_nonzero(comparison.agreement.max(axis=0, initial=0.0) < 0.5))
    return dict(accuracy=float(accuracy.mean()), found=int((accuracy >= 0.8).sum()), units=sorting.n_units,
                unmatched=unmatched, seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 60.0], help="seconds")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14],
                        help="recording seeds (each also the sorter's)")
    args = parser.parse_args(argv)
    print(f"bench_short_recordings: simulator, {N_NEURONS} neurons at {FIRING_HZ:g} Hz, 30 kHz; "
          f"engine {engine_version()}; {load_note()}", flush=True)
    header = f"{'rec':>6} {'ch':>3} {'seed':>4} {'whiten':>6} {'accuracy':>8} {'found':>5} {'units':>5} {'unmatched':>9} {'s':>6}  load"
    rows = []
    for duration in args.durations:
        for n_channels in args.channels:
            print(header, flush=True)
            positions = linear_positions(n_channels)
            for seed in args.seeds:
                traces, truth = simulate(duration_s=duration, n_units=N_NEURONS, sampling_rate=SAMPLING_RATE,
                                         n_channels=n_channels, channel_positions=positions, seed=seed,
                                         firing_rates=FIRING_HZ)
                for whiten in (False, True):
                    row = dict(duration=duration, channels=n_channels, seed=seed, whiten=whiten,
                               **sort_once(traces, positions, truth, seed, whiten))
                    rows.append(row)
                    print(f"{duration:>5g}s {n_channels:>3} {seed:>4} {('on' if whiten else 'off'):>6} "
                          f"{row['accuracy']:>8.3f} {row['found']:>5} {row['units']:>5} {row['unmatched']:>9} "
                          f"{row['seconds']:>6.1f}  {os.getloadavg()[0]:.2f}", flush=True)
    print("\nmedians (accuracy / units / unmatched units / s), unwhitened | whitened:")
    for duration in args.durations:
        for n_channels in args.channels:
            line = []
            for whiten in (False, True):
                chosen = [r for r in rows if r["duration"] == duration and r["channels"] == n_channels
                          and r["whiten"] == whiten]
                line.append(" / ".join(f"{np.median([r[key] for r in chosen]):.3g}"
                                       for key in ("accuracy", "units", "unmatched", "seconds")))
            print(f"  {duration:g} s, {n_channels} channels: {line[0]} | {line[1]}")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
