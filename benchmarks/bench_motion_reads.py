"""What motion correction costs every read of a long, wide recording (a 2-hour Neuropixels-like probe).

    python benchmarks/bench_motion_reads.py                    # 384 channels, 2 hours, 2,000 snippets
    python benchmarks/bench_motion_reads.py --channels 64 --hours 0.5

A sort reads its recording many times after the motion estimate: whole-probe blocks (detection, the
encoder) and snippets of a few channels spread over the whole recording (templates, reassignment, the
look-alike stage). Each corrected read multiplies by an interpolation kernel of its motion time bin
(engine/pipeline/motion.py), and a 2-hour recording has 7,200 one-second bins. This times the same reads
of one recording uncorrected and corrected, side by side, repeated (medians): SpikeInterface's lazy noise
generator (nothing held in memory; its cost is in both columns), a two-column probe 20 µm per row, and a
non-rigid drift made up for it (a random walk of ±30 µm, different in each of 5 depth windows, 1-s bins,
as dredge_fast estimates). Prints the ratio, the load average and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine_state import engine_version, load_note, median_seconds  # noqa: E402

from engine.io.spikeinterface_adapter import from_spikeinterface  # noqa: E402
from engine.pipeline.motion import KERNELS_KEPT, MotionCorrectedRecording  # noqa: E402
from engine.pipeline.preprocessing import PreprocessedRecording  # noqa: E402
from engine.pipeline.stages import peak_rss_mb  # noqa: E402

RATE = 30_000.0
PITCH_UM = 20.0


def made_up_drift(hours: float, depth_um: float, seed: int):
    """SpikeInterface's Motion: a random walk (±30 µm at most) in each of 5 depth windows, 1-s bins."""
    from spikeinterface.core.motion import Motion

    rng = np.random.default_rng(seed)
    bins = np.arange(0.5, hours * 3600.0, 1.0)
    walk = np.cumsum(rng.normal(0.0, 0.5, (len(bins), 5)), axis=0)
    walk = 30.0 * walk / max(np.abs(walk).max(), 1e-9)
    return Motion([walk], [bins], np.linspace(0.0, depth_um, 5), direction="y")


def recordings(n_channels: int, hours: float, seed: int):
    """(the preprocessed recording, the same corrected): lazily generated noise, never held whole."""
    from spikeinterface.generation import NoiseGeneratorRecording

    lazy = NoiseGeneratorRecording(num_channels=n_channels, sampling_frequency=RATE, durations=[hours * 3600.0],
                                   dtype="float32", seed=seed, strategy="tile_pregenerated")
    rows = n_channels // 2
    positions = np.column_stack([np.tile([0.0, 32.0], rows), np.repeat(PITCH_UM * np.arange(rows), 2)])
    lazy.set_dummy_probe_from_locations(positions)
    plain = PreprocessedRecording(from_spikeinterface(lazy), common_reference=True)
    drift = made_up_drift(hours, PITCH_UM * rows, seed)
    return plain, MotionCorrectedRecording(plain, drift, "made-up drift")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=384, help="contacts, two columns (even)")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--snippets", type=int, default=2000, help="snippets per read, spread over the recording")
    parser.add_argument("--snippet-channels", type=int, default=24, help="channels each snippet read asks for")
    parser.add_argument("--blocks", type=int, default=5, help="1-s whole-probe blocks per read, spread out")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"bench_motion_reads: engine {engine_version()}; {load_note()}")
    plain, corrected = recordings(args.channels, args.hours, args.seed)
    rng = np.random.default_rng(args.seed)
    starts = np.sort(rng.integers(0, plain.n_samples - 100, args.snippets))
    middle = args.channels // 2
    channels = np.arange(middle - args.snippet_channels // 2, middle + args.snippet_channels // 2)
    block_starts = np.sort(rng.integers(0, plain.n_samples - int(RATE), args.blocks))
    print(f"{args.channels} channels, {args.hours:g} h, {len(corrected.motion.temporal_bins_s[0])} motion time bins; "
          f"kernels kept {KERNELS_KEPT}; {args.repeats} repeats, medians")
    print(f"{'read':44s} {'uncorrected s':>13s} {'corrected s':>11s} {'ratio':>6s} {'load':>5s}")
    reads = [
        (f"{args.snippets} snippets x 60 samples x {len(channels)} channels",
         lambda recording: recording.snippets(starts, 60, channels)),
        (f"{args.blocks} whole-probe 1-s blocks",
         lambda recording: [recording.get_traces(int(s), int(s + RATE)) for s in block_starts]),
    ]
    for name, read in reads:
        uncorrected = median_seconds(lambda: read(plain), args.repeats)
        moved = median_seconds(lambda: read(corrected), args.repeats)
        print(f"{name:44s} {uncorrected:13.2f} {moved:11.2f} {moved / uncorrected:6.2f} {os.getloadavg()[0]:5.2f}",
              flush=True)
    print(f"peak resident memory of this process: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
