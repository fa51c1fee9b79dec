"""`sparsort --screenshot`: open, train a few steps, sort, picture the window, exit.

A folder that holds a sort is pictured without training.

Driven entirely by the app's own signals, so it exercises the same path a
person's clicks do (and works offscreen, for the README and for CI).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PyQt6.QtCore import QObject, QTimer

from app.state import TrainingState

WINDOW_SIZE = (1600, 1000)  # set after show(): the offscreen screen is smaller than a real one
SETTLE_MS = 1500
MAX_JOB_WAIT_MS = 180_000  # background jobs the views started (metrics, t-SNE) finish first
# A short stretch early in the recording, where single spikes and their fit are visible.
SHOWN_WINDOW_S = (0.5, 0.8)  # after sorting: time for the trace read and the reconstruction to land
TIMEOUT_MS = 15 * 60 * 1000


class ScreenshotTaker(QObject):
    def __init__(self, window, path: str, train_steps: int) -> None:
        super().__init__(window)
        self.window = window
        self.path = Path(path)
        self.train_steps = max(int(train_steps), 1)
        self.exit_code = 1  # until the picture is saved
        self._trained = False
        window.resize(*WINDOW_SIZE)
        window.opened.connect(self._on_opened)
        window.open_failed.connect(self._on_error)
        window.engine.error.connect(self._on_error)
        window.session.training_state_changed.connect(self._on_training_state)
        # A timer of its own, connected to a method (held weakly) and stopped once done: a singleShot's
        # lambda held the taker, and with it the window, for the whole quarter of an hour; inside a test
        # session that window outlived its test, and Python's exit deleted it in any order (CI: exit 139).
        self._timeout = QTimer(self, singleShot=True, interval=TIMEOUT_MS)
        self._timeout.timeout.connect(self._on_timeout)
        self._timeout.start()

    def _on_opened(self, _path: str) -> None:
        session = self.window.session
        if session.sorting is None and session.recording is not None:
            self.window.engine.start_training(session.training_config, max_steps=self.train_steps)
        else:
            # A sort (a saved session, or a phy folder from any sorter) is pictured as it is:
            # training would build a model nobody asked for, as large as the probe.
            self._settle_then_capture()

    def _on_training_state(self, state: TrainingState) -> None:
        if state == TrainingState.TRAINING:
            self._trained = True
        elif state == TrainingState.IDLE and self._trained:
            self._settle_then_capture()

    def _settle_then_capture(self) -> None:
        session = self.window.session
        if session.recording is not None:
            session.set_time_window(*SHOWN_WINDOW_S)
        if session.unit_table is not None and len(session.unit_table.unit_ids):
            # Show what selection looks like: the unit with the most spikes.
            session.select_units([int(session.unit_table.unit_ids[session.unit_table.n_spikes.argmax()])])
        QTimer.singleShot(SETTLE_MS, self._capture_when_idle)

    def _capture_when_idle(self, waited_ms: int = 0) -> None:
        if self.window.engine.jobs_running and waited_ms < MAX_JOB_WAIT_MS:
            QTimer.singleShot(SETTLE_MS, lambda: self._capture_when_idle(waited_ms + SETTLE_MS))
            return
        self._capture()

    def _capture(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.window.grab().save(str(self.path)):
            self.exit_code = 0
            print(f"screenshot saved to {self.path}")
        else:
            print(f"could not write {self.path}", file=sys.stderr)
        self._quit()

    def _on_timeout(self) -> None:
        self._give_up("timed out")

    def _on_error(self, error) -> None:
        self._give_up(f"{error.title}: {error.message}")

    def _give_up(self, reason: str) -> None:
        print(f"screenshot failed: {reason}", file=sys.stderr)
        self.exit_code = 1
        self._quit()

    def _quit(self) -> None:
        self._timeout.stop()
        self.window.close()  # the launcher ends its event loop when the window has closed
