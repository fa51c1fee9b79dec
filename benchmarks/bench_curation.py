"""How fast curation feels on a large sort.

    python benchmarks/bench_curation.py

Builds a sort of 1,000,000 spikes in 300 units of uneven size and times each
curation action with the on-disk journal (in a temporary folder) and without
it, then reopening a journal of a few hundred actions, correlograms of two
50,000-spike units, and a MetricsCache update after a merge. Prints the
median of several repeats beside the target; nothing here is asserted.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.curation.model import Curation  # noqa: E402
from engine.curation.metrics import MetricsCache, correlograms  # noqa: E402
from engine.pipeline.sorting import Sorting  # noqa: E402

N_SPIKES = 1_000_000
N_UNITS = 300
SAMPLING_RATE = 30_000.0  # Hz
DURATION_S = 3600.0
REPEATS = 7
REPLAY_ACTIONS = 300
TARGET_MS = 100.0


def make_sorting(rng: np.random.Generator) -> Sorting:
    # Uneven unit sizes, as in real sorts: a few big units, many small ones.
    weights = rng.dirichlet(np.full(N_UNITS, 0.7))
    spike_units = rng.choice(N_UNITS, size=N_SPIKES, p=weights)  # (n_spikes,)
    return Sorting(
        spike_times=np.sort(rng.integers(0, int(DURATION_S * SAMPLING_RATE), N_SPIKES)),  # samples
        spike_units=spike_units,
        amplitudes=rng.normal(80, 15, N_SPIKES).astype(np.float32),  # µV
        templates=rng.normal(size=(N_UNITS, 61, 32)).astype(np.float32),  # (units, taps, channels) µV
        sampling_rate=SAMPLING_RATE,
    )


def timed_ms(action: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = action()
    return result, (time.perf_counter() - start) * 1000.0


def time_actions(curation: Curation, rng: np.random.Generator) -> dict[str, list[float]]:
    """Each action REPEATS times on the live curation; ms per call."""
    names = ("merge", "undo", "redo", "split ~half a unit", "label")
    timings: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(REPEATS):
        units = curation.unit_ids
        pair = rng.choice(units, 2, replace=False)
        timings["merge"].append(timed_ms(lambda: curation.merge(pair))[1])
        timings["undo"].append(timed_ms(curation.undo)[1])
        timings["redo"].append(timed_ms(curation.redo)[1])
        spikes = curation.spikes_of(int(rng.choice(curation.unit_ids)))
        half = rng.choice(spikes, len(spikes) // 2, replace=False)
        timings["split ~half a unit"].append(timed_ms(lambda: curation.split(half))[1])
        chosen = rng.choice(curation.unit_ids, 5, replace=False)
        timings["label"].append(timed_ms(lambda: curation.label(chosen, "good"))[1])
    return timings


def fill_journal(curation: Curation, rng: np.random.Generator, n_actions: int) -> None:
    """Journal `n_actions` more actions, a realistic mix."""
    for step in range(n_actions):
        units = curation.unit_ids
        if step % 4 == 0:
            curation.merge(rng.choice(units, 2, replace=False))
        elif step % 4 == 1:
            spikes = curation.spikes_of(int(rng.choice(units)))
            curation.split(spikes[: max(1, len(spikes) // 3)])
        elif step % 4 == 2:
            curation.label(int(rng.choice(units)), "mua")
        else:
            curation.set_note(int(rng.choice(units)), f"note {step}")


def main() -> None:
    rng = np.random.default_rng(0)
    sorting = make_sorting(rng)
    print(
        f"Sort: {sorting.n_spikes:,} spikes, {sorting.n_units} units, "
        f"{DURATION_S:.0f} s at {SAMPLING_RATE:.0f} Hz"
    )
    rows: list[tuple[str, str, float, float | None]] = []  # (what, journal, median ms, target ms)

    build = [timed_ms(lambda: Curation(sorting.spike_units))[1] for _ in range(3)]
    rows.append(("build index (Curation(...))", "off", statistics.median(build), None))

    for journal_on in (False, True):
        with tempfile.TemporaryDirectory() as folder:
            if journal_on:
                curation = Curation.open(folder, sorting.spike_units)
            else:
                curation = Curation(sorting.spike_units)
            for name, values in time_actions(curation, rng).items():
                rows.append((name, "on" if journal_on else "off", statistics.median(values), TARGET_MS))
            if journal_on:
                fill_journal(curation, rng, REPLAY_ACTIONS)
                n_lines = len(Path(folder, "curation.jsonl").read_text().splitlines()) - 1
                curation.close()
                reopen = []
                for _ in range(3):
                    reopened, ms = timed_ms(lambda: Curation.open(folder, sorting.spike_units))
                    reopened.close()
                    reopen.append(ms)
                rows.append((f"reopen, replaying {n_lines} actions", "on", statistics.median(reopen), None))

    ccg_units = np.repeat([0, 1], 50_000)  # (100_000,) two units of 50,000 spikes
    ccg_times = np.sort(rng.integers(0, int(600 * SAMPLING_RATE), len(ccg_units)))  # 10 min: ~83 Hz each
    ccg_ms = [
        timed_ms(lambda: correlograms(ccg_times, ccg_units, [0, 1], SAMPLING_RATE))[1] for _ in range(REPEATS)
    ]
    rows.append(("correlograms 2 x 50k spikes (1 ms bins, 50 ms)", "-", statistics.median(ccg_ms), TARGET_MS))

    curation = Curation(sorting.spike_units)
    noise_levels = np.full(sorting.n_channels, 5.0)  # µV
    cache, build_ms = timed_ms(lambda: MetricsCache(curation, sorting, DURATION_S, noise_levels))
    rows.append(("MetricsCache build, all units (1 run)", "-", build_ms, None))
    update_ms = []
    for _ in range(REPEATS):
        record = curation.merge(rng.choice(curation.unit_ids, 2, replace=False))
        update_ms.append(timed_ms(lambda: cache.update(record))[1])
    rows.append(("MetricsCache update after a merge", "-", statistics.median(update_ms), TARGET_MS))

    print(f"\n{'what':<48} {'journal':>7} {'median ms':>10} {'target ms':>10}  within")
    for what, journal, median_ms, target in rows:
        target_text = f"{target:.0f}" if target is not None else "-"
        within = ("yes" if median_ms <= target else "NO") if target is not None else ""
        print(f"{what:<48} {journal:>7} {median_ms:>10.2f} {target_text:>10}  {within}")
    print(f"\nmedian of {REPEATS} repeats (3 for build and reopen)")


if __name__ == "__main__":
    main()
