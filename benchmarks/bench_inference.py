"""Speed of Sparsort's two compute steps: training (s/step) and sorting (samples/s).

    python benchmarks/bench_inference.py                  # 30 s of demo, 10 s of tetrode
    python benchmarks/bench_inference.py --quick          # 10 s and 5 s, fewer repeats
    python benchmarks/bench_inference.py --threads 1,2    # torch thread counts side by side
    python benchmarks/bench_inference.py --solvers auto   # only what `sparsort sort` would use here

For each case (the 1-channel 10 kHz demo and the 4-channel 30 kHz tetrode
preset, cut to the given duration: rates do not depend on it) it builds a
SortPipeline with the default TrainingConfig (initial filters from the data,
pruned), then times

  training  `Trainer.train_step()` (engine/pipeline/training.py) (one step of the default update: a
            batch of windows coded by the tied FISTA encoder, then each filter's least-squares
            shape), a few steps after one warm-up step;
  sorting   `engine.pipeline.inference.infer_spikes` over the whole (preprocessed)
            recording with the trainer's dictionary, noise levels, dead time
            and threshold: the step `SortPipeline.sort` spends its time in; once
            per solver (dense encoder, working set), interleaved, so their
            ratio is measured under the same load. On a GPU "auto" is dense.

Prints medians (and min/max) in samples/s, × real time, and s/step, plus the
torch thread count. The dictionary used for sorting is the one after the
timed training steps, not a converged one; the sorting cost depends on its
filter count (printed), not on how good the filters are. Timings are
wall-clock on a possibly shared machine: the load average is printed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from machine_state import engine_version, load_note  # noqa: E402  (benchmarks/ is the script's folder)
from engine.pipeline.inference import SOLVERS, infer_spikes, iter_code_chunks, uses_working_set  # noqa: E402
from engine.io.recording import NumpyRecording, open_recording  # noqa: E402
from engine.evaluation.simulator import DEMO, TETRODE, demo_recording_path, simulate  # noqa: E402
from engine.pipeline.pool import capped_samples  # noqa: E402
from engine.pipeline.run import SortPipeline  # noqa: E402
from engine.pipeline.training import TrainingConfig  # noqa: E402
from engine.model.working_set import WorkingSetEncoder  # noqa: E402


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3g} (min {min(values):.3g}, max {max(values):.3g}, n={len(values)})"


def bench_case(name: str, recording, train_steps: int, repeats: int, threads: list[int],
               solvers: list[str]) -> list[dict]:
    """Times for one recording, one row per (torch thread count, solver), repeats interleaved across them."""
    config = TrainingConfig()
    started = time.perf_counter()
    trainer = SortPipeline(recording, config)
    trainer.prepare()
    setup_s = time.perf_counter() - started
    target = trainer.recording  # preprocessed, as SortPipeline.sort uses it
    n_samples = target.n_samples
    duration_s = n_samples / target.sampling_rate
    print(f"\n== {name}: {recording.n_channels} channel(s), {recording.sampling_rate / 1000:g} kHz, "
          f"{duration_s:g} s on {trainer.device_name}; prepare() {setup_s:.1f} s "
          f"(preprocess, initial filters, pruning: {trainer.initial_pruning.describe()})")
    print(f"   {trainer.model.n_filters} filters x {trainer.n_taps} taps, T={config.n_iterations}, "
          f"batch {config.batch_size} x {trainer.window} samples; a full default training of this "
          f"recording = {trainer.trainer.n_steps} steps; {load_note()}")

    def infer(solver):
        return infer_spikes(trainer.model, target, trainer.noise_levels, trainer.dead_time, trainer.lambda_,
                            solver=solver)

    step_times = {t: [] for t in threads}
    sort_times = {(t, solver): [] for t in threads for solver in solvers}
    n_events = {}
    routes = {solver: route_counts(trainer, solver) for solver in solvers}
    trainer.trainer.train_step()  # warm-up: the first call allocates
    # Interleave thread counts within each repeat, so a change in machine load hits all of them alike.
    for repeat in range(max(train_steps, repeats)):
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            if repeat < train_steps:
                step_times[n_threads].append(timed(trainer.trainer.train_step))
            for solver in solvers if repeat < repeats else ():
                started = time.perf_counter()
                n_events[solver] = len(infer(solver))
                sort_times[n_threads, solver].append(time.perf_counter() - started)
        print(f"   repeat {repeat + 1}: {load_note()}", flush=True)

    rows = []
    for n_threads, solver in sort_times:
        step_s = statistics.median(step_times[n_threads])
        sort_s = statistics.median(sort_times[n_threads, solver])
        rates = [n_samples / t for t in sort_times[n_threads, solver]]
        print(f"   threads {n_threads}: training s/step {spread(step_times[n_threads])}")
        print(f"   threads {n_threads}, {solver}: sorting s {spread(sort_times[n_threads, solver])}, samples/s "
              f"{spread(rates)}, x real time {duration_s / sort_s:.3g} ({n_events[solver]} events; {routes[solver]})")
        rows.append({
            "case": name,
            "threads": n_threads,
            "solver": solver,
            "channels": recording.n_channels,
            "fs_khz": recording.sampling_rate / 1000,
            "duration_s": duration_s,
            "filters": trainer.model.n_filters,
            "taps": trainer.n_taps,
            "step_s": step_s,
            "setup_s": setup_s,
            "sort_s": sort_s,
            "samples_per_s": n_samples / sort_s,
            "x_realtime": duration_s / sort_s,
        })
    return rows


def route_counts(trainer: SortPipeline, solver: str) -> str:
    """Which encoder took the chunks: the working set hands chunks too dense for it to the dense one."""
    if not uses_working_set(solver, trainer.device):
        return "all chunks dense"
    encoder = WorkingSetEncoder(trainer.model)
    counts = [0, 0]
    for _ in iter_code_chunks(trainer.model, trainer.recording, trainer.noise_levels,
                              int(trainer.recording.sampling_rate), solver=solver, working_set=encoder):
        pass
    return f"{encoder.sparse_chunks} chunks on the working set, {encoder.dense_chunks} dense"


def preset_estimate(row: dict, preset_s: float, config: TrainingConfig) -> tuple[int, float]:
    """(steps, seconds) a default `sort` of the full preset would take at these rates.

    Assumes the training pool is the whole recording (true for both presets:
    within capped_samples, what an epoch passes over), so steps = ceil(epochs x windows / batch).
    """
    fs = row["fs_khz"] * 1000
    window = max(config.window_for(fs), 2 * row["taps"])
    n_samples = preset_s * fs
    n_samples = min(n_samples, capped_samples(row["channels"]))
    steps = max(1, math.ceil(config.n_epochs * max(n_samples / window, 1.0) / config.batch_size))
    return steps, steps * row["step_s"] + preset_s * fs / row["samples_per_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="10 s demo, 5 s tetrode, 2 sorting repeats, 2 training steps")
    parser.add_argument("--demo-duration", type=float, default=None,
                        help="seconds of the demo to use (default 30; quick 10; the demo has 120)")
    parser.add_argument("--tetrode-duration", type=float, default=None, help="seconds (default 10; quick 5)")
    parser.add_argument("--repeats", type=int, default=None, help="sorting runs per case (default 3; quick 2)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed training steps (default 3; quick 2)")
    parser.add_argument("--only", choices=["demo", "tetrode"], action="append")
    parser.add_argument("--threads", default=None,
                        help="torch thread counts to compare side by side, e.g. 1,2 (default: torch's choice)")
    parser.add_argument("--solvers", default="dense,working-set",
                        help=f"sorting solvers to time side by side, from {', '.join(SOLVERS)} (default dense,working-set)")
    args = parser.parse_args(argv)
    solvers = args.solvers.split(",")
    for solver in solvers:
        if solver not in SOLVERS:
            parser.error(f"unknown solver {solver!r}: use {', '.join(SOLVERS)}")
    threads = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    repeats = args.repeats or (2 if args.quick else 3)
    train_steps = args.train_steps or (2 if args.quick else 3)
    demo_s = args.demo_duration or (10.0 if args.quick else 30.0)
    tetrode_s = args.tetrode_duration or (5.0 if args.quick else 10.0)
    cases = args.only or ["demo", "tetrode"]

    print(f"bench_inference: torch {torch.__version__}, torch threads {torch.get_num_threads()} by default "
          f"(interop {torch.get_num_interop_threads()}), timing with {threads}; {load_note()}")
    print(f"engine: {engine_version()}")
    rows = []
    if "demo" in cases:
        demo = open_recording(demo_recording_path())
        if demo_s * demo.sampling_rate < demo.n_samples:
            traces = np.ascontiguousarray(demo.get_traces(0, int(demo_s * demo.sampling_rate)), dtype=np.float32)
            demo = NumpyRecording(traces, demo.sampling_rate, channel_positions=demo.channel_positions)
        rows += bench_case("demo", demo, train_steps, repeats, threads, solvers)
    if "tetrode" in cases:
        traces, truth = simulate(**dict(TETRODE, duration_s=tetrode_s))
        tetrode = NumpyRecording(traces, truth.sampling_rate, channel_positions=truth.channel_positions)
        rows += bench_case("tetrode", tetrode, train_steps, repeats, threads, solvers)

    print(f"\n== Summary (medians; {load_note()})")
    config = TrainingConfig()
    presets = {"demo": DEMO["duration_s"], "tetrode": TETRODE["duration_s"]}
    header = ["case", "threads", "solver", "ch", "kHz", "timed s", "filters", "taps", "train s/step", "sort s",
              "samples/s", "x real time", "x dense", "set-up s", "preset s", "preset steps", "est. preset sort s"]
    table = []
    dense_s = {(r["case"], r["threads"]): r["sort_s"] for r in rows if r["solver"] == "dense"}
    for r in rows:
        steps, estimate = preset_estimate(r, presets[r["case"]], config)
        baseline = dense_s.get((r["case"], r["threads"]))
        versus_dense = f"{baseline / r['sort_s']:.3g}" if baseline else "-"
        table.append([r["case"], str(r["threads"]), r["solver"], str(r["channels"]), f"{r['fs_khz']:g}", f"{r['duration_s']:g}",
                      str(r["filters"]), str(r["taps"]), f"{r['step_s']:.2f}", f"{r['sort_s']:.2f}",
                      f"{r['samples_per_s']:,.0f}", f"{r['x_realtime']:.3g}", versus_dense, f"{r['setup_s']:.0f}",
                      f"{presets[r['case']]:g}", str(steps), f"{estimate:,.0f}"])
    widths = [max(len(x) for x in col) for col in zip(header, *table)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in table:
        print("  ".join(x.rjust(w) for x, w in zip(row, widths)))
    print("x dense = the dense encoder's sorting time over this row's, same case and threads (measured side by side).")
    print("est. preset sort s = preset steps x train s/step + preset samples / samples/s: training plus "
          "sorting of the full preset recording at the measured rates (set-up and pruning not included).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
