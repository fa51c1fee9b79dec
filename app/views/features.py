"""Features: the selected units' spikes by their amplitude on the first unit's two best channels.

One point per spike (up to SPIKES_PER_UNIT per unit, spread evenly in time),
x its amplitude on the first selected unit's largest channel, y on its second
(engine.curation.channel_amplitudes), each unit in its colour: two neurons
in one unit show as two clouds, two units of one neuron as one. Read in a
worker that answers only the latest selection, through the fast display
reads (engine.curation.display_snippets), and cached per unit.

Drag a lasso around points (left button) and press K to split them off:
the split takes every spike of those units inside the lasso, the ones not
drawn included (their amplitudes are read in a worker when K is pressed).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt

from app.lasso import LassoViewBox, SpikeSelection, points_inside
from app.palette import unit_color
from app.unit_views import UnitView
from app.views.waveforms import SnippetCache
from engine.curation.channel_amplitudes import (
    amplitudes_at,
    best_channel_pair,
    channel_amplitudes,
    peak_taps,
    read_amplitude_snippets,
)
from engine.curation.features import mean_template

MAX_UNITS = 4
SPIKES_PER_UNIT = 1000


def _read_features(request):
    """Worker: (request, taps (2,), [(n, 2) µV amplitudes of each unit's sampled spikes])."""
    _curation, sorting, recording, unit_spikes, channels, cache = request
    snippets = []
    for unit, spikes in unit_spikes:
        key = ("features", id(recording), id(sorting), unit, channels.tobytes())
        unit_snippets = cache.get(key)
        if unit_snippets is None:
            unit_snippets = read_amplitude_snippets(recording, sorting.spike_times[spikes], channels, sorting.sampling_rate)
            cache.put(key, unit_snippets)
        snippets.append(unit_snippets)
    taps = peak_taps(snippets[0])  # where the first unit peaks on each channel
    return request, taps, [amplitudes_at(unit_snippets, taps) for unit_snippets in snippets]


def sample_evenly(spikes: np.ndarray, count: int) -> np.ndarray:
    """At most `count` of `spikes`, spread evenly over them (so over time: they are in time order)."""
    if len(spikes) <= count:
        return spikes
    return spikes[np.linspace(0, len(spikes) - 1, count).astype(np.int64)]


class FeaturesView(UnitView):
    name = "features"
    title = "Features"
    default_area = Qt.DockWidgetArea.LeftDockWidgetArea
    tabify_with = "embedding"  # the other cluster view with a lasso: a tab beside it and the probe

    def build(self) -> None:
        self.lasso = LassoViewBox()
        self.lasso.lasso_drawn.connect(self._on_lasso)
        self.plot_widget = pg.PlotWidget(viewBox=self.lasso)
        self.plot = self.plot_widget.getPlotItem()
        self.plot.hideButtons()
        self.scatters: dict[int, pg.ScatterPlotItem] = {}  # unit -> its drawn spikes
        # What is drawn: unit -> (spike indices, (n, 2) amplitudes); and the channels and taps they were read at.
        self.drawn: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.channels = np.zeros(0, dtype=np.int64)
        self.taps = np.zeros(0, dtype=np.int64)
        self._drawn_for = None  # the curation the drawn spikes belong to
        self.set_content(self.plot_widget)
        self._cache = SnippetCache()
        self._cached_for = (None, None)
        self._reader = self.engine.start_latest_worker("Reading spike amplitudes", _read_features)
        self._reader.answered.connect(self._on_read)

    def redraw(self) -> None:
        message = self.missing_content_message(without_raw_data="the spikes' amplitudes cannot be read")
        if message is not None:
            self.lasso.clear_lasso()
            self.show_message(message)
            return
        session, sorting = self.session, self.session.sorting
        unit_spikes = self.selected_unit_spikes(MAX_UNITS)
        channels = best_channel_pair(mean_template(sorting, unit_spikes[0][1]))
        sampled = [(unit, sample_evenly(spikes, SPIKES_PER_UNIT)) for unit, spikes in unit_spikes]
        if self._cached_for[0] is not session.recording or self._cached_for[1] is not sorting:
            self._cache.clear()
            self._cached_for = (session.recording, sorting)
        self._reader.request((session.curation, sorting, session.recording, sampled, channels, self._cache))

    def _on_read(self, _request_id: int, result) -> None:
        (curation, sorting, recording, unit_spikes, channels, _cache), taps, amplitudes = result
        session = self.session
        if curation is not session.curation or sorting is not session.sorting or recording is not session.recording:
            return  # read for a sort, curation or recording that has since been replaced
        self.show_content()
        self.channels, self.taps, self._drawn_for = channels, taps, curation
        self.drawn = {unit: (spikes, unit_amplitudes) for (unit, spikes), unit_amplitudes in zip(unit_spikes, amplitudes)}
        for unit in set(self.scatters) - set(self.drawn):
            self.plot.removeItem(self.scatters.pop(unit))
        for z, (unit, (_spikes, unit_amplitudes)) in enumerate(self.drawn.items()):
            if unit not in self.scatters:
                self.scatters[unit] = pg.ScatterPlotItem(size=3, pen=None, brush=unit_color(unit, alpha=160))
                self.plot.addItem(self.scatters[unit])
            self.scatters[unit].setData(unit_amplitudes[:, 0], unit_amplitudes[:, 1])
            self.scatters[unit].setZValue(len(self.drawn) - z)  # the first selected unit on top
        unit = self.session.signal_units.data  # µV, or the data file's raw units without a gain
        self.plot.setLabel("bottom", f"channel {int(channels[0])} ({unit})")
        self.plot.setLabel("left", f"channel {int(channels[1])} ({unit})")
        self.plot.enableAutoRange()
        self.on_spikes_selected(self.session.selected_spikes)  # a lasso drawn elsewhere goes

    # ---- lasso ---------------------------------------------------------------------------------
    def _on_lasso(self, polygon: np.ndarray) -> None:
        curation = self.session.curation
        if not self.drawn or curation is None or curation is not self._drawn_for:
            self.lasso.clear_lasso()
            return
        chosen, units, missing = [], [], {}
        for unit, (spikes, unit_amplitudes) in self.drawn.items():
            inside = spikes[points_inside(polygon, unit_amplitudes)]
            if len(inside) == 0:
                continue
            units.append(unit)
            chosen.append(inside)
            every = curation.spikes_of(unit)
            if len(every) > len(spikes):
                missing[unit] = np.setdiff1d(every, spikes, assume_unique=True)
        spikes = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
        complete = None
        if missing and len(spikes):
            recording, sorting, channels, taps = self.session.recording, self.session.sorting, self.channels, self.taps
            not_drawn = np.concatenate([missing[unit] for unit in units if unit in missing])

            def complete(progress, should_stop):
                amplitudes = channel_amplitudes(
                    recording, sorting.spike_times[not_drawn], channels, taps, sorting.sampling_rate, progress, should_stop
                )
                return np.sort(np.concatenate([spikes, not_drawn[points_inside(polygon, amplitudes)]]))

        self.session.select_spikes(SpikeSelection(spikes, tuple(units), self.name, complete))

    def on_spikes_selected(self, selection) -> None:
        if selection is None or selection.source != self.name:
            self.lasso.clear_lasso()
