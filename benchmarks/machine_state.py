"""What a benchmark's figures depend on besides the code path (machine load, engine version), and how a
command's own time and memory are read."""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} cores"


def median_seconds(action, repeats: int) -> float:
    """The median wall time of `repeats` calls of `action()`."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def engine_version() -> str:
    """The repository's commit, and whether engine/ has uncommitted changes (results depend on both)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "engine"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (" + uncommitted changes in engine/" if dirty else "")


def run_measured(command: list[str], env: dict, cwd: Path | None = None) -> tuple[float, int, float, str]:
    """Run a command; (wall seconds, exit code, the highest peak resident memory read from it in MB, its
    stderr's last line).

    The peak is the child's own VmHWM (/proc/PID/status), read every 50 ms while it runs. Not ru_maxrss:
    a child forked from this process starts with this process's pages mapped, and the kernel keeps that
    high-water mark across exec, so wait4 reported this benchmark's own size (1.5 GB) for a 1.1 GB sort.
    The sort resets VmHWM at each stage (its own per-stage peaks, in sparsort.json), so a reading can miss
    a stage's peak: bench_sort's run_sparsort_cli takes the larger of these readings and the stages' own."""
    status = None
    peak_mb = 0.0
    with tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=env, text=True, cwd=cwd)
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_mb = max(peak_mb, int(line.split()[1]) / 1024.0)
            except (OSError, ValueError):  # not Linux, or the process has just ended
                pass
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        errors.seek(0)
        lines = errors.read().strip().splitlines()
    return seconds, process.returncode, peak_mb, lines[-1] if lines else ""


def sparsort_command() -> list[str]:
    """The installed `sparsort` command, as a user types it; the module when the package is not installed."""
    import shutil
    import sys

    found = shutil.which("sparsort")
    return [found] if found else [sys.executable, "-m", "engine.cli"]


def command_peak_mb(measured_mb: float, summary: dict) -> float:
    """A `sparsort sort` command's own peak memory: the larger of run_measured's readings and the peaks
    its stages recorded in sparsort.json (the command resets its peak at each stage, so a reading can
    miss one)."""
    return max([measured_mb, *(stage.get("peak_rss_mb", 0.0) for stage in summary.get("stages", []))])
