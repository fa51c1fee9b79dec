"""Many points of one colour, drawn in one QPainter call: the Amplitudes view's spikes.

pyqtgraph's ScatterPlotItem looks up each point's symbol in its atlas in Python
(a list of one tuple per point), 8-16 ms of the GUI thread for a unit of 4,000
spikes, every time a unit is selected. Here the points are copied into a
QPolygonF with numpy and painted by QPainter.drawPoints with a square pen
`size` pixels wide, whatever the zoom.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pyqtgraph.functions as fn
from PyQt6.QtCore import QRectF, Qt
from PyQt6.QtGui import QColor, QPainter, QPen


class PointCloudItem(pg.GraphicsObject):
    def __init__(self, size: float, colour: QColor) -> None:
        super().__init__()
        self._pen = QPen(colour, float(size))
        self._pen.setCosmetic(True)  # `size` in pixels, not in data units
        self._pen.setCapStyle(Qt.PenCapStyle.SquareCap)
        self._size = float(size)
        self._x = self._y = np.zeros(0)
        self._polygon = fn.create_qpolygonf(0)
        self._bounds = QRectF()

    def setData(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        finite = np.isfinite(x) & np.isfinite(y)
        self._x, self._y = x, y
        polygon = fn.create_qpolygonf(int(finite.sum()))
        points = fn.ndarray_from_qpolygonf(polygon)  # (n, 2) float64 view of the polygon's memory
        points[:, 0], points[:, 1] = x[finite], y[finite]
        self.prepareGeometryChange()
        self._polygon = polygon
        if len(points):
            low, high = points.min(axis=0), points.max(axis=0)
            self._bounds = QRectF(low[0], low[1], high[0] - low[0], high[1] - low[1])
        else:
            self._bounds = QRectF()
        self.informViewBoundsChanged()
        self.update()

    def getData(self) -> tuple[np.ndarray, np.ndarray]:
        return self._x, self._y

    # ---- what the ViewBox and the scene ask ------------------------------------------------------
    def dataBounds(self, axis: int, frac: float = 1.0, orthoRange=None):
        if self._bounds.isNull():
            return None, None
        if axis == 0:
            return self._bounds.left(), self._bounds.right()
        return self._bounds.top(), self._bounds.bottom()

    def pixelPadding(self) -> float:
        return self._size / 2

    def boundingRect(self) -> QRectF:
        if self._bounds.isNull():
            return QRectF()
        # The points stick out of their data bounds by half their size, in pixels.
        pixel_x, pixel_y = self.pixelVectors()
        pad_x = 0.0 if pixel_x is None else pixel_x.length() * self._size
        pad_y = 0.0 if pixel_y is None else pixel_y.length() * self._size
        return self._bounds.adjusted(-pad_x, -pad_y, pad_x, pad_y)

    def viewTransformChanged(self) -> None:
        self.prepareGeometryChange()

    def paint(self, painter: QPainter, *_args) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.setPen(self._pen)
        painter.drawPoints(self._polygon)
