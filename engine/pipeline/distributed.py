"""Sorting's chunk-parallel stage as Dask tasks, for long recordings and many of them.

Once the dictionary is learned, finding the spikes is separable over chunks:
each batch of chunks (engine/pipeline/inference.py `chunk_batches`, the same
cut the single-process sort makes) becomes one Dask task that runs the same
`ChunkSpikeFinder.batch_spikes` as `infer_spikes` does. Everything global
stays in the client: training on a sample, pruning, coincidence resolution
across chunk edges, amplitude splits, export.

What travels to a worker is small: the recording's path and the parameters
to open it (the worker memory-maps the file itself, so a cluster needs a
shared filesystem), the dictionary, noise levels, amplitude prior and solver
settings (once per worker, as one task every batch depends on), and each
batch's sample range. What comes back is the batch's spikes. A task holds
one batch of the recording in memory, so a worker's memory is bounded by
the chunk size × chunks per batch, whatever the recording's length.

Dask is an optional dependency (`pip install "sparsort[dask]"`): this module
imports without it, and says how to install it when a cluster is asked for.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from engine.io.recording import BinaryRecording, NumpyRecording, Recording, RecordingError
from engine.model.crsae import CRsAE
from engine.pipeline.inference import (
    BATCH_CHUNKS, ChunkSpikeFinder, SpikeEvents, SpikeSettings, chunk_batches, default_chunk_size,
)
from engine.pipeline.bad_channels import FlatChannels, FlatChannelsFilled
from engine.pipeline.preprocessing import PreprocessedRecording
from engine.pipeline.whitening import WhitenedRecording
from engine.pipeline.refinement import AmplitudePrior

DASK_INSTALL = 'pip install "sparsort[dask]"  (or: pip install "dask[distributed]")'
# Re-runs of a task that raised, on any worker. A worker that dies mid-task is
# counted apart, by Dask's `distributed.scheduler.allowed-failures` (default 3).
DEFAULT_RETRIES = 2


class DaskMissingError(RuntimeError):
    """A cluster was asked for but Dask's distributed scheduler is not installed."""


class ChunkFailedError(RuntimeError):
    """A batch of chunks failed on every attempt: the sort cannot complete."""


def require_distributed():
    """The `distributed` package, or an error naming the command that installs it."""
    try:
        import distributed
    except ImportError as error:
        raise DaskMissingError(
            f"sorting on a Dask cluster (--scheduler / --workers) needs Dask's distributed scheduler, "
            f"which is not installed ({error}): {DASK_INSTALL}"
        ) from None
    return distributed


@dataclass(frozen=True)
class RecordingSource:
    """How a worker opens the recording itself: its file, the parameters to read it, the preprocessing.

    Small and hashable: it travels with the sort instead of the samples.
    """

    path: str  # absolute, as every worker must see it
    kind: str  # "binary" | "npy"
    sampling_rate: float
    n_channels: int
    n_samples: int  # what the client saw: a worker seeing another file says so
    dtype: str | None = None  # binary only
    offset: int = 0
    gain_to_uv: float = 1.0
    # None: the raw recording; else (freq_min, freq_max, common_reference) of its PreprocessedRecording.
    preprocessing: tuple[float, float, bool] | None = None
    # None: not whitened; else the WhitenedRecording's (whitening, unwhitening) matrices, row by row.
    whitening: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # None: no flat channel; else (flat channels, their source channels, the weights row by row) of the
    # FlatChannelsFilled the raw recording is read through (engine/pipeline/bad_channels.py).
    flat_channels: tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...]] | None = None

    @classmethod
    def of(cls, recording: Recording) -> "RecordingSource":
        preprocessing = whitening = None
        if hasattr(recording, "motion") or hasattr(getattr(recording, "parent", None), "motion"):
            # A worker reopens the file: it would read the recording with its drift (engine/pipeline/motion.py).
            raise RecordingError("a motion-corrected recording is sorted in this process only: sort it without "
                                 "a Dask cluster, or with motion correction off")
        if isinstance(recording, WhitenedRecording):
            whitening = (tuple(recording.whitening.ravel().tolist()), tuple(recording.unwhitening.ravel().tolist()))
            recording = recording.parent
        raw = recording
        if isinstance(recording, PreprocessedRecording):
            preprocessing = (recording.freq_min, recording.freq_max, recording.common_reference)
            raw = recording.parent
        flat_channels = None
        if isinstance(raw, FlatChannelsFilled):
            flat = raw.flat
            flat_channels = (tuple(flat.channels.tolist()), tuple(flat.sources.tolist()),
                             tuple(flat.weights.ravel().tolist()))
            raw = raw.parent
        if isinstance(raw, BinaryRecording):
            return cls(str(Path(raw.path).resolve()), "binary", raw.sampling_rate, raw.n_channels, raw.n_samples,
                       raw.dtype.name, raw.offset, raw.gain_to_uv, preprocessing, whitening, flat_channels)
        if isinstance(raw, NumpyRecording) and raw.path is not None and raw.path.suffix.lower() == ".npy":
            return cls(str(Path(raw.path).resolve()), "npy", raw.sampling_rate, raw.n_channels, raw.n_samples,
                       gain_to_uv=raw.gain_to_uv, preprocessing=preprocessing, whitening=whitening,
                       flat_channels=flat_channels)
        raise RecordingError(
            f"a distributed sort reads the recording from its file on every worker, but {raw!r} is not a "
            f"raw binary or .npy file: save it with engine.io.recording.write_recording(...) and open that file, "
            f"or sort without --scheduler / --workers"
        )

    def open(self) -> Recording:
        """The recording as the client sees it, memory-mapped here (once per process)."""
        return _open_source(self)

    def _open_uncached(self) -> Recording:
        path = Path(self.path)
        if not path.exists():
            raise RecordingError(
                f"{path} does not exist on worker {socket.gethostname()}: every worker must see the recording "
                f"at the same path as the client (a shared filesystem)"
            )
        if self.kind == "binary":
            raw = BinaryRecording(path, self.sampling_rate, self.n_channels, self.dtype, self.offset, self.gain_to_uv)
        else:
            raw = NumpyRecording(np.load(path, mmap_mode="r", allow_pickle=False), self.sampling_rate,
                                 path=path, gain_to_uv=self.gain_to_uv)
        if (raw.n_samples, raw.n_channels) != (self.n_samples, self.n_channels):
            raise RecordingError(
                f"{path} on worker {socket.gethostname()} has {raw.n_samples} samples × {raw.n_channels} channels, "
                f"the client's {self.n_samples} × {self.n_channels}: every worker must see the same file "
                f"(a shared filesystem, not a copy being written)"
            )
        if self.flat_channels is not None:
            channels, sources, weights = (np.asarray(part) for part in self.flat_channels)
            raw = FlatChannelsFilled(raw, FlatChannels(
                channels.astype(np.int64), np.zeros(self.n_channels, np.float32), sources.astype(np.int64),
                weights.astype(np.float32).reshape(len(sources), len(channels))))
        if self.preprocessing is None:
            return raw
        freq_min, freq_max, common_reference = self.preprocessing
        preprocessed = PreprocessedRecording(raw, freq_min, freq_max, common_reference)
        if self.whitening is None:
            return preprocessed
        shape = (self.n_channels, self.n_channels)
        return WhitenedRecording(preprocessed, *(np.asarray(matrix, dtype=np.float32).reshape(shape)
                                                 for matrix in self.whitening))


@functools.lru_cache(maxsize=4)
def _open_source(source: RecordingSource) -> Recording:
    return source._open_uncached()


class ChunkJob:
    """What every task of one sort shares: where the recording is and how to find its spikes.

    It reaches each worker once; the worker builds the encoder (its Gram
    tensor) once per job, on first use, not once per task.
    """

    def __init__(self, source: RecordingSource, settings: SpikeSettings) -> None:
        self.source = source
        self.settings = settings
        self._finder: ChunkSpikeFinder | None = None

    def finder(self) -> ChunkSpikeFinder:
        if self._finder is None:
            self._finder = ChunkSpikeFinder(self.settings)
        return self._finder

    def __getstate__(self) -> dict:
        return {"source": self.source, "settings": self.settings, "_finder": None}


def run_batch(job: ChunkJob, batch_cores: list[tuple[int, int]]) -> list[SpikeEvents]:
    """One task: the spikes of one batch of chunks, one SpikeEvents per chunk."""
    return job.finder().batch_spikes(job.source.open(), batch_cores)


def _identity(value):
    return value


class DaskInference:
    """`infer_spikes` with each batch of chunks run as a Dask task on `client`'s cluster.

    Called like infer_spikes (SortPipeline.sort takes it as `infer=`) and gives the
    same spikes: the same batches, the same per-batch function, results put
    back in the recording's order.

    retries: re-runs of a task that raised (on any worker); a batch that
      fails every time stops the sort with a ChunkFailedError naming its
      sample range and the error.
    on_task(done, total): called as tasks finish, for progress from task counts.
    batch_function: what each task runs, `run_batch` or a wrapper around it
      (timing, logging, fault injection in tests); it must be importable on
      the workers.
    """

    def __init__(self, client, retries: int = DEFAULT_RETRIES,
                 on_task: Callable[[int, int], None] | None = None,
                 batch_function: Callable[[ChunkJob, list[tuple[int, int]]], list[SpikeEvents]] = run_batch) -> None:
        self.client = client
        self.retries = int(retries)
        self.on_task = on_task
        self.batch_function = batch_function

    def __call__(
        self,
        model: CRsAE,
        recording: Recording,
        noise_levels: np.ndarray,
        dead_time: int,
        min_amplitude: float | np.ndarray,
        chunk_size: int | None = None,
        batch_chunks: int = BATCH_CHUNKS,
        start: int = 0,
        stop: int | None = None,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        prior: AmplitudePrior | None = None,
        solver: str = "auto",
    ) -> SpikeEvents:
        distributed = require_distributed()
        source = RecordingSource.of(recording)  # refuse an in-memory recording before any work
        chunk_size = chunk_size or default_chunk_size(recording, model.n_taps)
        batches = chunk_batches(recording.n_samples, chunk_size, batch_chunks, start, stop)
        job = ChunkJob(source, SpikeSettings.of(model, noise_levels, dead_time, min_amplitude, prior, solver))
        tag = uuid.uuid4().hex[:8]
        # A task, not scattered data: if every worker holding it dies, the scheduler can make it again.
        job_future = self.client.submit(_identity, job, key=f"sparsort-job-{tag}", pure=False)
        futures = [
            self.client.submit(self.batch_function, job_future, batch_cores, retries=self.retries, pure=False,
                               key=f"sparsort-chunks-{batch_cores[0][0]}-{batch_cores[-1][1]}-{tag}")
            for batch_cores in batches
        ]
        index_of = {future.key: i for i, future in enumerate(futures)}
        results: list[list[SpikeEvents] | None] = [None] * len(futures)
        done = 0
        try:
            for future in distributed.as_completed(futures):
                i = index_of[future.key]
                if future.status != "finished":
                    raise _chunk_failure(future, batches[i], recording.sampling_rate, self.retries)
                results[i] = future.result()
                done += 1
                if self.on_task is not None:
                    self.on_task(done, len(futures))
                if progress is not None:
                    progress(done / len(futures))
                if should_stop is not None and should_stop():
                    break
        finally:
            self.client.cancel([f for f in futures if not f.done()] + [job_future])
        return SpikeEvents.concatenate([part for parts in results if parts is not None for part in parts])


def _chunk_failure(future, batch_cores: list[tuple[int, int]], sampling_rate: float, retries: int) -> ChunkFailedError:
    start, stop = batch_cores[0][0], batch_cores[-1][1]
    try:
        error = future.exception()
    except Exception as cancelled:  # a cancelled future has no exception to give
        error = cancelled
    return ChunkFailedError(
        f"samples {start}-{stop} ({start / sampling_rate:.2f}-{stop / sampling_rate:.2f} s) failed on "
        f"{retries + 1} attempts ({type(error).__name__}: {error}); the sort was stopped. "
        f"Check that the scheduler and every worker have sparsort installed and can read the recording; "
        f"raise the retries (--retries) for a flaky cluster"
    )


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int | None = None,
                say: Callable[[str], None] = lambda message: None) -> Iterator:
    """A Client of the scheduler at `scheduler`, or of a new local cluster of `n_workers` processes.

    Local workers get one thread each: the encoder's torch and numpy calls are
    what runs, and one process per core beats threads fighting over the GIL.
    """
    if (scheduler is None) == (n_workers is None):
        raise ValueError("give either a scheduler address or a number of local workers")
    distributed = require_distributed()
    if n_workers is not None:
        if n_workers < 1:
            raise ValueError(f"--workers must be at least 1, got {n_workers}")
        # Port 0: any free port for the scheduler's web server (8787 may belong to another cluster).
        with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                      dashboard_address=":0", silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            say(f"local Dask cluster: {n_workers} worker processes, 1 thread each"
                + (f"; dashboard {client.dashboard_link}" if _can_draw_dashboard() else ""))
            yield client
        return
    try:
        client = distributed.Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as error:
        raise OSError(
            f"could not reach the Dask scheduler at {scheduler} ({error}): start one with `dask scheduler` "
            f"and workers with `dask worker {scheduler} --nthreads 1`, or use --workers N for a local cluster"
        ) from None
    with client:
        n_connected = len(client.nthreads())
        if n_connected == 0:
            say(f"waiting for a worker to join {scheduler} (start one with `dask worker {scheduler} --nthreads 1`)")
            client.wait_for_workers(1)
            n_connected = len(client.nthreads())
        say(f"Dask scheduler {scheduler}: {n_connected} workers")
        yield client


def _can_draw_dashboard() -> bool:
    """Dask's dashboard needs bokeh, which the `dask` extra does not pull in."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True
