"""The one place where the GUI hands work to threads and takes results back.

Views and the main window ask the bridge (start training, pause, open a file,
reconstruct a window); the bridge runs the work in workers it owns and puts the
results into the Session, from the GUI thread, so views only ever react to
Session signals. Errors come back as `error(WorkError)` for the window to show.

Torch keeps its own thread count, as in `sparsort sort`: the same training runs
as fast here as there, and the GUI thread, which only draws, is scheduled
between torch's threads by the operating system.
"""

from __future__ import annotations

from typing import Any, Callable

from PyQt6 import sip
from PyQt6.QtCore import QObject, QTimer, pyqtSignal

from app.errors import WorkError
from app.jobs import ForegroundGate, Job, JobContext, LatestRequestWorker, ThreadKeeper
from app.state import Session, TrainingState
from app.training_worker import TrainingWorker, reconstruct_visible

# Scrolling emits many window changes; reconstruct once it settles.
RECONSTRUCT_DEBOUNCE_MS = 150


class EngineBridge(QObject):
    progress = pyqtSignal(str, float)  # what is running, fraction 0..1; fraction < 0: it ended
    error = pyqtSignal(object)  # WorkError, for the main window to show
    notice = pyqtSignal(str)  # what the sort changed in the recording (flat channels filled, drift undone)

    def __init__(self, session: Session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.threads = ThreadKeeper(self)
        # Reads that follow a click or a scroll (start_latest_worker) hold back background jobs.
        self.foreground = ForegroundGate()
        self._training: TrainingWorker | None = None
        self.jobs_running = 0  # one-shot jobs (run_job) not finished yet
        self._reconstructor = self.start_latest_worker("Reconstructing the visible window", self._reconstruct)
        self._reconstructor.answered.connect(self._on_reconstructed)
        self._reconstruct_timer = QTimer(self, singleShot=True, interval=RECONSTRUCT_DEBOUNCE_MS)
        self._reconstruct_timer.timeout.connect(self.request_reconstruction)
        session.time_window_changed.connect(self._on_time_window_changed)
        session.trainer_changed.connect(self._reconstruct_timer.start)

    # ---- training ------------------------------------------------------------------
    @property
    def is_training(self) -> bool:
        return self._training is not None

    def start_training(self, config, max_steps: int | None = None) -> None:
        """Train a new model on the session's recording with `config`, then sort."""
        if self._training is not None or self.session.recording is None:
            return
        worker = TrainingWorker(self.session.recording, config, self._visible_samples(), max_steps)
        worker.trainer_ready.connect(self._on_trainer_ready)
        worker.snapshot.connect(self._on_snapshot)
        worker.sorting_started.connect(lambda: self.session.set_training_state(TrainingState.SORTING))
        worker.progress.connect(lambda fraction, message: self.progress.emit(message, fraction))
        worker.sorted.connect(self._on_sorted)
        worker.failed.connect(self.error)
        worker.finished.connect(self._on_training_finished)
        self._training = worker
        self.session.set_sorting(None, None)
        self.session.set_training_state(TrainingState.STARTING)
        self.threads.start_job(worker)

    def pause_training(self) -> None:
        if self._training is not None and self.session.training_state == TrainingState.TRAINING:
            self._training.pause()
            self.session.set_training_state(TrainingState.PAUSED)

    def resume_training(self) -> None:
        if self._training is not None and self.session.training_state == TrainingState.PAUSED:
            self._training.resume()
            self.session.set_training_state(TrainingState.TRAINING)

    def stop_training(self) -> None:
        """End training now; the worker then sorts with the filters learned so far."""
        if self._training is not None:
            self._training.stop()

    def _on_trainer_ready(self, trainer, dictionary) -> None:
        self.session.set_trainer(trainer, *dictionary)
        self.session.set_training_state(TrainingState.TRAINING)
        notes = "; ".join(trainer.recording_notes())
        if notes:
            self.notice.emit(notes[:1].upper() + notes[1:])

    def _on_snapshot(self, snapshot, window) -> None:
        self.session.add_snapshot(snapshot)
        if window is not None:
            self.session.set_window_codes(window)

    def _on_sorted(self, sorting, unit_table, dictionary) -> None:
        self.session.set_sorting(sorting, unit_table, dictionary)
        self.progress.emit("Sorting", -1.0)

    def _on_training_finished(self) -> None:
        self._training = None
        self.session.set_training_state(TrainingState.IDLE)
        self.progress.emit("Sorting", -1.0)
        self.request_reconstruction()

    # ---- the visible window's codes and reconstruction ---------------------------
    def _visible_samples(self) -> tuple[int, int]:
        start_s, stop_s = self.session.time_window
        rate = self.session.recording.sampling_rate
        return max(int(start_s * rate), 0), int(stop_s * rate) + 1

    def _on_time_window_changed(self, start_s: float, stop_s: float) -> None:
        if self.session.recording is None:
            return
        if self._training is not None:
            self._training.set_window(*self._visible_samples())
        self._reconstruct_timer.start()

    def request_reconstruction(self) -> None:
        """Reconstruct the visible window with the current model, unless training already does."""
        trainer = self.session.trainer
        if trainer is None or self._training is not None or self.session.recording is None:
            return
        self._reconstructor.request((trainer, self._visible_samples()))

    @staticmethod
    def _reconstruct(request):
        trainer, window = request
        return trainer, reconstruct_visible(trainer, window)

    def _on_reconstructed(self, _request_id: int, result) -> None:
        trainer, window = result
        # An answer for a model that has since been replaced would show stale codes.
        if trainer is self.session.trainer and window is not None:
            self.session.set_window_codes(window)

    # ---- other work ------------------------------------------------------------------
    def run_job(
        self,
        title: str,
        work: Callable[[JobContext], Any],
        on_success: Callable[[Any], None],
        on_failure: Callable[[WorkError], None] | None = None,
        on_message: Callable[[str], None] | None = None,
        background: bool = False,
    ) -> Job:
        """Run `work(context)` in a worker; `on_success(result)` then runs in the GUI thread.

        Failures are reported through `error` (and `on_failure`, if given); the
        session is left as it was, so a failed open never loses what is loaded.
        `on_message` gets the job's progress messages (connected before it starts, so none is missed).
        `background`: work nobody waits for (metrics, suggestions, the t-SNE map), run at the lowest
        CPU priority so that a click is answered first.
        """
        job = Job(title, work, background, self.foreground)
        job.progress.connect(lambda fraction, _message: self._report(title, fraction))
        if on_message is not None:
            job.progress.connect(lambda _fraction, message: on_message(message))
        job.succeeded.connect(on_success)
        job.failed.connect(self.error)
        if on_failure is not None:
            job.failed.connect(on_failure)
        job.finished.connect(lambda: self._report(title, -1.0))
        self.jobs_running += 1
        job.finished.connect(self._on_job_finished)
        self.progress.emit(title, 0.0)
        return self.threads.start_job(job)

    def _report(self, title: str, fraction: float) -> None:
        # A job still running when the window closed reports after the bridge is gone.
        if not sip.isdeleted(self):
            self.progress.emit(title, fraction)

    def start_latest_worker(self, title: str, work: Callable[[Any], Any]) -> LatestRequestWorker:
        """A worker thread for scroll-driven reads: ask with `.request(payload)`, answers come on `.answered`."""
        worker = self.threads.start_worker(LatestRequestWorker(title, work, self.foreground))
        worker.failed.connect(self.error)
        return worker

    def _on_job_finished(self) -> None:
        self.jobs_running -= 1

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Stop every worker and wait for its thread; True when none is left running."""
        self._reconstruct_timer.stop()
        return self.threads.stop_all(_cancel_worker, timeout_ms)


def _cancel_worker(worker: QObject) -> None:
    cancel = getattr(worker, "cancel", None)
    if cancel is not None:
        cancel()
