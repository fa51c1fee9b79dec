"""The thread policy: torch gets the cores other programs leave free."""

import pytest
import torch

from engine import cpu


def test_threads_are_the_cores_left_free_and_at_least_one():
    policy = cpu.ThreadPolicy()
    policy.cores = 4
    assert policy.choose(0.0) == 4
    assert policy.choose(1.2) == 3  # one busy program takes one core
    assert policy.choose(3.9) == 1
    assert policy.choose(9.0) == 1  # never zero


def test_an_explicit_thread_count_wins(monkeypatch):
    monkeypatch.setenv(cpu.THREADS_VARIABLE, "1")
    before = torch.get_num_threads()
    try:
        policy = cpu.configure_threads()
        assert policy.choose(0.0) == 1 and torch.get_num_threads() == 1
    finally:
        cpu._policy = None
        torch.set_num_threads(before)


def test_a_bad_thread_variable_names_itself(monkeypatch):
    monkeypatch.setenv(cpu.THREADS_VARIABLE, "two")
    with pytest.raises(ValueError, match="SPARSORT_THREADS='two' is not a whole number"):
        cpu.configure_threads()


def test_other_load_excludes_our_own_work(monkeypatch):
    """Our own CPU time is not 'another program': busy ticks we caused are subtracted."""
    policy = cpu.ThreadPolicy()
    policy.cores = 2
    ticks = iter([(1000, 2000), (1100, 2200)])  # half of all CPU time busy over the interval
    monkeypatch.setattr(cpu, "_busy_and_total_ticks", lambda: next(ticks))
    policy._last_ticks = cpu._busy_and_total_ticks()
    clock = iter([10.0, 11.0])
    monkeypatch.setattr(cpu.time, "monotonic", lambda: next(clock))
    policy._last_wall = cpu.time.monotonic()
    cpu_time = iter([5.0, 6.0])  # we used one core-second in that second: all of the busy half
    monkeypatch.setattr(cpu.time, "process_time", lambda: next(cpu_time))
    policy._last_own = cpu.time.process_time()
    assert policy.other_load() == pytest.approx(0.0)


def test_single_thread_runs_on_one_and_gives_the_count_back():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cpu.single_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError):
            with cpu.single_thread():
                raise RuntimeError("the count comes back after an error too")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_engine_leaves_how_idle_openmp_threads_wait_to_the_runtime():
    # Sleeping at once (OMP_WAIT_POLICY=PASSIVE, set on import until 2026-12-04) made every
    # training step 2.2x slower on a quiet machine; engine/cpu.py has the measurement.
    import os
    import subprocess
    import sys

    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    shown = subprocess.run(
        [sys.executable, "-c", "import os, engine.cli, app; print(os.environ.get('OMP_WAIT_POLICY'))"],
        env={**environment, "QT_QPA_PLATFORM": "offscreen"}, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "None"


def test_a_stage_runs_numpys_blas_on_one_thread_and_gives_the_count_back():
    from threadpoolctl import threadpool_info, threadpool_limits

    from engine.pipeline.stages import StageLog

    def blas_threads():
        return {pool["filepath"]: pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and all(count == 2 for count in before.values())
        with StageLog().stage("a stage"):
            assert all(count == 1 for count in blas_threads().values())
        assert blas_threads() == before


@pytest.mark.parametrize("preset, expected", [(None, 1), ("2", 2)])
def test_sparsorts_own_programs_start_numpys_blas_on_one_thread_unless_the_person_chose(preset, expected):
    import os
    import subprocess
    import sys

    script = ("import sys; from engine.cpu import one_blas_thread_for_the_process; one_blas_thread_for_the_process();"
              "import numpy, scipy.linalg; from threadpoolctl import threadpool_info;"
              "print(sorted({p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}))")
    environment = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        environment["OPENBLAS_NUM_THREADS"] = preset
    printed = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                             check=True).stdout.strip()
    assert printed == f"[{expected}]"


def test_a_reading_over_a_stale_interval_is_dropped_and_the_next_measures_the_present(monkeypatch):
    """Between two sorts of a long-lived process, the last reading began minutes ago: what other programs did
    then (here a peer sorter's worker processes, all of both cores) must not decide the next sort's threads."""
    policy = cpu.ThreadPolicy()
    policy.cores, policy.threads = 2, 2
    readings = {  # clock -> (busy ticks, total ticks), our own CPU time
        0.0: ((0, 0), 0.0),
        100.0: ((20000, 20000), 0.0),  # 100 s of both cores busy, none of it ours: the stale interval
        102.5: ((20100, 20500), 1.0),  # the present: half of the CPU busy, all of it ours
    }
    now = [0.0]
    monkeypatch.setattr(cpu.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(cpu, "_busy_and_total_ticks", lambda: readings[now[0]][0])
    monkeypatch.setattr(cpu.time, "process_time", lambda: readings[now[0]][1])
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)
    policy.restart_reading()
    policy._last_check = 0.0
    now[0] = 100.0
    assert policy.adapt() == 2  # stale: dropped, not "two cores busy elsewhere"
    now[0] = 102.5
    assert policy.adapt() == 2 and policy.other_busy_cores == pytest.approx(0.0)
    # A reading over a recent interval still counts.
    readings[105.0] = ((20600, 21000), 1.0)  # all of it busy, none ours
    now[0] = 105.0
    assert policy.adapt() == 1
