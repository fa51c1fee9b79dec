"""Scale bars for views that stack or lay out channels: µV (vertical, top right) and ms (horizontal, bottom right).

Stacked channels leave the y axis to name channels (and channels laid out by
probe geometry leave no shared time axis), so the bars are what say how tall
a µV is and how long a millisecond. They sit in data coordinates (so they
scale with the plot) and follow the visible range.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

SCALE_BAR_COLOUR = "#e0e0e0"
MARGIN = 0.015  # of the visible range, between the bar and the plot's corner


def nice_length(at_most: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above `at_most` (> 0): a scale bar's length."""
    power = 10.0 ** np.floor(np.log10(at_most))
    return float(max(step * power for step in (1.0, 2.0, 5.0) if step * power <= at_most * (1 + 1e-9)))


class MicrovoltScaleBar:
    """A vertical bar of a round number of µV, or of the data's raw units where no gain to µV is known
    (`show(..., unit=)`: app.state.SignalUnits.data); `microvolts` is its length in that unit."""

    def __init__(self, plot: pg.PlotItem) -> None:
        self.plot = plot
        self.bar = pg.PlotCurveItem(pen=pg.mkPen(SCALE_BAR_COLOUR, width=2))
        self.label = pg.TextItem(color=SCALE_BAR_COLOUR, anchor=(1.0, 0.5))
        plot.addItem(self.bar, ignoreBounds=True)
        plot.addItem(self.label, ignoreBounds=True)
        self._scale = None  # (y units per µV, longest bar in y units), or None: hidden
        self.unit = "µV"  # what the bar's number counts
        plot.sigRangeChanged.connect(lambda *_: self._place())

    def show(self, units_per_microvolt: float, longest: float, unit: str = "µV") -> None:
        """A bar of a round number of µV (or `unit`), at most `longest` tall in y units, `units_per_microvolt` y per µV."""
        self._scale = (units_per_microvolt, longest)
        self.unit = unit
        self._place()

    def hide(self) -> None:
        self._scale = None
        self._place()

    @property
    def microvolts(self) -> float | None:
        if self._scale is None:
            return None
        per_microvolt, longest = self._scale
        return nice_length(longest / per_microvolt)

    def _place(self) -> None:
        if self._scale is None or not self._scale[0] > 0 or not self._scale[1] > 0:
            self.bar.setData([], [])
            self.label.setText("")
            return
        height = self._scale[0] * self.microvolts
        (x0, x1), (y0, y1) = self.plot.viewRange()
        x = x1 - MARGIN * (x1 - x0)
        top = y1 - MARGIN * (y1 - y0)
        self.bar.setData([x, x], [top, top - height])
        self.label.setText(f"{self.microvolts:g} {self.unit}")
        self.label.setPos(x - 0.5 * MARGIN * (x1 - x0), top - height / 2)


class MillisecondScaleBar:
    """A horizontal bar of a round number of ms in the plot's bottom right corner."""

    def __init__(self, plot: pg.PlotItem) -> None:
        self.plot = plot
        self.bar = pg.PlotCurveItem(pen=pg.mkPen(SCALE_BAR_COLOUR, width=2))
        self.label = pg.TextItem(color=SCALE_BAR_COLOUR, anchor=(0.5, 1.0))
        plot.addItem(self.bar, ignoreBounds=True)
        plot.addItem(self.label, ignoreBounds=True)
        self._scale = None  # (x units per ms, longest bar in x units), or None: hidden
        plot.sigRangeChanged.connect(lambda *_: self._place())

    def show(self, units_per_millisecond: float, longest: float) -> None:
        self._scale = (units_per_millisecond, longest)
        self._place()

    @property
    def milliseconds(self) -> float | None:
        if self._scale is None:
            return None
        per_millisecond, longest = self._scale
        return nice_length(longest / per_millisecond)

    def _place(self) -> None:
        if self._scale is None or not self._scale[0] > 0 or not self._scale[1] > 0:
            self.bar.setData([], [])
            self.label.setText("")
            return
        width = self._scale[0] * self.milliseconds
        (x0, x1), (y0, y1) = self.plot.viewRange()
        right = x1 - MARGIN * (x1 - x0)
        y = y0 + MARGIN * (y1 - y0)
        self.bar.setData([right - width, right], [y, y])
        self.label.setText(f"{self.milliseconds:g} ms")
        self.label.setPos(right - width / 2, y + 0.5 * MARGIN * (y1 - y0))
