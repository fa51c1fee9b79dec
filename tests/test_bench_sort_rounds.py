"""bench_sort's --repeats: each sorter's times over the rounds compared by their medians, rounds paired."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_sort  # noqa: E402
from bench_sort import Result, Truth, over_recordings, speed_verdict, targets  # noqa: E402

RECORDING = "si-probe-32ch-rec4"


def truth() -> Truth:
    times = np.arange(100, 30_000, 300, dtype=np.int64)
    return Truth(RECORDING, np.zeros((30_000, 2), np.float32), 30_000.0, np.zeros((2, 2)), times,
                 np.zeros(times.size, np.int64), np.arange(1))


def result(sorter: str, seconds: float, round_index: int, hit_fraction: float = 1.0) -> Result:
    """A sort of `truth()` that found the first `hit_fraction` of its one unit's spikes."""
    gt = truth()
    found = gt.spike_times[: int(hit_fraction * gt.spike_times.size)]
    comparison = bench_sort.score(gt, found, np.zeros(found.size, np.int64), np.arange(1))
    return Result(RECORDING, sorter, seconds, comparison, round=round_index)


def test_the_verdict_is_the_medians_and_says_how_many_single_rounds_were_faster():
    ours = [result("sparsort", s, i + 1) for i, s in enumerate((40.0, 60.0, 45.0))]
    theirs = [result("tridesclous2", s, i + 1) for i, s in enumerate((50.0, 55.0, 44.0))]
    line = speed_verdict(ours, theirs)
    # Medians 45 against 50: faster, though two of the three single rounds alone were slower.
    assert "45.0 s against tridesclous2's 50.0 s" in line
    assert "medians of 3 and 3 rounds" in line and "faster in 1 of 3 single rounds" in line
    assert line.endswith(": faster")
    assert speed_verdict(ours, [result("tridesclous2", 44.0, 1)]).endswith(": SLOWER")
    assert speed_verdict(ours[:1], theirs[:1]) == "; 40.0 s against tridesclous2's 50.0 s in this run: faster"
    assert speed_verdict(ours, []) == ""


def test_targets_say_each_recording_once_over_its_rounds():
    results = [result("sparsort", 40.0, 1), result("tridesclous2", 50.0, 1),
               result("tridesclous2", 30.0, 2), result("sparsort", 42.0, 2),
               result("tridesclous2", 31.0, 3), result("sparsort", 41.0, 3)]
    lines = [line for line in targets(results) if "mean accuracy" in line and "/ sparsort" in line]
    assert len(lines) == 1
    assert "41.0 s against tridesclous2's 31.0 s" in lines[0] and lines[0].endswith(": SLOWER")
    assert "faster in 1 of 3 single rounds" in lines[0]


def test_the_table_over_recordings_compares_medians_and_counts_rounds():
    results = [result("sparsort", 40.0, 1), result("tridesclous2", 50.0, 1, 0.5),
               result("tridesclous2", 30.0, 2, 0.5), result("sparsort", 42.0, 2),
               result("tridesclous2", 45.0, 3, 0.5), result("sparsort", 41.0, 3)]
    text = over_recordings(results)
    assert "41.0" in text and "45.0" in text  # each sorter's median time
    assert ("sparsort against tridesclous2: more accurate on 1 of 1 recordings, faster on 1 of 1 "
            "(medians over the rounds; in single rounds, faster in 2 of 3)") in text



def test_a_recording_whose_first_round_failed_is_still_judged_on_the_others():
    failed = Result(RECORDING, "sparsort", 3.0, None, note="failed: MemoryError", round=1)
    results = [failed, result("tridesclous2", 50.0, 1), result("sparsort", 40.0, 2), result("tridesclous2", 45.0, 2)]
    lines = targets(results)
    assert any("no result" in line for line in lines)
    judged = [line for line in lines if "mean accuracy" in line and "/ sparsort" in line]
    assert len(judged) == 1 and "40.0 s against tridesclous2's 47.5 s" in judged[0]
