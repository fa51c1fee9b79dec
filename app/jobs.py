"""Work off the GUI thread: one-shot jobs and latest-request-wins workers.

Both follow the QObject-worker-moved-to-a-QThread pattern (as Kilosort's GUI
does), and both turn an exception into a `failed(WorkError)` signal instead of
letting the thread die silently. Every thread is owned by a `ThreadKeeper`,
which can stop them all when the window closes.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from typing import Any, Callable

from PyQt6.QtCore import QObject, QThread, QTimer, pyqtSignal, pyqtSlot

from app.errors import describe_error

# A thread that has emitted `finished` is waited for this long at a time, until it has ended.
THREAD_END_WAIT_MS = 50
THREAD_END_RETRY_MS = 100
PROGRESS_INTERVAL_S = 0.1  # a job reports at most 10 times a second (a new message always goes through)
# A background job's thread runs at this nice value: the GUI thread and the readers that follow a
# click get the cores first (metrics, merge suggestions and the t-SNE map took both cores for minutes).
BACKGROUND_NICE = 19


# After the last foreground read, background jobs stay paused this long: the GUI thread draws the answer.
FOREGROUND_GRACE_S = 0.3


class ForegroundGate:
    """Whether work someone waits for is in flight: a read that follows a click or a scroll.

    Background jobs share the process, hence the GIL, with those reads and the GUI thread;
    at the lowest CPU priority, on a busy machine, a background thread holding the GIL can wait
    long for a core, and the read or the click waits with it. So background jobs pause, at their
    next `should_stop()` check, while any foreground read is in flight and for FOREGROUND_GRACE_S
    after, sleeping (without the GIL) until then. One gate per window (its EngineBridge): a read
    left unanswered when a window closed holds back no other window's jobs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._quiet_from = 0.0  # time.monotonic() after which, with nothing in flight, background may go on

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)
            self._quiet_from = time.monotonic() + FOREGROUND_GRACE_S

    def busy(self) -> bool:
        with self._lock:
            return self._in_flight > 0 or time.monotonic() < self._quiet_from

    def wait_until_quiet(self, cancel: threading.Event, poll_s: float = 0.02) -> None:
        while self.busy() and not cancel.is_set():
            time.sleep(poll_s)



def lower_thread_priority() -> None:
    """Give the calling OS thread (and the threads it starts) the lowest CPU priority.

    Linux keeps a nice value per thread, so this leaves the rest of the process alone; elsewhere
    the same call would renice the whole process, so it does nothing there.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except OSError:
        pass  # not allowed (a sandbox): the work runs at the normal priority


class JobContext:
    """What a job's function gets: a way to report progress and to notice cancellation."""

    def __init__(self, job: "Job") -> None:
        self._job = job
        self._last = (-float("inf"), None)  # (time, message) of the last report sent

    def progress(self, fraction: float, message: str = "") -> None:
        # Every report is a queued call on the GUI thread (status bar, progress bar): a job that
        # reports per batch of spikes sent hundreds a second, seconds of GUI time while opening.
        now = time.monotonic()
        if message == self._last[1] and now - self._last[0] < PROGRESS_INTERVAL_S and fraction < 1:
            return
        self._last = (now, message)
        self._job.progress.emit(float(fraction), message)

    def should_stop(self) -> bool:
        if self._job.background and self._job.gate is not None:
            self._job.gate.wait_until_quiet(self._job.cancel_event)  # a click's reads go first
        return self._job.cancel_event.is_set()


class Job(QObject):
    """Runs `work(context)` once in its own thread; emits its return value or its error."""

    progress = pyqtSignal(float, str)  # fraction 0..1, what is happening
    succeeded = pyqtSignal(object)
    failed = pyqtSignal(object)  # WorkError
    finished = pyqtSignal()  # after succeeded or failed, always

    def __init__(self, title: str, work: Callable[[JobContext], Any], background: bool = False,
                 gate: ForegroundGate | None = None) -> None:
        super().__init__()
        self.title = title  # e.g. "Opening recording", shown with the progress bar
        self.background = background  # runs at the lowest priority (lower_thread_priority)
        self.gate = gate  # a background job pauses while it says foreground work runs
        self.cancel_event = threading.Event()
        self._work = work

    def cancel(self) -> None:
        self.cancel_event.set()

    @pyqtSlot()
    def run(self) -> None:
        if self.background:
            lower_thread_priority()
        try:
            result = self._work(JobContext(self))
        except BaseException as error:  # noqa: BLE001 - every failure must reach the person
            self.failed.emit(describe_error(error, doing=self.title))
        else:
            self.succeeded.emit(result)
        finally:
            self.finished.emit()


class LatestRequestWorker(QObject):
    """Answers requests one at a time, skipping any that a newer request has made stale.

    For work driven by scrolling (reading a window of traces, reconstructing
    it): only the latest window matters, so older requests still waiting in
    the queue are dropped without being computed.
    """

    answered = pyqtSignal(int, object)  # request id, result
    failed = pyqtSignal(object)  # WorkError
    _requested = pyqtSignal(int, object)

    def __init__(self, title: str, work: Callable[[Any], Any], gate: ForegroundGate | None = None) -> None:
        super().__init__()
        self.title = title
        self._work = work
        self._gate = gate or ForegroundGate()  # told while a request waits for its answer
        self._latest_id = 0  # only ever written by the GUI thread; an int read is atomic
        self._requested.connect(self._answer)  # queued: this object lives in the worker thread

    def request(self, payload: Any) -> int:
        """Ask for `work(payload)`; returns the id the answer will carry."""
        self._latest_id += 1
        self._gate.enter()  # left when this request is answered or dropped (_answer runs once per request)
        self._requested.emit(self._latest_id, payload)
        return self._latest_id

    @pyqtSlot(int, object)
    def _answer(self, request_id: int, payload: Any) -> None:
        try:
            if request_id != self._latest_id:
                return
            try:
                result = self._work(payload)
            except BaseException as error:  # noqa: BLE001 - shown to the person, the worker keeps serving
                self.failed.emit(describe_error(error, doing=self.title))
                return
            self.answered.emit(request_id, result)
        finally:
            self._gate.leave()


# Threads that had not ended when their keeper was deleted (a step that cannot be interrupted):
# kept, with their workers, for the rest of the process, since deleting a running QThread aborts it.
_OUTLIVING: list[tuple[QThread, QObject]] = []
DELETED_KEEPER_WAIT_MS = 10_000


class ThreadKeeper(QObject):
    """Owns worker threads so that none outlives the window or is destroyed while running."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        # thread -> the worker living in it. Holding both Python references is what
        # keeps a running QThread from being garbage-collected mid-run.
        self._threads: dict[QThread, QObject] = {}
        # A keeper deleted without stop_all (its window deleted or collected without being closed) would
        # drop running QThreads, and Qt aborts the process ("QThread: Destroyed while thread is still
        # running"). `destroyed` comes first; its slot holds the threads, not the keeper, which is going.
        self.destroyed.connect(functools.partial(_end_threads_of_deleted_keeper, self._threads))

    def start_job(self, job: Job) -> Job:
        thread = self._new_thread(job)
        thread.started.connect(job.run)
        job.finished.connect(thread.quit)
        thread.start()
        return job

    def start_worker(self, worker: LatestRequestWorker) -> LatestRequestWorker:
        self._new_thread(worker).start()
        return worker

    def _new_thread(self, worker: QObject) -> QThread:
        thread = QThread()
        thread.setObjectName(getattr(worker, "title", "worker"))
        worker.moveToThread(thread)
        self._threads[thread] = worker
        thread.finished.connect(self._on_thread_finished)  # queued back to this (GUI) thread
        return thread

    @pyqtSlot()
    def _on_thread_finished(self) -> None:
        thread = self.sender()
        if isinstance(thread, QThread):
            self._forget_when_ended(thread)

    def _forget_when_ended(self, thread: QThread) -> None:
        # QThread emits `finished` from its own thread just before that thread ends; dropping our
        # reference deletes the QThread, and deleting one still running aborts the process. A
        # background thread at nice 19 on a busy CPU can take a while to take that last step
        # (CI aborted so). Waiting for it without a bound hung the GUI thread, once in a few runs of
        # the test suite: the reference is kept, and looked at again, until the thread has ended.
        if thread not in self._threads:
            return
        if thread.wait(THREAD_END_WAIT_MS):
            self._threads.pop(thread, None)
            return
        retry = QTimer(self, singleShot=True, interval=THREAD_END_RETRY_MS)  # a child: gone with the keeper
        retry.timeout.connect(lambda: (retry.deleteLater(), self._forget_when_ended(thread)))
        retry.start()

    def running(self) -> list[QThread]:
        return [thread for thread in self._threads if thread.isRunning()]

    def stop_all(self, cancel: Callable[[QObject], None], timeout_ms: int = 10_000) -> bool:
        """Cancel every worker, end every thread's loop and wait for it; True if all stopped."""
        for thread, worker in list(self._threads.items()):
            cancel(worker)
            thread.quit()
        all_stopped = all([thread.wait(timeout_ms) for thread in list(self._threads)])
        if all_stopped:
            self._threads.clear()
        return all_stopped


def _end_threads_of_deleted_keeper(threads: dict, *_destroyed) -> None:
    """Cancel every worker, end every thread's loop and wait for it; any still running is kept (_OUTLIVING)."""
    for thread, worker in list(threads.items()):
        cancel = getattr(worker, "cancel", None)
        if cancel is not None:
            cancel()
        thread.quit()
    for thread, worker in list(threads.items()):
        if not thread.wait(DELETED_KEEPER_WAIT_MS):
            _OUTLIVING.append((thread, worker))
    threads.clear()
