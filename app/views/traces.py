"""Traces: the preprocessed recording with the model's reconstruction and the detected spikes.

Spike markers are coloured by the unit each spike belongs to now, so they
follow merges, splits and undos, and sit on the main channel of the template
that found them. Clicking a marker selects that unit (Ctrl-click adds or
removes it).

Two ways to show the channels. Traces: a range of channels (the Channels box
sets how many), stacked; Page Up/Down, Shift+↑/↓ and Shift+wheel move the
range along the probe, and selecting a unit whose main channel is off screen
brings that channel to the middle. Heat map (as Kilosort's GUI shows its data): every
channel as one row of an image, each pixel column the sample farthest from
zero in its bin, so spikes keep their height zoomed out; chosen by itself
above HEATMAP_ABOVE_CHANNELS channels, and by the Heat map box.

Only the visible window is ever read, in a worker, and only the channels on
screen (above 64 channels the common median reference is taken over 32 of
them spread along the probe, engine.curation.display_snippets; the last 2 s
read are kept in blocks, so a scroll reads only what is new); it is reduced
there to a min/max envelope of at most
MAX_POINTS per channel; the GUI thread stacks the channels into one curve, or
fills one image, and calls setData/setImage. Dragging pans, the wheel zooms,
in time only (so do ←/→ and +/− while the view has focus); the gain box
scales the traces (or the heat map's contrast) without re-reading them, as
do Alt+↑/↓ (phy's keys); Ctrl+↑/↓ stack fewer or more channels (zoom along the
probe). "Per channel" scales each channel by the median noise σ over its own,
so a noisy or a quiet channel looks like the rest (the µV scale bar is then
true for a channel of median noise). A folder that gives no gain to µV
(another tool's phy folder) is read in the data file's raw units, and the bar
and the heat map's colour scale say so.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QRectF, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import QCheckBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSpinBox, QVBoxLayout

from app.curation_controller import starting_units
from app.palette import NEUTRAL, unit_brushes
from app.plot_data import minmax_envelope, read_envelope, signed_extremes, stack_channels
from app.scale_bar import MicrovoltScaleBar
from app.views.base import View
from engine.curation.block_cache import BlockCachedRecording
from engine.curation.display_snippets import for_views

MAX_POINTS = 3000  # per channel: about two per pixel column of a wide screen
MAX_VISIBLE_VALUES = 20_000_000  # samples × channels read for one zoomed-out view
MAX_SPIKE_MARKERS = 4000  # beyond this, markers are thinned evenly
# Distance between channel baselines, in noise σ: the noise band fills about a third
# of it, and typical spikes reach the neighbouring channel without hiding it.
CHANNEL_SPACING_SIGMAS = 20.0
RANGE_DEBOUNCE_MS = 30
SCALE_BAR_SPACINGS = 0.5  # the µV scale bar is at most this many channel spacings tall
# A spike time is its template's peak; the filtered trace may peak a few samples off it.
MARKER_SEARCH_MS = 0.3
SCROLL_FRACTION = 0.5  # of the visible window, per ← / →
ZOOM_FACTOR = 2.0  # per + / −
RECONSTRUCTION_COLOUR = (255, 179, 71, 210)  # translucent, so the data shows through
RESIDUAL_COLOUR = "#d76cff"
# Above this many channels stacked traces are thinner than a pixel's worth of signal each.
HEATMAP_ABOVE_CHANNELS = 32
VISIBLE_CHANNELS = 32  # channels stacked at once in traces mode, at first
CHANNEL_STEP_FRACTION = 0.25  # of the visible channels, per Shift+↑/↓ or Shift+wheel notch
GAIN_STEP = 1.25  # per Alt+↑/↓
CHANNEL_ZOOM_STEP = 1.5  # channels stacked, per Ctrl+↑/↓
HEATMAP_SIGMAS = 8.0  # the colour scale spans ± this many noise σ at gain 1
HEATMAP_COLOURS = "CET-D1"  # diverging: negative spikes blue, positive red, the noise pale
HEATMAP_MARKER_PX, HEATMAP_SELECTED_MARKER_PX = 5.0, 9.0
MARKER_PX = (7.0, 12.0)  # traces mode: (other units, selected units)


def _read_window(request):
    """Worker: the envelope of samples [start, stop) on `channels` (None: all of them, for the heat map),
    read through `reader`; for the heat map also its image (signed_extremes), so the GUI thread only sets it."""
    recording, reader, start, stop, channels = request
    index, reduced = read_envelope(reader, start, stop, MAX_POINTS, channels=channels)
    read = np.arange(recording.n_channels) if channels is None else np.asarray(channels)
    heat = signed_extremes(index, reduced, stop - start)[1] if channels is None else None
    return recording, start, stop, read, index, reduced, heat


def window_reader(recording):
    """How the view reads `recording`: as the curation views do (engine.curation.display_snippets.for_views:
    on a long probe the common median reference over a subset of channels, and a few channels read
    without filtering the others), from cached blocks so that scrolling reads only what is new."""
    return BlockCachedRecording(for_views(recording))


class _TracesViewBox(pg.ViewBox):
    """Shift+wheel over the plot moves along the probe instead of zooming in time.

    A ViewBox method rather than an event filter on the viewport: Qt calls a filter's Python object
    while it takes a window apart, which crashed the units table's teardown (f14ad69), and the filter
    kept this plot's menus alive after its window had gone."""

    channels_scrolled = pyqtSignal(float)  # fraction of the visible channels (positive: higher channels)

    def wheelEvent(self, event, axis=None) -> None:
        if not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            super().wheelEvent(event, axis)
            return
        event.accept()
        # Some platforms turn a Shift+wheel into a horizontal one; delta() is the notch either way.
        if event.delta():
            self.channels_scrolled.emit(-float(np.sign(event.delta())) * CHANNEL_STEP_FRACTION)


def _trace_extremes(index, reduced, positions, channels, negative, half_width: float) -> np.ndarray:
    """(n,) µV of the drawn trace at each spike: its minimum (negative spikes) or maximum near `positions`.

    index, reduced: the window's envelope (see app.plot_data.minmax_envelope); positions: (n,)
    samples from the window's start; channels: (n,) int; negative: (n,) bool. Near means within
    `half_width` samples, or the envelope point(s) covering the spike when zoomed out.
    """
    first = np.searchsorted(index, positions - half_width, side="left")
    last = np.maximum(np.searchsorted(index, positions + half_width, side="right"), first + 1)
    first = np.minimum(first, len(index) - 1)
    extremes = np.empty(len(positions), dtype=np.float32)
    for k, (lo, hi, channel) in enumerate(zip(first.tolist(), last.tolist(), channels.tolist())):
        samples = reduced[lo:hi, channel]
        extremes[k] = samples.min() if negative[k] else samples.max()
    return extremes


class TracesView(View):
    name = "traces"
    title = "Traces"
    default_area = Qt.DockWidgetArea.TopDockWidgetArea
    window_drawn = pyqtSignal()  # a window of the recording is on screen

    def build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        controls = QHBoxLayout()
        self.gain_box = QDoubleSpinBox(minimum=0.05, maximum=100.0, value=1.0, singleStep=0.25, prefix="Gain ×")
        self.gain_box.setObjectName("gain_box")
        self.gain_box.valueChanged.connect(self._redraw_cached)
        self.heatmap_box = QCheckBox("Heat map", checked=False)
        self.heatmap_box.setToolTip(
            f"Every channel as one row of colour (on by itself above {HEATMAP_ABOVE_CHANNELS} channels); "
            "off: stacked traces of a range of channels (Page Up/Down, Shift+↑/↓, Shift+wheel move it)"
        )
        self.heatmap_box.toggled.connect(self._on_mode_changed)
        self.channel_count_box = QSpinBox(minimum=1, maximum=1, value=1, prefix="Channels ")
        self.channel_count_box.setToolTip("How many channels the traces mode stacks at once")
        self.channel_count_box.valueChanged.connect(self._on_channel_count_changed)
        self.per_channel_box = QCheckBox("Per channel", checked=False)
        self.per_channel_box.setObjectName("per_channel_box")
        self.per_channel_box.setToolTip(
            "Scale each channel by the median noise σ over its own, so every channel's noise band is "
            "the same height (the µV scale bar is then true for a channel of median noise)"
        )
        self.per_channel_box.toggled.connect(self._redraw_cached)
        self.reconstruction_box = QCheckBox("Reconstruction ŷ", checked=True)
        self.residual_box = QCheckBox("Residual y − ŷ", checked=False)
        self.reconstruction_box.toggled.connect(self._draw_reconstruction)
        self.residual_box.toggled.connect(self._draw_reconstruction)
        self.window_label = QLabel()
        for widget in (self.gain_box, self.per_channel_box, self.heatmap_box, self.channel_count_box,
                       self.reconstruction_box, self.residual_box):
            controls.addWidget(widget)
        controls.addStretch(1)
        controls.addWidget(self.window_label)
        layout.addLayout(controls)

        self.viewbox = _TracesViewBox()
        self.viewbox.channels_scrolled.connect(self.scroll_channels)
        self.plot_widget = pg.PlotWidget(viewBox=self.viewbox)
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setLabel("bottom", "time", units="s")
        self.plot.setMouseEnabled(x=True, y=False)
        # The time range is the session's, never the data's extent.
        self.plot.enableAutoRange(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.image = pg.ImageItem(axisOrder="col-major")
        self.image.setColorMap(pg.colormap.get(HEATMAP_COLOURS))
        self.image.setZValue(-10)
        self.traces_curve = pg.PlotCurveItem(pen=pg.mkPen(NEUTRAL, width=1))
        self.reconstruction_curve = pg.PlotCurveItem(pen=pg.mkPen(RECONSTRUCTION_COLOUR, width=1))
        self.residual_curve = pg.PlotCurveItem(pen=pg.mkPen(RESIDUAL_COLOUR, width=1))
        self.spikes = pg.ScatterPlotItem(pxMode=True, pen=None)
        self.spikes.sigClicked.connect(self._on_spike_clicked)
        # The selected units' markers, drawn again above the others, larger and outlined: a selection
        # sets these few points instead of restyling every marker (60-150 ms at 4,000 markers).
        self.selected_markers = pg.ScatterPlotItem(pxMode=True, pen=pg.mkPen("w", width=1.5))
        self.selected_markers.sigClicked.connect(self._on_spike_clicked)
        for item in (self.image, self.traces_curve, self.residual_curve, self.reconstruction_curve, self.spikes,
                     self.selected_markers):
            self.plot.addItem(item)
        self.scale_bar = MicrovoltScaleBar(self.plot)
        layout.addWidget(self.plot_widget, 1)

        self.first_channel = 0  # top of the stacked range, in traces mode
        self._channels_of = None  # the recording the mode and channel range were chosen for
        self._cached = None  # (recording, start, stop, channels, index, reduced) of the last window read
        self._heat = (None, None)  # (the `reduced` of `_cached`, its heat-map image made in the worker)
        self._window_reader = (None, None)  # (recording, how it is read: window_reader), made once per recording
        self._main_channels = (None, None)  # (sorting, its templates' main channels)
        self._marker_sizes = MARKER_PX  # (others, selected) px of the markers drawn last
        self._reader = self.engine.start_latest_worker("Reading traces", _read_window)
        self._reader.answered.connect(self._on_window_read)
        self._range_timer = QTimer(self, singleShot=True, interval=RANGE_DEBOUNCE_MS)
        self._range_timer.timeout.connect(self._on_range_settled)
        self.plot.sigXRangeChanged.connect(lambda *_: self._range_timer.start())
        self.gain_box.valueChanged.connect(self._place_scale_bar)
        for key, action in (
            (Qt.Key.Key_Right, lambda: self.scroll(SCROLL_FRACTION)),
            (Qt.Key.Key_Left, lambda: self.scroll(-SCROLL_FRACTION)),
            (Qt.Key.Key_Plus, lambda: self.zoom(1 / ZOOM_FACTOR)),
            (Qt.Key.Key_Equal, lambda: self.zoom(1 / ZOOM_FACTOR)),
            (Qt.Key.Key_Minus, lambda: self.zoom(ZOOM_FACTOR)),
            (Qt.Key.Key_PageDown, lambda: self.scroll_channels(1.0)),
            (Qt.Key.Key_PageUp, lambda: self.scroll_channels(-1.0)),
            (Qt.Modifier.SHIFT | Qt.Key.Key_Down, lambda: self.scroll_channels(CHANNEL_STEP_FRACTION)),
            (Qt.Modifier.SHIFT | Qt.Key.Key_Up, lambda: self.scroll_channels(-CHANNEL_STEP_FRACTION)),
            (Qt.Modifier.ALT | Qt.Key.Key_Up, lambda: self.gain_box.setValue(self.gain_box.value() * GAIN_STEP)),
            (Qt.Modifier.ALT | Qt.Key.Key_Down, lambda: self.gain_box.setValue(self.gain_box.value() / GAIN_STEP)),
            (Qt.Modifier.CTRL | Qt.Key.Key_Up, lambda: self.zoom_channels(1 / CHANNEL_ZOOM_STEP)),
            (Qt.Modifier.CTRL | Qt.Key.Key_Down, lambda: self.zoom_channels(CHANNEL_ZOOM_STEP)),
        ):
            shortcut = QShortcut(QKeySequence(key), self.plot_widget, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(action)

    def scroll(self, fraction: float) -> None:
        """Move the visible window by `fraction` of its width (negative: back in time)."""
        (start_s, stop_s), _ = self.plot.viewRange()
        shift = fraction * (stop_s - start_s)
        self.plot.setXRange(start_s + shift, stop_s + shift, padding=0)

    def zoom(self, factor: float) -> None:
        """Widen (factor > 1) or narrow the visible window around its centre."""
        (start_s, stop_s), _ = self.plot.viewRange()
        centre, half = (start_s + stop_s) / 2, factor * (stop_s - start_s) / 2
        self.plot.setXRange(centre - half, centre + half, padding=0)

    def scroll_channels(self, fraction: float) -> None:
        """Move the stacked channels along the probe by `fraction` of their number (positive: higher channels)."""
        recording = self.session.recording
        if recording is None or self.is_heatmap():
            return
        count = self.channel_count_box.value()
        step = int(np.sign(fraction)) * max(int(round(abs(fraction) * count)), 1)
        first = int(np.clip(self.first_channel + step, 0, max(recording.n_channels - count, 0)))
        if first != self.first_channel:
            self.first_channel = first
            self._channels_changed()

    def zoom_channels(self, factor: float) -> None:
        """Stack `factor` times as many channels (at least one more or fewer), around the middle of those shown."""
        recording = self.session.recording
        if recording is None or self.is_heatmap():
            return
        count = self.channel_count_box.value()
        wanted = int(round(count * factor))
        wanted = max(wanted, count + 1) if factor > 1 else min(wanted, count - 1)
        wanted = int(np.clip(wanted, 1, recording.n_channels))
        middle = self.first_channel + count // 2
        self.first_channel = int(np.clip(middle - wanted // 2, 0, max(recording.n_channels - wanted, 0)))
        self.channel_count_box.setValue(wanted)  # re-reads through _on_channel_count_changed

    def channel_scales(self, channels: np.ndarray) -> np.ndarray:
        """(k,) factor each of `channels` is drawn at: 1, or median σ / its σ with Per channel on."""
        noise = getattr(self.session.recording, "noise_levels", None)
        if not self.per_channel_box.isChecked() or noise is None or len(noise) == 0:
            return np.ones(len(channels), dtype=np.float32)
        noise = np.asarray(noise, dtype=np.float32)
        return (np.median(noise) / np.maximum(noise[channels], 1e-6 * max(float(np.median(noise)), 1e-12))).astype(np.float32)

    def _scaled(self, channels: np.ndarray, reduced: np.ndarray) -> np.ndarray:
        """The envelope `reduced` (m, k) of `channels` as drawn (a copy only with Per channel on)."""
        return reduced * self.channel_scales(channels) if self.per_channel_box.isChecked() else reduced

    # ---- layout of channels ------------------------------------------------------------
    def is_heatmap(self) -> bool:
        return self.heatmap_box.isChecked()

    def visible_channels(self) -> np.ndarray:
        """(k,) channels on screen, top first: all of them in the heat map, else the stacked range."""
        n_channels = self.session.recording.n_channels
        if self.is_heatmap():
            return np.arange(n_channels)
        return np.arange(self.first_channel, min(self.first_channel + self.channel_count_box.value(), n_channels))

    def _spacing(self) -> float:
        noise = getattr(self.session.recording, "noise_levels", None)
        sigma = float(np.median(noise)) if noise is not None and len(noise) else 10.0
        return CHANNEL_SPACING_SIGMAS * max(sigma, 1e-3)

    def _offsets(self, n_rows: int | None = None) -> np.ndarray:
        """(n_rows,) y of each stacked channel's baseline, the first on top (default: the visible channels)."""
        n_rows = len(self.visible_channels()) if n_rows is None else n_rows
        return -np.arange(n_rows) * self._spacing()

    def _place_scale_bar(self, *_args) -> None:
        if self.session.recording is None or self.is_heatmap():
            self.scale_bar.hide()
            return
        self.scale_bar.show(self.gain_box.value(), SCALE_BAR_SPACINGS * self._spacing(), self.session.signal_units.data)

    def _place_channels(self) -> None:
        """The y range and the channel ticks of what is on screen now."""
        channels = self.visible_channels()
        if self.is_heatmap():
            # Channel c is the image row centred on y = -c.
            self.plot.setYRange(-(len(channels) - 0.5), 0.5, padding=0)
            positions = -channels.astype(float)
        else:
            spacing = self._spacing()
            self.plot.setYRange(-(len(channels) - 1) * spacing - 0.75 * spacing, 0.75 * spacing, padding=0)
            positions = self._offsets(len(channels))
        ticks = [(float(y), str(channel)) for y, channel in zip(positions, channels.tolist())]
        self.plot.getAxis("left").setTicks([ticks[:: max(len(ticks) // 16, 1)], []])

    # ---- reading the visible window --------------------------------------------------------
    def refresh(self) -> None:
        recording = self.session.recording
        if recording is None:
            for item in (self.traces_curve, self.reconstruction_curve, self.residual_curve):
                item.setData([], [])
            self.image.clear()
            self.spikes.setData([], [])
            self.selected_markers.setData([], [])
            self._place_scale_bar()
            self.window_label.setText("No recording")
            return
        if recording is not self._channels_of:
            self._set_up_channels(recording)
        n_channels = recording.n_channels
        longest = max(MAX_VISIBLE_VALUES / (n_channels * recording.sampling_rate), 0.01)
        self.plot.setLimits(
            xMin=0.0, xMax=recording.duration, minXRange=20 / recording.sampling_rate, maxXRange=longest
        )
        self.plot.setLabel("left", "channel")
        self._place_channels()
        self._apply_time_window(*self.session.time_window)
        self._place_scale_bar()
        self._request_visible()
        self._draw_reconstruction()

    def _apply_time_window(self, start_s: float, stop_s: float) -> None:
        (current_start, current_stop), _ = self.plot.viewRange()
        if abs(current_start - start_s) > 1e-9 or abs(current_stop - stop_s) > 1e-9:
            self.plot.setXRange(start_s, stop_s, padding=0)

    def _visible_samples(self) -> tuple[int, int]:
        recording = self.session.recording
        (start_s, stop_s), _ = self.plot.viewRange()
        start = int(np.clip(np.floor(start_s * recording.sampling_rate), 0, recording.n_samples))
        stop = int(np.clip(np.ceil(stop_s * recording.sampling_rate) + 1, start, recording.n_samples))
        return start, stop

    def _on_range_settled(self) -> None:
        if self.session.recording is None:
            return
        (start_s, stop_s), _ = self.plot.viewRange()
        self.session.set_time_window(start_s, stop_s)
        if self.is_shown():
            self._request_visible()

    def _request_visible(self) -> None:
        start, stop = self._visible_samples()
        if stop > start:
            channels = None if self.is_heatmap() else self.visible_channels()
            recording = self.session.recording
            if self._window_reader[0] is not recording:
                self._window_reader = (recording, window_reader(recording))
            self._reader.request((recording, self._window_reader[1], start, stop, channels))

    def _on_window_read(self, _request_id: int, result) -> None:
        if result[0] is not self.session.recording:
            return  # read from a recording that has since been replaced
        self._cached = result[:6]
        self._heat = (result[5], result[6])
        self._redraw_cached()

    def _on_mode_changed(self, *_args) -> None:
        self._enable_controls()
        self._channels_changed()

    def _enable_controls(self) -> None:
        stacked = not self.is_heatmap()
        for box in (self.channel_count_box, self.reconstruction_box, self.residual_box):
            box.setEnabled(stacked)

    def _set_up_channels(self, recording) -> None:
        """A new recording: the heat map above HEATMAP_ABOVE_CHANNELS, else traces from channel 0."""
        self._channels_of = recording
        self.first_channel = 0
        for box in (self.heatmap_box, self.channel_count_box):
            box.blockSignals(True)
        self.heatmap_box.setChecked(recording.n_channels > HEATMAP_ABOVE_CHANNELS)
        self.channel_count_box.setMaximum(recording.n_channels)
        self.channel_count_box.setValue(min(VISIBLE_CHANNELS, recording.n_channels))
        for box in (self.heatmap_box, self.channel_count_box):
            box.blockSignals(False)
        self._enable_controls()

    def _on_channel_count_changed(self, *_args) -> None:
        recording = self.session.recording
        if recording is not None:
            self.first_channel = min(self.first_channel, max(recording.n_channels - self.channel_count_box.value(), 0))
            self._channels_changed()

    def _channels_changed(self) -> None:
        if self.session.recording is None:
            return
        self._place_channels()
        self._place_scale_bar()
        if self.is_shown():
            self._request_visible()
        else:
            self._stale = True

    # ---- drawing -------------------------------------------------------------------------------
    def _redraw_cached(self) -> None:
        if self._cached is None or self.session.recording is None:
            return
        _recording, start, stop, channels, index, reduced = self._cached
        self.draw_window(start, stop, channels, index, self._scaled(channels, reduced))
        self._draw_reconstruction()

    def draw_window(self, start: int, stop: int, channels: np.ndarray, index: np.ndarray, reduced: np.ndarray) -> None:
        """Draw samples [start, stop) of `channels` from their envelope (as `read_envelope` returns it), and the spikes there."""
        rate = self.session.recording.sampling_rate
        n = stop - start
        points = "every sample" if len(index) >= n else f"min/max of {2 * n / len(index):.0f} samples per point"
        heatmap = len(channels) == self.session.recording.n_channels and self.is_heatmap()
        if heatmap:
            self.traces_curve.setData([], [])
            values = self._heat[1] if self._heat[0] is reduced else signed_extremes(index, reduced, n)[1]
            # Rows flipped: image row 0 is drawn lowest, and channel 0 belongs on top.
            self.image.setImage(values[:, ::-1], autoLevels=False, levels=self._heatmap_levels())
            self.image.setRect(QRectF(start / rate, -(len(channels) - 0.5), n / rate, len(channels)))
            self.image.setVisible(True)
            levels = self._heatmap_levels()[1]
            where = f"all {len(channels)} channels, colour ±{levels:.0f} {self.session.signal_units.data}"
        else:
            self.image.setVisible(False)
            xs, ys, connect = stack_channels((start + index) / rate, reduced, self._offsets(len(channels)), self.gain_box.value())
            self.traces_curve.setData(xs, ys, connect=connect, skipFiniteCheck=True)
            where = f"channels {channels[0]}–{channels[-1]} of {self.session.recording.n_channels}" if len(channels) else ""
        self.window_label.setText(f"{n / rate:.3g} s, {points}; {where}")
        self._draw_spikes(start, stop, channels, index, reduced, heatmap)
        self.window_drawn.emit()

    def _heatmap_levels(self) -> tuple[float, float]:
        noise = getattr(self.session.recording, "noise_levels", None)
        sigma = float(np.median(noise)) if noise is not None and len(noise) else 10.0
        half = HEATMAP_SIGMAS * max(sigma, 1e-3) / self.gain_box.value()
        return -half, half

    def _draw_spikes(self, start, stop, channels, index, reduced, heatmap: bool) -> None:
        sorting = self.session.sorting
        if sorting is None or sorting.n_spikes == 0 or len(channels) == 0:
            self.spikes.setData([], [])
            self.selected_markers.setData([], [])
            return
        first, last = np.searchsorted(sorting.spike_times, [start, stop])
        if self._main_channels[0] is not sorting:
            # Each template's largest channel: 30-60 ms at 500 units × 384 channels, so once per sort.
            self._main_channels = (sorting, sorting.main_channels())
        main_channels = self._main_channels[1]
        # Only spikes whose main channel is on screen: a marker belongs on its unit's main channel.
        in_window = np.arange(first, last)
        spike_channels = main_channels[sorting.spike_units[in_window]]
        chosen = in_window[(spike_channels >= channels[0]) & (spike_channels <= channels[-1])]
        if len(chosen) > MAX_SPIKE_MARKERS:
            chosen = chosen[np.linspace(0, len(chosen) - 1, MAX_SPIKE_MARKERS).astype(np.int64)]
        sort_units = sorting.spike_units[chosen]  # (n,) the sort's own unit: the template that found the spike
        units = self._units_now(chosen)  # (n,) the unit the spike belongs to now: colour, selection, click
        spike_channels = main_channels[sort_units]  # (n,) where the template that found the spike is biggest
        rows = spike_channels - channels[0]  # (n,) row of each marker's channel among those drawn
        if heatmap:
            y = -spike_channels.astype(float)
            sizes = (HEATMAP_MARKER_PX, HEATMAP_SELECTED_MARKER_PX)
        else:
            peaks = sorting.templates[np.arange(sorting.n_units), sorting.template_peak_taps, main_channels]
            half = MARKER_SEARCH_MS * 1e-3 * sorting.sampling_rate
            # A marker sits on the drawn trace, at the spike's extremum on that channel, so it points at the
            # waveform it labels whatever the folder calls an amplitude (µV here, a template scaling in Kilosort's).
            extremes = _trace_extremes(index, reduced, sorting.spike_times[chosen] - start, rows, peaks[sort_units] < 0, half)
            y = self._offsets(len(channels))[rows] + self.gain_box.value() * extremes
            sizes = MARKER_PX
        self.spikes.setData(
            x=sorting.spike_times[chosen] / sorting.sampling_rate,
            y=y,
            size=np.full(len(chosen), sizes[0]),
            brush=unit_brushes(units, alpha=230),
            data=units,
        )
        self._marker_sizes = sizes
        self._restyle_spikes()

    def _units_now(self, spikes: np.ndarray) -> np.ndarray:
        """(len(spikes),) int64 current unit of each spike: the curation's, or while it opens the id it starts from."""
        curation = self.session.curation
        if curation is not None:
            return curation.spike_clusters[spikes]
        return starting_units(self.session.sorting)[0][spikes]

    def _on_spike_clicked(self, _item, points, event) -> None:
        unit = int(points[0].data())
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            selection = [u for u in self.session.selected_units if u != unit]
            if len(selection) == len(self.session.selected_units):
                selection.append(unit)
        else:
            selection = [unit]
        self.session.select_units(selection)

    def _draw_reconstruction(self, *_args) -> None:
        window = self.session.window_codes
        stacked = not self.is_heatmap()
        show_reconstruction = self.reconstruction_box.isChecked() and stacked
        show_residual = self.residual_box.isChecked() and stacked
        self.reconstruction_curve.setVisible(show_reconstruction and window is not None)
        self.residual_curve.setVisible(show_residual and window is not None)
        if window is None or self.session.recording is None:
            return
        rate = self.session.recording.sampling_rate
        channels = self._cached[3] if self._cached is not None else self.visible_channels()
        offsets, gain = self._offsets(len(channels)), self.gain_box.value()
        scales = self.channel_scales(channels)
        for curve, wanted, values in (
            (self.reconstruction_curve, show_reconstruction, lambda: window.reconstruction[:, channels] * scales),
            (self.residual_curve, show_residual,
             lambda: (window.traces[:, channels] - window.reconstruction[:, channels]) * scales),
        ):
            if wanted:
                index, reduced = minmax_envelope(values(), MAX_POINTS)
                xs, ys, connect = stack_channels((window.start + index) / rate, reduced, offsets, gain)
                curve.setData(xs, ys, connect=connect, skipFiniteCheck=True)

    # ---- session events ---------------------------------------------------------------------------
    def on_recording_changed(self) -> None:
        self._cached = None
        self.refresh()

    def on_time_window_changed(self, start_s: float, stop_s: float) -> None:
        self._apply_time_window(start_s, stop_s)

    def on_window_codes_changed(self, _window) -> None:
        self._draw_reconstruction()

    def on_sorting_changed(self) -> None:
        self._redraw_cached()

    def on_curation_changed(self, _record) -> None:
        self._redraw_cached()

    def on_selection_changed(self, unit_ids) -> None:
        if not self._bring_into_view(unit_ids):
            self._restyle_spikes()

    def _restyle_spikes(self) -> None:
        """The selected units' markers, again, above the others: larger and outlined. Nothing else is placed
        or restyled (at 500 units and 384 channels, placing the markers again was 0.3 s of a selection)."""
        data = self.spikes.data
        selected = np.isin(data["data"].astype(np.int64), self.session.selected_units) if len(data) else np.zeros(0, bool)
        units = data["data"][selected].astype(np.int64)
        self.selected_markers.setData(
            x=data["x"][selected], y=data["y"][selected], size=np.full(len(units), self._marker_sizes[1]),
            brush=unit_brushes(units, alpha=230), data=units,
        )

    def _bring_into_view(self, unit_ids) -> bool:
        """Move the stacked range to the first selected unit's main channel when it is off screen; True if moved."""
        table, recording = self.session.unit_table, self.session.recording
        if not unit_ids or self.is_heatmap() or recording is None or table is None or table.main_channels is None:
            return False
        rows = np.flatnonzero(table.unit_ids == unit_ids[0])
        if len(rows) == 0:
            return False
        channel = int(table.main_channels[rows[0]])
        visible = self.visible_channels()
        if len(visible) and visible[0] <= channel <= visible[-1]:
            return False
        count = self.channel_count_box.value()
        self.first_channel = int(np.clip(channel - count // 2, 0, max(recording.n_channels - count, 0)))
        self._channels_changed()
        return True
