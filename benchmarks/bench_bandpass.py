"""The sort's band-pass: scipy's sosfiltfilt against the compiled filter (engine/pipeline/sos_filter.py).

Prints, for each channel count, the median wall time of --repeats band-passes of --seconds of noise
(float32, the sort's 300 Hz – 6 kHz band at 30 kHz) by scipy's sosfiltfilt (16 channels at a time,
as the engine did until stop 49) and by `sos_filtfilt`, their ratio, whether the outputs are the same
bit for bit, and then the same on one thread each of two at once (as inference reads two batches).

    python benchmarks/bench_bandpass.py [--channels 4 32 384] [--seconds 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy.signal import sosfiltfilt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine_state import engine_version, load_note, median_seconds  # noqa: E402  (benchmarks/ is the script's folder)

from engine.pipeline.preprocessing import bandpass_sos, filter_margin  # noqa: E402
from engine.pipeline.sos_filter import sos_filtfilt  # noqa: E402

SAMPLING_RATE = 30_000.0


def scipy_blocks(sos: np.ndarray, traces: np.ndarray, padlen: int) -> np.ndarray:
    """What bandpass_filter did before stop 49: scipy's filter, 16 channels at a time."""
    filtered = np.empty(traces.shape, dtype=np.float32)
    for first in range(0, traces.shape[1], 16):
        block = slice(first, first + 16)
        filtered[:, block] = sosfiltfilt(sos, traces[:, block], axis=0, padtype="odd", padlen=padlen)
    return filtered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, nargs="+", default=[4, 32, 384])
    parser.add_argument("--seconds", type=float, default=8.0, help="of traces per band-pass")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sos, padlen = bandpass_sos(SAMPLING_RATE), filter_margin(SAMPLING_RATE)
    print(f"bench_bandpass: {engine_version()}; {args.seconds:g} s at {SAMPLING_RATE:g} Hz, median of "
          f"{args.repeats}; {load_note()}")
    sos_filtfilt(sos, np.zeros((1000, 2), np.float32), 10)  # compile (or load the cache) before timing
    print(f"{'channels':>8}  {'scipy s':>8}  {'compiled s':>10}  {'ratio':>6}  {'same bits':>9}  "
          f"{'2 at once: scipy s':>18}  {'compiled s':>10}  {'ratio':>6}")
    rng = np.random.default_rng(0)
    for n_channels in args.channels:
        traces = (rng.standard_normal((int(args.seconds * SAMPLING_RATE), n_channels)) * 20).astype(np.float32)
        same = np.array_equal(scipy_blocks(sos, traces, padlen), sos_filtfilt(sos, traces, padlen))
        scipy_s = median_seconds(lambda: scipy_blocks(sos, traces, padlen), args.repeats)
        compiled_s = median_seconds(lambda: sos_filtfilt(sos, traces, padlen), args.repeats)
        with ThreadPoolExecutor(2) as pool:  # two reads at once, as inference's two batches
            scipy_two = median_seconds(lambda: list(pool.map(lambda _: scipy_blocks(sos, traces, padlen), range(2))),
                                       args.repeats)
            compiled_two = median_seconds(lambda: list(pool.map(lambda _: sos_filtfilt(sos, traces, padlen), range(2))),
                                          args.repeats)
        print(f"{n_channels:>8}  {scipy_s:>8.3f}  {compiled_s:>10.3f}  {scipy_s / compiled_s:>5.1f}x  {str(same):>9}  "
              f"{scipy_two:>18.3f}  {compiled_two:>10.3f}  {scipy_two / compiled_two:>5.1f}x")
    print(load_note())


if __name__ == "__main__":
    main()
