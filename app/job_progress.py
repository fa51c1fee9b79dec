"""The status bar's progress of the running job: a bar and its title, repainted with the window.

QProgressBar.setValue repaints at once (QWidget.repaint), and a repaint paints
every part of the window waiting to be painted: each job started or advanced
while a 384-channel folder opened painted all the docks again, 0.1-0.7 s of the
GUI thread each time. This bar only asks for a paint (update) and is painted
with the rest of the window, once per turn of the event loop.
"""

from __future__ import annotations

from PyQt6.QtCore import QRectF, Qt
from PyQt6.QtGui import QPainter
from PyQt6.QtWidgets import QWidget


class JobProgress(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("job_progress")
        self.title = ""  # what runs; "" while nothing does
        self.fraction = 0.0  # 0..1

    def show_progress(self, title: str, fraction: float) -> None:
        """`fraction` < 0: nothing runs (the bar is blank)."""
        title, fraction = (title, min(max(fraction, 0.0), 1.0)) if fraction >= 0 else ("", 0.0)
        if (title, fraction) != (self.title, self.fraction):
            self.title, self.fraction = title, fraction
            self.update()

    def text(self) -> str:
        return f"{self.title} {round(100 * self.fraction)}%" if self.title else ""

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        palette = self.palette()
        frame = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        painter.setPen(palette.mid().color())
        painter.setBrush(palette.base())
        painter.drawRect(frame)
        if self.title:
            done = QRectF(frame.left(), frame.top(), frame.width() * self.fraction, frame.height())
            painter.fillRect(done, palette.highlight())
            painter.setPen(palette.text().color())
            painter.drawText(frame, Qt.AlignmentFlag.AlignCenter, self.text())
        painter.end()
