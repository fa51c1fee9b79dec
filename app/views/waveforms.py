"""Waveforms: a sample of each selected unit's spikes, and their mean, on the units' best channels.

Up to WAVEFORMS_PER_UNIT spikes per unit, spread evenly over the recording
(so drift widens the band rather than hiding), are read from the
preprocessed recording in a worker that answers only the latest selection.
Channels are stacked as they sit on the probe, the top one first; each unit
is drawn in its colour, faint single spikes behind a bold mean.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt

from app.palette import unit_color
from app.plot_data import stack_channels
from app.scale_bar import MicrovoltScaleBar
from app.unit_views import UnitView
from engine.curation.features import best_channels, mean_template, read_snippets, snippet_window

MAX_UNITS = 4
WAVEFORMS_PER_UNIT = 100
CHANNELS_PER_UNIT = 4
MAX_CHANNELS = 8
CHANNEL_SPACING = 1.15  # in units of the largest mean peak-to-peak shown
SCALE_BAR_SPACINGS = 0.5  # the µV scale bar is at most this many channel spacings tall


def _read_waveforms(request):
    """Worker: (request, [(n, length, k) µV snippets of each unit])."""
    _curation, sorting, recording, unit_spikes, channels = request
    before, after = snippet_window(sorting.sampling_rate)
    snippets = [
        read_snippets(recording, sorting.spike_times[spikes], channels, before, after) for _, spikes in unit_spikes
    ]
    return request, snippets


def channels_to_show(sorting, unit_spikes: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """The best channels of the units (first unit first), at most MAX_CHANNELS, top of the probe first."""
    chosen: list[int] = []
    for _unit, spikes in unit_spikes:
        for channel in best_channels(mean_template(sorting, spikes), CHANNELS_PER_UNIT).tolist():
            if channel not in chosen and len(chosen) < MAX_CHANNELS:
                chosen.append(channel)
    depth = sorting.channel_positions[chosen, 1]
    return np.array(chosen, dtype=np.int64)[np.argsort(-depth, kind="stable")]


class WaveformsView(UnitView):
    name = "waveforms"
    title = "Waveforms"
    default_area = Qt.DockWidgetArea.RightDockWidgetArea

    def build(self) -> None:
        self.plot_widget = pg.PlotWidget()
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setLabel("bottom", "time from spike (ms)")
        self.plot.setLabel("left", "channel")
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        # The y axis names the stacked channels; the bar says how tall a µV is.
        self.scale_bar = MicrovoltScaleBar(self.plot)
        self.single_spikes: dict[int, pg.PlotCurveItem] = {}  # unit -> its sampled spikes, one curve
        self.means: dict[int, pg.PlotCurveItem] = {}  # unit -> its mean waveform
        self.channels = np.zeros(0, dtype=np.int64)  # channels drawn, top to bottom
        self.set_content(self.plot_widget)
        self._reader = self.engine.start_latest_worker("Reading waveforms", _read_waveforms)
        self._reader.answered.connect(self._on_read)

    def redraw(self) -> None:
        message = self.missing_content_message(without_raw_data="there are no waveforms to show")
        if message is not None:
            self.show_message(message)
            return
        sorting = self.session.sorting
        unit_spikes = self.selected_unit_spikes(MAX_UNITS)
        sampled = [
            (unit, spikes[np.linspace(0, len(spikes) - 1, min(len(spikes), WAVEFORMS_PER_UNIT)).astype(np.int64)])
            for unit, spikes in unit_spikes
        ]
        channels = channels_to_show(sorting, unit_spikes)
        self._reader.request((self.session.curation, sorting, self.session.recording, sampled, channels))

    def _on_read(self, _request_id: int, result) -> None:
        (curation, sorting, recording, unit_spikes, channels), snippets = result
        session = self.session
        if curation is not session.curation or sorting is not session.sorting or recording is not session.recording:
            return  # read for a sort, curation or recording that has since been replaced
        self.show_content()
        units = [unit for unit, _ in unit_spikes]
        for unit in set(self.means) - set(units):
            self.plot.removeItem(self.means.pop(unit))
            self.plot.removeItem(self.single_spikes.pop(unit))
        means = [unit_snippets.mean(axis=0) for unit_snippets in snippets]  # each (length, k)
        spacing = CHANNEL_SPACING * max((float(np.ptp(mean, axis=0).max()) for mean in means), default=1.0)
        offsets = -np.arange(len(channels)) * max(spacing, 1e-6)
        before, _after = snippet_window(sorting.sampling_rate)
        length = snippets[0].shape[1] if snippets else 0
        time_ms = (np.arange(length) - before) * 1000.0 / sorting.sampling_rate
        for z, (unit, unit_snippets, mean) in enumerate(zip(units, snippets, means)):
            single, mean_curve = self._curves_of(unit)
            # All of a unit's spikes in one curve: each spike × channel is one unconnected segment.
            stacked = unit_snippets.transpose(1, 0, 2).reshape(length, -1)  # (length, n × k)
            xs, ys, connect = stack_channels(time_ms, stacked, np.tile(offsets, len(unit_snippets)))
            single.setData(xs, ys, connect=connect)
            xs, ys, connect = stack_channels(time_ms, mean, offsets)
            mean_curve.setData(xs, ys, connect=connect)
            # The first selected unit in front.
            single.setZValue(-2 * z - 1)
            mean_curve.setZValue(100 - z)
        ticks = [(float(offset), str(channel)) for offset, channel in zip(offsets, channels.tolist())]
        self.plot.getAxis("left").setTicks([ticks, []])
        self.channels = channels
        self.plot.enableAutoRange()
        self.scale_bar.show(1.0, SCALE_BAR_SPACINGS * spacing)  # snippets are drawn in µV

    def _curves_of(self, unit: int) -> tuple[pg.PlotCurveItem, pg.PlotCurveItem]:
        if unit not in self.means:
            colour = unit_color(unit)
            self.single_spikes[unit] = pg.PlotCurveItem(pen=pg.mkPen(unit_color(unit, alpha=40), width=1))
            self.means[unit] = pg.PlotCurveItem(pen=pg.mkPen(colour, width=2.5))
            self.plot.addItem(self.single_spikes[unit])
            self.plot.addItem(self.means[unit])
        return self.single_spikes[unit], self.means[unit]
