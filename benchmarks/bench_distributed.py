"""Sorting's chunk-parallel stage on 1 and 2 local Dask workers against one process.

    python benchmarks/bench_distributed.py                    # 16 s of the tetrode preset, ~2-4 min here
    python benchmarks/bench_distributed.py --duration 120 --workers 1,2,4,8   # on a bigger machine

Simulates the tetrode preset (8 units, 4 channels, 30 kHz) cut to
`--duration` and finds the spikes of the whole recording with a dictionary
of its 8 true (band-passed) spike shapes: the size of the dictionary
`sparsort sort` learns there, without spending minutes learning it (the
cost of finding spikes depends on the filter count, not on how good the
filters are). Threshold, dead time, amplitude prior (from the first 2 s)
and solver are set as `SortPipeline.sort` sets them. Then it times

  - `infer_spikes` in this process (torch with the process's threads);
  - `DaskInference` with the same arguments on a LocalCluster of N worker
    processes, 1 thread each, for each N of `--workers`, from submitting the
    first task to the last result (the cluster is started and warmed up
    before, untimed).

Prints per run: inference wall time, speed-up over 1 worker, the peak
resident memory of each worker process (getrusage; it includes torch
itself, so each worker's resting size after start-up is printed too, from
psutil), the load average before the run, and whether the spikes are
identical to the one-process run. Timings are wall-clock on a possibly
shared machine: the speed-up is bounded by the free cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from machine_state import engine_version, load_note  # noqa: E402  (benchmarks/ is the script's folder)
from engine.evaluation.scoring import compare_to_ground_truth  # noqa: E402
from engine.evaluation.simulator import TETRODE, GroundTruth, write_simulation  # noqa: E402
from engine.io.recording import open_recording  # noqa: E402
from engine.model.crsae import CRsAE, universal_threshold  # noqa: E402
from engine.pipeline.distributed import DaskInference, require_distributed  # noqa: E402
from engine.pipeline.inference import chunk_batches, default_chunk_size, infer_spikes  # noqa: E402
from engine.pipeline.preprocessing import PreprocessedRecording  # noqa: E402
from engine.pipeline.refinement import AmplitudePrior  # noqa: E402
from engine.pipeline.params import DEAD_TIME_MS  # noqa: E402
from engine.pipeline.training import TrainingConfig  # noqa: E402


def worker_memory() -> dict:
    """Runs in a worker: its peak and current resident memory in MB, and torch's thread count."""
    import resource

    import psutil
    import torch

    return {
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "torch_threads": torch.get_num_threads(),
    }


def compare(reference, events) -> str:
    """How the spikes of a run differ from the one-process run's."""
    if len(events) != len(reference) or not (np.array_equal(events.times, reference.times)
                                             and np.array_equal(events.filters, reference.filters)):
        agreement = compare_to_ground_truth(reference.times, reference.filters, events.times, events.filters, 30_000.0)
        return f"{len(events)} spikes, min agreement {agreement.accuracy.min():.4f}"
    difference = float(np.abs(events.amplitudes - reference.amplitudes).max(initial=0.0))
    if difference == 0.0:
        return "identical"
    # torch's thread count (1 per worker, all cores here) changes float rounding on the dense route.
    return f"same times+units, |d amp| <= {difference:.1e}"


def warm_up() -> None:
    """Runs in a worker: import what the tasks will, so start-up is not timed."""
    import engine.pipeline.distributed  # noqa: F401


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=16.0, help="seconds of the tetrode preset (default 16)")
    parser.add_argument("--workers", default="1,2", help="local worker counts to run, comma-separated (default 1,2)")
    parser.add_argument("--batch-chunks", type=int, default=2,
                        help="1 s chunks per task (default 2; `sparsort sort` uses 8): more tasks balance better")
    args = parser.parse_args()
    distributed = require_distributed()
    worker_counts = [int(n) for n in args.workers.split(",")]

    folder = Path(tempfile.mkdtemp(prefix="bench_distributed_"))
    paths = write_simulation(folder, **{**TETRODE, "duration_s": args.duration})
    recording = PreprocessedRecording(open_recording(paths.recording))
    truth = GroundTruth.load(paths.truth)
    print(f"{recording.parent}\n{engine_version()}; {os.cpu_count()} CPU cores")

    config = TrainingConfig()
    noise_levels = np.maximum(recording.noise_levels, 1e-6)
    filters = (truth.bandpassed_waveforms() / noise_levels[None, None, :]).transpose(0, 2, 1)  # (units, ch, taps)
    threshold = universal_threshold(recording.n_channels, config.window_for(recording.sampling_rate))
    model = CRsAE(filters, config.lambda_scale * threshold, config.n_iterations)
    dead_time = max(int(round(DEAD_TIME_MS * 1e-3 * recording.sampling_rate)), 1)
    first = infer_spikes(model, recording, noise_levels, dead_time, model.lambdas[0].item(),
                         stop=int(2 * recording.sampling_rate))
    prior = AmplitudePrior.from_events(first.amplitudes, first.filters, model.n_filters)
    call = dict(model=model, recording=recording, noise_levels=noise_levels, dead_time=dead_time,
                min_amplitude=model.lambdas[0].item(), batch_chunks=args.batch_chunks, prior=prior)
    n_tasks = len(chunk_batches(recording.n_samples, default_chunk_size(recording, model.n_taps), args.batch_chunks))
    print(f"dictionary: {model.n_filters} filters x {model.n_taps} taps; {n_tasks} tasks of {args.batch_chunks} s\n")

    load_before = load_note()
    began = time.perf_counter()
    reference = infer_spikes(**call)
    rows = [("1 process", time.perf_counter() - began, f"torch {torch.get_num_threads()} threads", "-", load_before,
             f"{len(reference)} spikes")]
    one_worker_seconds = None
    for n_workers in worker_counts:
        with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                      dashboard_address=":0", silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            client.run(warm_up)
            resting = client.run(worker_memory)
            load_before = load_note()
            began = time.perf_counter()
            events = DaskInference(client)(**call)
            seconds = time.perf_counter() - began
            after = client.run(worker_memory)
        same = compare(reference, events)
        if n_workers == 1:
            one_worker_seconds = seconds
        memory = ", ".join(f"{after[w]['peak_mb']:.0f} (rest {resting[w]['rss_mb']:.0f})" for w in sorted(after))
        threads = ",".join(sorted({str(info["torch_threads"]) for info in after.values()}))
        rows.append((f"{n_workers} worker{'s' if n_workers > 1 else ''}", seconds, f"torch {threads} thread/worker",
                     memory, load_before, same))

    print(f"{'run':<10} {'inference s':>11} {'speed-up':>8}  {'threads':<22} {'peak MB per worker (resting)':<30} "
          f"{'spikes vs 1 process':<34} load before")
    for name, seconds, threads, memory, load, same in rows:
        speedup = f"{one_worker_seconds / seconds:.2f}x" if one_worker_seconds and name != "1 process" else "-"
        print(f"{name:<10} {seconds:>11.1f} {speedup:>8}  {threads:<22} {memory:<30} {same:<34} {load}")
    print(f"\nrecording {recording.duration:.0f} s; now {load_note()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
