"""A window deleted without being closed ends its worker threads first.

Qt aborts the whole process when a QThread is destroyed while it runs ("QThread:
Destroyed while thread ... is still running"), so the deletion runs in a child
Python: without the fix, that child dies by SIGABRT instead of printing "survived".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]

# A window whose Traces dock was closed, deleted while its reconstruction thread is busy.
DELETE_WHILE_RECONSTRUCTING = """
import gc, sys, tempfile, time
from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import QApplication

QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tempfile.mkdtemp())
app = QApplication([])
from app.engine_bridge import EngineBridge
from app.main_window import MainWindow

started = []

def slow_reconstruction(request):
    started.append(True)
    time.sleep(0.5)  # a step that cannot be interrupted
    return None, None

EngineBridge._reconstruct = staticmethod(slow_reconstruction)
window = MainWindow()
window.show()
window.docks["traces"].close()
window.engine._reconstructor.request((None, (0, 1)))
deadline = time.monotonic() + 5
while not started and time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.01)
assert started, "the reconstruction never started"
del window
# The collector takes the window apart; Qt deletes PyQt's slot proxies later, from the event loop, and only
# then can the thread keeper (and the QThreads it holds) go: a few rounds of both.
for _ in range(5):
    gc.collect()
    app.processEvents()
    app.sendPostedEvents(None, 0)  # deferred deletions included
    time.sleep(0.05)
print("survived", flush=True)
"""


def test_a_window_deleted_while_its_reconstruction_runs_waits_for_its_threads_instead_of_aborting():
    environment = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPOSITORY))
    done = subprocess.run([sys.executable, "-c", DELETE_WHILE_RECONSTRUCTING], cwd=REPOSITORY, env=environment,
                          capture_output=True, text=True, timeout=120)
    assert "Destroyed while thread" not in done.stderr
    assert done.returncode == 0, done.stderr[-2000:]
    assert "survived" in done.stdout
