"""Turn an exception from a worker into a message a person can act on."""

from __future__ import annotations

import errno
import traceback
from dataclasses import dataclass

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QMessageBox, QWidget


@dataclass(frozen=True)
class WorkError:
    title: str  # what was being done, e.g. "Training"
    message: str  # what went wrong, in the engine's words
    advice: str  # what to do about it
    details: str  # the traceback, for a bug report


def describe_error(error: BaseException, doing: str) -> WorkError:
    return WorkError(
        title=f"{doing} failed",
        message=str(error) or type(error).__name__,
        advice=_advice_for(error),
        details="".join(traceback.format_exception(error)),
    )


def _advice_for(error: BaseException) -> str:
    # Matched by name so that this module does not import torch or the engine.
    names = {cls.__name__ for cls in type(error).__mro__}
    if "OutOfMemoryError" in names or "MemoryError" in names:
        return "Not enough memory: lower the batch size or the window length, or choose the CPU device, then start again."
    if "FloatingPointError" in names:
        return "Training diverged: lower the learning rate (or the λ scale) and start again."
    if "ConfigError" in names:
        return "Correct the highlighted value in the Training panel."
    if "RecordingError" in names:
        return "Check the file, and its sampling rate, channel count and data type (File > Open asks for them)."
    if "JournalError" in names:
        return "The curation journal named above cannot be replayed as it is; the files were left untouched."
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return "The disk is full: free some space on it, then do it again."
    if isinstance(error, OSError) and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "The folder cannot be written (read-only, or not yours): save into another folder, or fix its permissions."
    if "OSError" in names:
        return "Check that the file or folder exists and that you may read and write it."
    return "This looks like a bug. The current session was kept; the details below help to report it."


def show_error(parent: QWidget | None, error: WorkError) -> None:
    """A non-blocking error dialog: the app keeps running while it is open."""
    box = QMessageBox(QMessageBox.Icon.Critical, error.title, error.message, QMessageBox.StandardButton.Ok, parent)
    box.setInformativeText(error.advice)
    box.setDetailedText(error.details)
    box.setObjectName("error_dialog")
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
