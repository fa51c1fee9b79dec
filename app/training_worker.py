"""Train, then sort, in a worker thread, reporting to the GUI through queued signals.

The worker owns the blocking phases of a `SortPipeline` (engine/pipeline/run.py):
`prepare()` (pool, initial dictionary, pruning: progress shown stage by stage),
`train()` and `sort()`. The
GUI never waits on it: it sends pause/resume/stop as thread-safe flags (the
trainer checks them between optimiser steps) and tells the worker which time
window is on screen; the worker answers with copies of small snapshots at most
every SNAPSHOT_INTERVAL_S.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from PyQt6.QtCore import QObject, pyqtSignal, pyqtSlot

from app.errors import describe_error
from app.unit_table import build_unit_table

SNAPSHOT_INTERVAL_S = 0.1  # ≤ 10 updates per second reach the views
# Reconstructing the visible window costs T FISTA steps over it, which competes
# with training for the same cores: refresh it less often than the filters, and
# never over more than a bounded stretch of data.
RECONSTRUCTION_INTERVAL_S = 0.5
MAX_RECONSTRUCTION_VALUES = 2_000_000  # samples × channels


def current_dictionary(trainer) -> tuple:
    """(filters, initial_filters) of `trainer`'s model, both (n, n_taps, n_channels); initial may be None.

    Call it in a worker: it takes the trainer's model lock. The starting filters
    are kept in the model's (n, n_channels, n_taps) layout and, once sorting has
    pruned the model, are matched to the filters it kept.
    """
    # As the person sees the recording: a whitened sort's filters unwhitened (SortPipeline.shown).
    filters = trainer.shown(trainer.filters())
    if trainer.initial_filters is None:
        return filters, None
    initial = np.asarray(trainer.initial_filters).transpose(0, 2, 1)
    if len(initial) != len(filters):
        pruning = trainer.final_pruning
        # `keep` indexes the starting filters only if the pruning decided among them.
        if len(pruning.counts) != len(initial) or len(pruning.keep) != len(filters):
            return filters, None
        initial = initial[pruning.keep]
    return filters, trainer.shown(np.ascontiguousarray(initial))


def reconstruct_visible(trainer, window: tuple[int, int]):
    """The trainer's reconstruction of (the start of) `window`, bounded in size; None if too short."""
    start, stop = window
    n_channels = trainer.recording.n_channels
    stop = min(stop, start + MAX_RECONSTRUCTION_VALUES // n_channels, trainer.recording.n_samples)
    if stop - start < trainer.n_taps:
        return None
    return trainer.reconstruct(start, stop)


class TrainingWorker(QObject):
    trainer_ready = pyqtSignal(object, object)  # engine.pipeline.run.SortPipeline, current_dictionary(it)
    snapshot = pyqtSignal(object, object)  # TrainingSnapshot, WindowReconstruction or None
    sorting_started = pyqtSignal()  # training ended (done or stopped); sorting the whole recording
    progress = pyqtSignal(float, str)  # progress 0..1 of preparing (stage by stage) or sorting
    sorted = pyqtSignal(object, object, object)  # Sorting, app.state.UnitTable, current_dictionary(trainer)
    failed = pyqtSignal(object)  # app.errors.WorkError
    finished = pyqtSignal()  # always last

    title = "Training"

    def __init__(self, recording, config, window: tuple[int, int], max_steps: int | None = None) -> None:
        """recording: the preprocessed Recording; window: visible (start, stop) samples."""
        super().__init__()
        self._recording = recording
        self._config = config
        self._max_steps = max_steps  # stop early after this many steps (screenshots, demos)
        self._window = window  # replaced whole by the GUI thread; tuple assignment is atomic
        self._trainer = None
        self._stop_requested = threading.Event()  # Stop: end training, then sort
        self._cancelled = threading.Event()  # window closing: end everything, emit nothing more
        self._last_reconstruction = -float("inf")

    # ---- called from the GUI thread ---------------------------------------------
    def set_window(self, start: int, stop: int) -> None:
        self._window = (int(start), int(stop))

    def pause(self) -> None:
        if self._trainer is not None and self._trainer.trainer is not None:
            self._trainer.trainer.pause()

    def resume(self) -> None:
        if self._trainer is not None and self._trainer.trainer is not None:
            self._trainer.trainer.resume()

    def stop(self) -> None:
        self._stop_requested.set()
        if self._trainer is not None and self._trainer.trainer is not None:
            self._trainer.trainer.stop()

    def cancel(self) -> None:
        self._cancelled.set()
        self.stop()

    # ---- the worker thread --------------------------------------------------------
    @pyqtSlot()
    def run(self) -> None:
        from engine.pipeline.run import SortPipeline

        doing = "Preparing training"
        try:
            pipeline = SortPipeline(self._recording, self._config)
            # Closing the window ends preparation; Stop pressed meanwhile ends the training that follows.
            pipeline.prepare(progress=self._on_prepare_progress, should_stop=self._cancelled.is_set)
            self._trainer = pipeline
            if self._stop_requested.is_set():
                pipeline.trainer.stop()
            self.trainer_ready.emit(pipeline, current_dictionary(pipeline))
            doing = "Training"
            pipeline.train(callback=self._on_snapshot, snapshot_interval_s=SNAPSHOT_INTERVAL_S)
            trainer = pipeline
            if self._cancelled.is_set():
                return
            doing = "Sorting"
            self.sorting_started.emit()
            sorting = trainer.sort(progress=self._on_sort_progress, should_stop=self._cancelled.is_set)
            if self._cancelled.is_set():
                return
            table = build_unit_table(sorting, trainer.recording)
            self.sorted.emit(sorting, table, current_dictionary(trainer))
        except BaseException as error:  # noqa: BLE001 - shown to the person; the app keeps running
            if not self._cancelled.is_set():
                self.failed.emit(describe_error(error, doing=doing))
        finally:
            self.finished.emit()

    def _on_snapshot(self, snapshot) -> None:
        if self._cancelled.is_set():
            return
        window = None
        now = time.perf_counter()
        if now - self._last_reconstruction >= RECONSTRUCTION_INTERVAL_S or snapshot.step == snapshot.n_steps:
            window = reconstruct_visible(self._trainer, self._window)
            self._last_reconstruction = now
        self.snapshot.emit(snapshot, window)
        if self._max_steps is not None and snapshot.step >= self._max_steps:
            self._trainer.trainer.stop()

    def _on_prepare_progress(self, stage: str, fraction: float) -> None:
        self.progress.emit(float(fraction), f"Preparing training: {stage}")

    def _on_sort_progress(self, fraction: float) -> None:
        self.progress.emit(float(fraction), "Sorting")
