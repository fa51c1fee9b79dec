"""How `sparsort sort FILE` scales with the recording's length: time and memory per recorded minute.

A user's recordings run for hours; the other benchmarks sort 1-5 minutes. This
one sorts the same kind of probe (SpikeInterface's generator: --channels,
--units, one seed) at several durations, each written to disk block by block
(the benchmark never holds a recording) and sorted by `sparsort sort FILE` in a
process of its own, as a user runs it. For each duration it prints, in one run:

    wall time of the whole command, seconds per recorded minute and that figure
    against the shortest duration's (1.00: time grows in proportion to length)
    the command's own peak resident memory and its growth over the shortest's
    (bounded memory: it does not grow with the duration)
    the stages that took longest, and mean accuracy against the ground truth

plus the load average before and after each sort. The recording's file is
deleted after its sort unless --keep.

    python benchmarks/bench_duration.py [--channels 32 --units 24 --durations 300 1200 3600]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_state import command_peak_mb, engine_version, load_note, run_measured, sparsort_command  # noqa: E402

from engine.evaluation.scoring import compare_to_ground_truth  # noqa: E402
from engine.io.recording import write_recording_blocks  # noqa: E402

BLOCK_SECONDS = 10.0  # the generator is read and written this much at a time


@dataclass
class Row:
    minutes: float
    file_gb: float
    write_s: float
    seconds: float | None = None
    peak_mb: float | None = None
    accuracy: float | None = None
    n_units: int = 0
    slowest: list[tuple[str, float]] = field(default_factory=list)
    loads: str = ""
    error: str = ""


def generated(duration_s: float, n_channels: int, n_units: int, seed: int):
    """SpikeInterface's ground-truth generator, lazy: traces are made block by block when read."""
    from spikeinterface.core import generate_ground_truth_recording

    return generate_ground_truth_recording(durations=[duration_s], sampling_frequency=30_000.0,
                                           num_channels=n_channels, num_units=n_units, seed=seed)


def write_generated(recording, path: Path) -> Path:
    """The generator's traces as a float32 binary with its sidecar, one block in memory at a time."""
    n_samples = recording.get_num_samples(segment_index=0)
    step = int(BLOCK_SECONDS * recording.sampling_frequency)
    blocks = (recording.get_traces(segment_index=0, start_frame=start, end_frame=min(start + step, n_samples),
                                   return_in_uV=False)
              for start in range(0, n_samples, step))
    positions = np.asarray(recording.get_channel_locations(), float)[:, :2]
    return write_recording_blocks(path, blocks, recording.sampling_frequency, recording.get_num_channels(),
                                  dtype="float32", channel_positions=positions)


def sort_one(duration_s: float, args, workdir: Path) -> Row:
    recording, truth = generated(duration_s, args.channels, args.units, args.seed)
    path = workdir / f"probe-{args.channels}ch-{duration_s:g}s.bin"
    started = time.perf_counter()
    write_generated(recording, path)
    row = Row(duration_s / 60.0, path.stat().st_size / 1e9, time.perf_counter() - started)
    out = workdir / f"sorted-{duration_s:g}s"
    command = sparsort_command()
    before = load_note()
    seconds, code, peak_mb, last_error = run_measured(
        [*command, "sort", str(path), "--out", str(out), "--quiet", "--overwrite"], dict(os.environ))
    row.loads = f"before: {before}; after: {load_note()}"
    if not args.keep:
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
    if code != 0:
        row.error = f"exit {code}: {last_error}"
        return row
    row.seconds = seconds
    info = json.loads((out / "sparsort.json").read_text())
    stages = info.get("stages", [])
    row.peak_mb = command_peak_mb(peak_mb, info)
    row.slowest = sorted(((stage["stage"], stage["seconds"]) for stage in stages), key=lambda kv: -kv[1])[:3]
    from engine.io.phy import load_phy

    folder = load_phy(out)
    row.n_units = len(folder.cluster_ids)
    spikes = truth.to_spike_vector()
    comparison = compare_to_ground_truth(
        spikes["sample_index"].astype(np.int64), spikes["unit_index"].astype(np.int64),
        np.asarray(folder.spike_times, np.int64), np.asarray(folder.spike_clusters, np.int64),
        recording.sampling_frequency, gt_unit_ids=np.arange(len(truth.unit_ids)),
        sorted_unit_ids=np.asarray(folder.cluster_ids, np.int64))
    row.accuracy = float(comparison.mean_accuracy)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return row


def print_table(rows: list[Row], args) -> None:
    print(f"\n`sparsort sort FILE`, SpikeInterface's generator: {args.channels} channels, {args.units} units, "
          f"seed {args.seed}, float32 on disk; {engine_version()}")
    print(f"{'minutes':>7}  {'file GB':>7}  {'sort s':>7}  {'s/min':>6}  {'x first':>7}  "
          f"{'peak MB':>7}  {'x first':>7}  {'accuracy':>8}  {'units':>5}  slowest stages (s)")
    first = next((row for row in rows if row.seconds is not None), None)
    for row in rows:
        if row.seconds is None:
            print(f"{row.minutes:>7.1f}  {row.file_gb:>7.2f}  failed: {row.error}")
            continue
        per_minute = row.seconds / row.minutes
        time_ratio = per_minute / (first.seconds / first.minutes)
        memory_ratio = row.peak_mb / first.peak_mb
        stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in row.slowest)
        print(f"{row.minutes:>7.1f}  {row.file_gb:>7.2f}  {row.seconds:>7.1f}  {per_minute:>6.1f}  "
              f"{time_ratio:>7.2f}  {row.peak_mb:>7.0f}  {memory_ratio:>7.2f}  {row.accuracy:>8.3f}  "
              f"{row.n_units:>5}  {stages}")
    for row in rows:
        print(f"  {row.minutes:g} min (written in {row.write_s:.0f} s): {row.loads}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--units", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed (the same for every duration)")
    parser.add_argument("--durations", type=float, nargs="+", default=[300.0, 1200.0, 3600.0],
                        help="seconds; the shortest is the reference of the ratios")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where recordings are written (default: a temporary folder; needs "
                             "channels x 120 kB per second of the longest duration)")
    parser.add_argument("--keep", action="store_true", help="keep the recordings and sorted folders")
    args = parser.parse_args()
    durations = sorted(args.durations)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sparsort-duration-"))
    workdir.mkdir(parents=True, exist_ok=True)
    needed_gb = args.channels * 4 * 30_000 * durations[-1] / 1e9
    free_gb = shutil.disk_usage(workdir).free / 1e9
    if free_gb < needed_gb * 1.1:
        sys.exit(f"the longest recording needs {needed_gb:.1f} GB in {workdir}, which has {free_gb:.1f} GB free: "
                 f"pass --workdir on a larger disk, or shorter --durations")
    rows = []
    for duration in durations:
        print(f"sorting {duration / 60:g} min ...", flush=True)
        rows.append(sort_one(duration, args, workdir))
    print_table(rows, args)
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
