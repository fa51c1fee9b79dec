"""Waveforms: a sample of each selected unit's spikes, and their mean, laid out as the channels sit on the probe.

Up to WAVEFORMS_PER_UNIT spikes per unit, spread evenly over the recording
(so drift widens the band rather than hiding), are read from the
preprocessed recording in a worker that answers only the latest selection:
FIRST_WAVEFORMS of them first (spread the same way, drawn at once), then the
others (a read of 100 spikes at 384 channels takes 0.1-0.3 s on shared cores),
on the neighbourhood of each unit's main channel (channels within
NEIGHBOURHOOD_UM of it, at most MAX_NEIGHBOURS; engine.curation.unit_positions).
Each channel's snippet is drawn where the channel sits: one column per
distinct x on the probe, rows at their depth, so a spike's spread over the
probe reads as it does in phy's waveform view. Each unit is drawn in its
colour, faint single spikes behind a bold mean. The plot is in ms and µV
(each channel shifted to its place), so the two scale bars read directly; a
folder that gives no gain to µV (another tool's) is drawn, and its bar
labelled, in the data file's raw units.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt

from app.palette import unit_color
from app.plot_data import lay_out_channels
from app.scale_bar import MicrovoltScaleBar, MillisecondScaleBar
from app.unit_views import UnitView, apply_range_now
from engine.curation.features import mean_template, snippet_window
from engine.curation.display_snippets import read_display_snippets
from engine.curation.unit_positions import MAX_NEIGHBOURS, main_channel, neighbourhood

MAX_UNITS = 4
WAVEFORMS_PER_UNIT = 100
MAX_CHANNELS = 2 * MAX_NEIGHBOURS  # the units' neighbourhoods together
ROW_SPACING = 1.15  # between neighbouring rows, in units of the largest mean peak-to-peak shown
COLUMN_GAP = 0.15  # between columns, as a fraction of a snippet's duration
SCALE_BAR_ROWS = 0.5  # the µV scale bar is at most this many row spacings tall
CHANNEL_LABEL_COLOUR = "#8a8c96"
CACHED_READS = 32  # units' snippets kept: going back to a unit just seen reads nothing
FIRST_WAVEFORMS = 20  # of a unit's sampled spikes, read and drawn before the rest


class SnippetCache:
    """The last CACHED_READS reads, keyed by (recording, sorting, unit, channels).

    A unit id is never reused within a curation (a merge or split makes new
    ids), so a unit's spikes, and hence its sampled snippets, never change.
    """

    def __init__(self, size: int = CACHED_READS) -> None:
        self.size = size
        self._reads: OrderedDict = OrderedDict()
        self._lock = threading.Lock()  # the GUI thread clears it; the reader thread fills it

    def get(self, key):
        with self._lock:
            if key in self._reads:
                self._reads.move_to_end(key)
                return self._reads[key]
        return None

    def put(self, key, snippets: np.ndarray) -> None:
        with self._lock:
            self._reads[key] = snippets
            while len(self._reads) > self.size:
                self._reads.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._reads.clear()


def first_rows(n_spikes: int) -> np.ndarray:
    """(≤ FIRST_WAVEFORMS,) rows of a unit's sample read first: spread evenly over it, hence over the recording."""
    return np.unique(np.linspace(0, n_spikes - 1, min(n_spikes, FIRST_WAVEFORMS)).astype(np.int64))


def _read_waveforms(request):
    """Worker: (request, [(n, length, k) µV snippets of each unit], whether they are the whole sample).

    With `first_only`, a unit not read before gets only its first_rows (the
    rest comes with the next request). engine.curation.display_snippets: on a
    long probe, only the channels shown (and a reference subset) are filtered, not all of them.
    """
    _curation, sorting, recording, unit_spikes, channels, cache, first_only = request
    before, after = snippet_window(sorting.sampling_rate)
    snippets, complete = [], True
    for unit, spikes in unit_spikes:
        key = (id(recording), id(sorting), unit, channels.tobytes())
        whole = cache.get(key)
        if whole is None:
            rows = first_rows(len(spikes))
            first = cache.get(key + ("first",))
            if first is None:
                first = read_display_snippets(recording, sorting.spike_times[spikes[rows]], channels, before, after)
                cache.put(key + ("first",), first)
            if first_only and len(rows) < len(spikes):
                snippets.append(first)
                complete = False
                continue
            whole = np.empty((len(spikes),) + first.shape[1:], dtype=np.float32)
            whole[rows] = first
            rest = np.setdiff1d(np.arange(len(spikes)), rows)
            if len(rest):
                whole[rest] = read_display_snippets(recording, sorting.spike_times[spikes[rest]], channels, before, after)
            cache.put(key, whole)
        snippets.append(whole)
    return request, snippets, complete


def channels_to_show(sorting, unit_spikes: list[tuple[int, np.ndarray]], main_channels: dict[int, int] | None = None) -> np.ndarray:
    """The units' neighbourhoods (first unit first), at most MAX_CHANNELS, top of the probe first.

    `main_channels`: unit -> its main channel where known (the Units table's); else
    it is found from the unit's mean template.
    """
    main_channels = main_channels or {}
    chosen: list[int] = []
    for unit, spikes in unit_spikes:
        centre = main_channels.get(unit)
        if centre is None:
            centre = main_channel(mean_template(sorting, spikes))
        for channel in neighbourhood(sorting.channel_positions, int(centre)).tolist():
            if channel not in chosen and len(chosen) < MAX_CHANNELS:
                chosen.append(channel)
    positions = sorting.channel_positions[chosen]
    order = np.lexsort((positions[:, 0], -positions[:, 1]))
    return np.array(chosen, dtype=np.int64)[order]


def geometry_offsets(channel_positions: np.ndarray, row_spacing: float, column_width: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) offsets of each channel's snippet: a column per distinct x (left to right), a row per distinct depth.

    channel_positions: (k, 2) µm of the channels shown. Rows are `row_spacing`
    apart, the deepest at the bottom, whatever the µm between them, so two units'
    neighbourhoods far apart on the probe still fill the view; a jump of more
    than twice the probe's row pitch leaves an empty row, so the gap still shows.
    """
    xs, ys = channel_positions[:, 0], channel_positions[:, 1]
    columns = np.unique(np.round(xs, 3), return_inverse=True)[1].reshape(-1)
    depths, row_of_channel = np.unique(np.round(ys, 3), return_inverse=True)
    steps = np.diff(depths)  # µm between neighbouring rows, shallowest... deepest in y order
    pitch = float(steps.min()) if len(steps) else 1.0
    row_steps = np.where(steps > 2 * pitch + 1e-6, 2, 1)
    row_y = np.concatenate([[0], np.cumsum(row_steps)]).astype(float)  # (n_depths,) rank, larger y higher
    row_y -= row_y.max()
    return columns * column_width, row_y[row_of_channel.reshape(-1)] * row_spacing


class WaveformsView(UnitView):
    name = "waveforms"
    title = "Waveforms"
    default_area = Qt.DockWidgetArea.RightDockWidgetArea

    def build(self) -> None:
        self.plot_widget = pg.PlotWidget()
        self.plot = self.plot_widget.getPlotItem()
        # Columns have no shared time axis: the ms bar gives the time scale, the left axis the depth.
        self.plot.hideAxis("bottom")
        self.plot.setLabel("left", "depth (µm)")
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.scale_bar = MicrovoltScaleBar(self.plot)
        self.time_bar = MillisecondScaleBar(self.plot)
        self.single_spikes: dict[int, pg.PlotCurveItem] = {}  # unit -> its sampled spikes, one curve
        self.means: dict[int, pg.PlotCurveItem] = {}  # unit -> its mean waveform
        # One label per channel place, made once and reused.
        self.channel_labels = [pg.TextItem(color=CHANNEL_LABEL_COLOUR, anchor=(0, 1)) for _ in range(MAX_CHANNELS)]
        for label in self.channel_labels:
            self.plot.addItem(label, ignoreBounds=True)
        self.channels = np.zeros(0, dtype=np.int64)  # channels drawn, top of the probe first
        self.set_content(self.plot_widget)
        self._cache = SnippetCache()
        self._cached_for = (None, None)  # (recording, sorting) the cache's reads are of
        self._reader = self.engine.start_latest_worker("Reading waveforms", _read_waveforms)
        self._reader.answered.connect(self._on_read)
        self._latest_request = 0  # id of the last request sent to the reader
        self.complete = True  # the units drawn show their whole sample of spikes (not only the first ones)

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
        channels = channels_to_show(sorting, unit_spikes, self._table_main_channels())
        if self._cached_for[0] is not self.session.recording or self._cached_for[1] is not sorting:
            # Keys hold ids: a new recording or sorting could reuse an old one's.
            self._cache.clear()
            self._cached_for = (self.session.recording, sorting)
        self.complete = False
        self._latest_request = self._reader.request(
            (self.session.curation, sorting, self.session.recording, sampled, channels, self._cache, True))

    def on_selection_changed(self, _unit_ids) -> None:
        # At once rather than posted behind the other views' redraws: the read in the worker is
        # the slowest part of a click, and it overlaps whatever the GUI thread draws meanwhile.
        self.refresh()

    def _table_main_channels(self) -> dict[int, int]:
        table = self.session.unit_table
        if table is None or table.main_channels is None:
            return {}
        return dict(zip(table.unit_ids.tolist(), table.main_channels.tolist()))

    def _on_read(self, request_id: int, result) -> None:
        request, snippets, complete = result
        curation, sorting, recording, unit_spikes, channels, _cache, _first_only = request
        session = self.session
        if curation is not session.curation or sorting is not session.sorting or recording is not session.recording:
            return  # read for a sort, curation or recording that has since been replaced
        self.show_content()
        units = [unit for unit, _ in unit_spikes]
        for unit in set(self.means) - set(units):
            self.plot.removeItem(self.means.pop(unit))
            self.plot.removeItem(self.single_spikes.pop(unit))
        means = [unit_snippets.mean(axis=0) for unit_snippets in snippets]  # each (length, k)
        row_spacing = max(ROW_SPACING * max((float(np.ptp(mean, axis=0).max()) for mean in means), default=1.0), 1e-6)
        before, _after = snippet_window(sorting.sampling_rate)
        length = snippets[0].shape[1] if snippets else 0
        time_ms = (np.arange(length) - before) * 1000.0 / sorting.sampling_rate
        duration_ms = length * 1000.0 / sorting.sampling_rate
        positions = sorting.channel_positions[channels]
        x_offsets, y_offsets = geometry_offsets(positions, row_spacing, (1 + COLUMN_GAP) * max(duration_ms, 1e-3))
        for z, (unit, unit_snippets, mean) in enumerate(zip(units, snippets, means)):
            single, mean_curve = self._curves_of(unit)
            # All of a unit's spikes in one curve: each spike × channel is one unconnected segment.
            xs, ys, connect = lay_out_channels(time_ms, unit_snippets, x_offsets, y_offsets)
            single.setData(xs, ys, connect=connect)
            xs, ys, connect = lay_out_channels(time_ms, mean[None], x_offsets, y_offsets)
            mean_curve.setData(xs, ys, connect=connect)
            # The first selected unit in front.
            single.setZValue(-2 * z - 1)
            mean_curve.setZValue(100 - z)
        self._label_channels(channels, x_offsets + time_ms[0] if length else x_offsets, y_offsets + row_spacing / 2)
        # One tick per depth, at its row's baseline.
        rows = dict(zip(np.round(positions[:, 1], 1).tolist(), y_offsets.tolist()))
        ticks = [(y, f"{depth:g}") for depth, y in sorted(rows.items())]
        self.plot.getAxis("left").setTicks([ticks[:: max(len(ticks) // 8, 1)], []])
        self.channels = channels
        self.plot.enableAutoRange()
        self.plot.autoRange()
        apply_range_now(self.plot)
        self.scale_bar.show(1.0, SCALE_BAR_ROWS * row_spacing, session.signal_units.data)  # y is in µV (or raw units)
        self.time_bar.show(1.0, 0.8 * max(duration_ms, 1e-3))  # x is in ms
        if request_id == self._latest_request:
            self.complete = complete
            if not complete:
                # The rest of the sample, unless a newer selection already asked for its own.
                self._latest_request = self._reader.request(request[:-1] + (False,))

    def _label_channels(self, channels: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> None:
        for index, label in enumerate(self.channel_labels):
            if index < len(channels):
                label.setText(str(int(channels[index])))
                label.setPos(float(xs[index]), float(ys[index]))
                label.show()
            else:
                label.hide()

    def _curves_of(self, unit: int) -> tuple[pg.PlotCurveItem, pg.PlotCurveItem]:
        if unit not in self.means:
            colour = unit_color(unit)
            self.single_spikes[unit] = pg.PlotCurveItem(pen=pg.mkPen(unit_color(unit, alpha=40), width=1))
            self.means[unit] = pg.PlotCurveItem(pen=pg.mkPen(colour, width=2.5))
            self.plot.addItem(self.single_spikes[unit])
            self.plot.addItem(self.means[unit])
        return self.single_spikes[unit], self.means[unit]
