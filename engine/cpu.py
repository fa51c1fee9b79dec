"""Sharing the CPU: how many threads torch uses, chosen from what the other programs leave free.

Measured on the 2-core machine (issue 10): with one other busy process, torch's
default of one thread per core made `sparsort sort --demo` 2.8× slower, while
one thread was only 1.3× slower. A parallel step is as slow as its slowest thread,
which here is the one sharing its core with the other program.

So while Sparsort runs, `adapt_threads()` counts the cores the *other* processes
keep busy and sets torch's thread count to the cores left. The count comes from
/proc/stat minus our own CPU time, so Sparsort's own load never makes it back off.
It is re-checked at most every `interval_s`. A person's explicit choice
(`--threads`, or the variable SPARSORT_THREADS) always wins.

How idle OpenMP threads wait is left to the runtime, on purpose. Until 2026-12-04
the engine set `OMP_WAIT_POLICY=PASSIVE` (threads sleep at once): on a quiet
machine that made each training step of a 32-channel sort 2.2× slower (11 steps:
24.5 s against 10.9 s; inference 23.0 s either way), because a step is thousands
of small parallel operations and each woke its threads from sleep. `ACTIVE` (spin
until the next operation) trained as fast but slowed inference 23 s → 33 s, whose
worker threads share the cores with the spinning ones. The runtime's default
(libgomp: spin ~300,000 times, then sleep, and spin less when threads outnumber
cores) did both at full speed; benchmarks/bench_shared_cpu.py compares them
beside busy programs.

numpy's and scipy's BLAS (OpenBLAS) get one thread while a stage runs (`one_blas_thread`).
The sort's linear algebra is many small products (a PCA per channel, a least-squares fit per
unit), where OpenBLAS's threads cost more to wake than they save, and the engine already
keeps the cores busy with its own workers and torch's threads. Measured on the 2-core
machine, 5 minutes of a 32-channel probe: the initial dictionary (a PCA and k-means per
channel) took 2.9-4.1 s with OpenBLAS's two threads and 0.86 s with one, the same filters
bit for bit; the whole sort 42.4 s against 38.2-38.7 s, the same spikes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

THREADS_VARIABLE = "SPARSORT_THREADS"
# Check the other programs' load at most this often: reading /proc/stat is cheap,
# but resizing torch's pool every step is not.
ADAPT_INTERVAL_S = 2.0
_PROC_STAT = "/proc/stat"
# The first reading of the other programs' load is taken over this long (without it the
# interval was microseconds, no reading came, and the first stage ran on every core).
FIRST_LOAD_SAMPLE_S = 0.2
# A reading whose interval began longer ago than this says what the load was then: between two sorts of a
# long-lived process (the app, a benchmark), it averaged over minutes. It is dropped, the threads stay as they
# were, and the next check, ADAPT_INTERVAL_S on, measures the present. Measured in bench_sort.py, whose peers'
# worker processes had run since the last check: each sort's first two stages got one thread (cores busy 1.00).
STALE_READING_S = 4 * ADAPT_INTERVAL_S


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run a loop of many small torch operations on one thread, then restore the count.

    A parallel operation waits for its slowest thread, and on a shared core that thread may
    wait a scheduler slice (milliseconds) for its turn: measured beside another busy process,
    100 FISTA steps on 58 k codes took 340-2400 ms on two threads and 15 ms on one. Switching
    costs about 2 µs.
    """
    import torch

    threads = torch.get_num_threads()
    if threads != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads != 1:
            torch.set_num_threads(threads)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's and scipy's BLAS on one thread inside, as it was after (see the module's notes).

    torch's threads are not touched (its BLAS is its own, and `adapt_threads` sizes it). The
    limit is the process's: a BLAS call of another thread meanwhile runs on one thread too."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def one_blas_thread_for_the_process() -> None:
    """For a program that is Sparsort (`sparsort`, `sparsort sort`): numpy's and scipy's OpenBLAS on one
    thread for the whole process, set before they load (OPENBLAS_NUM_THREADS, unless the person set it).

    The stages hold BLAS to one thread anyway (`one_blas_thread`). Starting there means their limit
    never changes OpenBLAS's thread count while another of the program's threads (the app's t-SNE, its
    curation workers) is inside a BLAS call: the count is the process's, and OpenBLAS does not promise
    that changing it under a running call is safe. A script that imports the engine keeps its own BLAS
    threads outside the stages."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _busy_and_total_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, or None where /proc/stat does not exist."""
    try:
        with open(_PROC_STAT, encoding="ascii") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


class ThreadPolicy:
    """Chooses torch's thread count from the cores other programs leave free."""

    def __init__(self, fixed: int | None = None, interval_s: float = ADAPT_INTERVAL_S) -> None:
        self.cores = available_cores()
        self.fixed = fixed
        self.interval_s = interval_s
        self._last_check = -float("inf")
        self.restart_reading()
        self.threads = fixed or self.cores
        self.other_busy_cores = 0.0  # last measured

    def other_load(self) -> float | None:
        """Cores kept busy by other processes since the last call (None without /proc/stat)."""
        ticks, own, wall = _busy_and_total_ticks(), time.process_time(), time.monotonic()
        if ticks is None or self._last_ticks is None or wall <= self._last_wall:
            return None
        busy = ticks[0] - self._last_ticks[0]
        total = ticks[1] - self._last_ticks[1]
        own_share = (own - self._last_own) / (wall - self._last_wall) / self.cores  # fraction of all CPUs
        self._last_ticks, self._last_own, self._last_wall = ticks, own, wall
        if total <= 0:
            return None
        return max(busy / total - own_share, 0.0) * self.cores

    def restart_reading(self) -> None:
        """Start the next reading of the others' load now (see STALE_READING_S)."""
        self._last_ticks, self._last_own, self._last_wall = _busy_and_total_ticks(), time.process_time(), time.monotonic()

    def choose(self, other_busy_cores: float) -> int:
        """Threads for torch when others keep `other_busy_cores` cores busy: the free cores, at least one."""
        if self.fixed is not None:
            return self.fixed
        return max(1, min(self.cores, self.cores - int(round(other_busy_cores))))

    def adapt(self, force: bool = False) -> int:
        """Re-measure (at most every interval_s) and apply; returns torch's thread count."""
        import torch

        now = time.monotonic()
        if not force and now - self._last_check < self.interval_s:
            return self.threads
        self._last_check = now
        if now - self._last_wall > STALE_READING_S:
            self.restart_reading()
            return self.threads
        load = self.other_load()
        if load is not None:
            self.other_busy_cores = load
        threads = self.choose(self.other_busy_cores)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self.threads = threads
        return threads


_policy: ThreadPolicy | None = None


def configure_threads(fixed: int | None = None) -> ThreadPolicy:
    """Install the process's thread policy: `fixed` threads, SPARSORT_THREADS, or adaptive (the default)."""
    global _policy
    if fixed is None and os.environ.get(THREADS_VARIABLE):
        try:
            fixed = int(os.environ[THREADS_VARIABLE])
        except ValueError:
            raise ValueError(f"{THREADS_VARIABLE}={os.environ[THREADS_VARIABLE]!r} is not a whole number of threads: "
                             f"unset it or give e.g. {THREADS_VARIABLE}=2") from None
    if fixed is not None and fixed < 1:
        raise ValueError(f"threads must be at least 1, got {fixed}")
    _policy = ThreadPolicy(fixed)
    if fixed is None:
        time.sleep(FIRST_LOAD_SAMPLE_S)  # the others' load needs an interval to be measured over
    _policy.adapt(force=True)
    return _policy


def adapt_threads() -> int:
    """Re-check the load and set torch's threads, installing the default policy on first use.

    The CLI and the app install theirs at start; a script that calls the engine
    directly (SortPipeline, CRsAESorter) gets the same adaptive policy here on its
    first stage. Measured: bench_learning.py, which did not install one, trained the
    demo from noise in 75.9 s beside one busy process, against 3.8 s with the policy.
    """
    policy = _policy if _policy is not None else configure_threads()
    return policy.adapt()


def cores_to_use() -> int:
    """The thread count the policy last chose (`adapt_threads`), or every core before one is installed.
    Never imports torch: reading a recording (its noise levels, in the curation views) must not."""
    return _policy.threads if _policy is not None else available_cores()


def in_order(function: Callable, items: list, workers: int) -> Iterator:
    """function(item) for each item, yielded in the items' order, with up to `workers` calls running at
    once in threads and no more than `workers` results waiting (a faint-units piece's residual is 90 MB
    at 384 channels). For work that leaves the GIL (torch, scipy's filters): independent items degrade
    gracefully when another program takes a core, no thread waiting for another."""
    if workers <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sparsort-work") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()  # those not started; the pool waits for those under way
