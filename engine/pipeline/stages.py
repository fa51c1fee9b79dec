"""Running stages: what each one cost, progress a person can follow, and Stop.

`StageLog.stage(name)` wraps one stage of the sort. It tells a listener which
stage started (the app's status bar, the CLI's --verbose), and records its
wall time and peak resident memory, so `sparsort sort --verbose` can print
where a sort spends its time and memory (issue: no stage run twice unseen).
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from engine.cpu import adapt_threads, one_blas_thread


class SortStopped(Exception):
    """Raised inside long work when the person pressed Stop."""


@dataclass(frozen=True)
class StageCost:
    name: str
    seconds: float
    peak_rss_mb: float  # the process's peak resident memory while the stage ran (since it started, on Linux)
    # The process's CPU time (user + system, every thread) while the stage ran: over `seconds`, the cores
    # it kept busy; a stage near 1.0 on a 2-core machine leaves one idle (or another program took it).
    cpu_seconds: float = 0.0

    @property
    def cores_busy(self) -> float:
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (VmHWM), so the next reading is this stage's own; Linux only."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident set since the last reset (Linux) or since it started."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


@dataclass
class StageLog:
    """Costs of the stages run so far, and who to tell when one starts."""

    on_stage: Callable[[str], None] | None = None
    should_stop: Callable[[], bool] | None = None
    costs: list[StageCost] = field(default_factory=list)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.check_stop(name)
        adapt_threads()
        if self.on_stage is not None:
            self.on_stage(name)
        _reset_peak_rss()
        started, cpu_started = time.perf_counter(), time.process_time()
        with one_blas_thread():  # the engine's own workers keep the cores busy (engine/cpu.py)
            yield
        self.costs.append(StageCost(name, time.perf_counter() - started, peak_rss_mb(),
                                    time.process_time() - cpu_started))

    def check_stop(self, doing: str) -> None:
        if self.should_stop is not None and self.should_stop():
            raise SortStopped(f"stopped before {doing}")

    def table(self) -> str:
        """The costs as an aligned text table, one stage per line."""
        width = max((len(cost.name) for cost in self.costs), default=5)
        lines = [f"{'stage':<{width}}  {'time (s)':>9}  {'cores busy':>10}  {'peak RSS (MB)':>13}"]
        # A stage of a few milliseconds has a CPU time of a few clock ticks: its ratio says nothing.
        lines += [f"{c.name:<{width}}  {c.seconds:>9.2f}  "
                  f"{(f'{c.cores_busy:.2f}' if c.seconds >= 0.05 else '-'):>10}  {c.peak_rss_mb:>13.0f}"
                  for c in self.costs]
        seconds = sum(c.seconds for c in self.costs)
        cores = sum(c.cpu_seconds for c in self.costs) / seconds if seconds > 0 else 0.0
        lines.append(f"{'total':<{width}}  {seconds:>9.2f}  {cores:>10.2f}  "
                     f"{max((c.peak_rss_mb for c in self.costs), default=0.0):>13.0f}")
        return "\n".join(lines)
