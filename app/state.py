"""The session every view looks at: one QObject holding what is loaded and selected.

Views never talk to each other. They read this object and subscribe to its
signals; whoever changes something (a view, the engine bridge, the main
window) calls a setter here, which stores the value and emits the signal. The
latest value of everything is kept, so a view that was hidden while signals
went by can redraw from the session alone when it is shown again.

Lives in the GUI thread. Workers never touch it: they send copies through
queued signals to the engine bridge, which calls the setters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from PyQt6.QtCore import QObject, pyqtSignal

from engine.pipeline.sorting import Sorting


class TrainingState(str, Enum):
    IDLE = "idle"  # nothing running; Start trains from scratch
    STARTING = "starting"  # worker is preparing the trainer (preprocessing, initial filters)
    TRAINING = "training"
    PAUSED = "paused"
    SORTING = "sorting"  # training finished or stopped; inferring spikes over the whole file


@dataclass(frozen=True)
class RecordingSource:
    """How the current recording was opened, so a saved session can reopen it."""

    path: str
    sampling_rate: float | None = None
    n_channels: int | None = None
    dtype: str | None = None
    offset: int | None = None
    gain_to_uv: float | None = None
    stream: str | None = None  # which stream of a SpikeGLX / Open Ephys folder or NWB file
    probe: str | None = None  # probeinterface JSON or .prb file with the channel positions

    def open_kwargs(self) -> dict:
        """Keyword arguments for engine.io.recording.open_recording (None = read from the file or sidecar)."""
        return {
            "sampling_rate": self.sampling_rate,
            "n_channels": self.n_channels,
            "dtype": self.dtype,
            "offset": self.offset,
            "gain_to_uv": self.gain_to_uv,
            "stream": self.stream,
            "probe": self.probe,
        }


@dataclass(frozen=True)
class SignalUnits:
    """What the views' voltages are in: µV, unless a folder says too little to convert its numbers.

    `data`: the recording as read (traces, waveforms, features, noise σ): µV, or the file's own raw
    units when no gain to µV is known (another tool's phy folder). `templates`: the sort's templates
    (the Units table's peak-to-peak): µV for our sorts, another tool's own template units.
    """

    data: str = "µV"
    templates: str = "µV"


@dataclass
class UnitTable:
    """Per-unit quality numbers for the Units table, aligned on `unit_ids`."""

    unit_ids: np.ndarray  # (n_units,) int32
    n_spikes: np.ndarray  # (n_units,) int64
    firing_rate: np.ndarray  # (n_units,) float Hz
    peak_amplitude: np.ndarray  # (n_units,) float template peak-to-peak on its main channel, in SignalUnits.templates
    snr: np.ndarray  # (n_units,) float, NaN when the noise level is unknown
    isi_violation_ratio: np.ndarray  # (n_units,) float
    labels: list[str] = field(default_factory=list)  # (n_units,) "good" / "mua" / "noise" / ""
    # Filled for a curated sort (app.curation_controller); None shows as "–".
    presence_ratio: np.ndarray | None = None  # (n_units,) float fraction of time bins with spikes
    rp_contamination: np.ndarray | None = None  # (n_units,) float, Llobet et al.
    amplitude_cutoff: np.ndarray | None = None  # (n_units,) float fraction of spikes lost below threshold
    l_ratio: np.ndarray | None = None  # (n_units,) float; NaN without features
    suggested_labels: list[str] | None = None  # (n_units,) by engine.curation.labels rules
    suggested_reasons: list[str] | None = None  # (n_units,) the rules each unit broke, for the tooltip
    # Where each unit sits (engine.curation.unit_positions); None when not known.
    positions: np.ndarray | None = None  # (n_units, 2) float µm (x, y)
    main_channels: np.ndarray | None = None  # (n_units,) int64 channel of the largest peak-to-peak

    @property
    def depth(self) -> np.ndarray | None:
        """(n_units,) float µm: y of each unit's position along the probe."""
        return None if self.positions is None else self.positions[:, 1]


class Session(QObject):
    # Signal names are the view contract: a view that defines `on_<name>` gets it
    # (see app/views/base.py). Keep them few and coarse.
    recording_changed = pyqtSignal()  # new recording (or none); everything below was reset
    trainer_changed = pyqtSignal()  # a trainer exists (initial filters known) or was dropped
    training_state_changed = pyqtSignal(object)  # TrainingState
    training_snapshot = pyqtSignal(object)  # engine.pipeline.training.TrainingSnapshot
    # engine.pipeline.training.WindowReconstruction of (about) the visible window, or None
    window_codes_changed = pyqtSignal(object)
    sorting_changed = pyqtSignal()  # new sorting and/or unit table
    selection_changed = pyqtSignal(tuple)  # tuple[int, ...] of selected unit ids
    time_window_changed = pyqtSignal(float, float)  # visible (start_s, stop_s)
    training_config_changed = pyqtSignal(object)  # engine.pipeline.training.TrainingConfig (valid)
    # engine.curation.model.ChangeRecord of the action just done (merge, split, label, undo, ...),
    # or None: a new curation, or none (see app/curation_controller.py)
    curation_changed = pyqtSignal(object)
    spikes_selected = pyqtSignal(object)  # app.lasso.SpikeSelection drawn in a view, or None
    # engine.curation.suggestions.MergeSuggestions of the curation (kept current by the
    # curation controller), or None while they are being computed
    suggestions_changed = pyqtSignal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.recording = None  # engine Recording, preprocessed: what the views draw
        self.source: RecordingSource | None = None
        self.signal_units = SignalUnits()  # what the recording and the templates are in (set with the recording)
        self.trainer = None  # engine.pipeline.training.Trainer
        # The model's dictionary as last reported by a worker (the GUI never asks the
        # trainer itself: that would wait on its model lock). (n_filters, n_taps,
        # n_channels) unit norm; `initial_filters` is where each one started, or None.
        self.filters: np.ndarray | None = None
        self.initial_filters: np.ndarray | None = None
        self.training_state = TrainingState.IDLE
        self.snapshots: list = []  # every TrainingSnapshot of the current run, for the curves
        self.window_codes = None  # engine.pipeline.training.WindowReconstruction
        self.sorting: Sorting | None = None
        self.unit_table: UnitTable | None = None
        self.selected_units: tuple[int, ...] = ()
        self.time_window: tuple[float, float] = (0.0, 1.0)
        self.training_config = None  # engine.pipeline.training.TrainingConfig the next Start will use
        self.curation = None  # engine.curation.model.Curation of `sorting`, once app.curation_controller opened it
        self.selected_spikes = None  # app.lasso.SpikeSelection: spikes picked with a lasso, for a split
        self.merge_suggestions = None  # engine.curation.suggestions.MergeSuggestions of `curation`, or None

    # ---- recording -------------------------------------------------------------
    def set_recording(self, recording, source: RecordingSource | None, signal_units: SignalUnits | None = None) -> None:
        """Replace the recording; drops the trainer, sorting and selection that belonged to the old one.

        `signal_units`: what it (and the sort that comes with it) is in; None: µV."""
        self.recording = recording
        self.source = source
        self.signal_units = signal_units or SignalUnits()
        self.trainer = None
        self.filters = self.initial_filters = None
        self.snapshots = []
        self.window_codes = None
        self.sorting = None
        self.unit_table = None
        self.curation = None
        self.selected_spikes = None
        self.selected_units = ()
        self.training_state = TrainingState.IDLE
        duration = recording.duration if recording is not None else 1.0
        self.time_window = (0.0, min(1.0, duration))
        self.recording_changed.emit()

    # ---- training --------------------------------------------------------------
    def set_trainer(self, trainer, filters: np.ndarray, initial_filters: np.ndarray | None) -> None:
        self.trainer = trainer
        self.filters, self.initial_filters = filters, initial_filters
        self.snapshots = []
        self.window_codes = None
        self.trainer_changed.emit()

    def set_training_state(self, state: TrainingState) -> None:
        if state != self.training_state:
            self.training_state = state
            self.training_state_changed.emit(state)

    def add_snapshot(self, snapshot) -> None:
        self.snapshots.append(snapshot)
        self.filters = snapshot.filters
        self.training_snapshot.emit(snapshot)

    @property
    def latest_snapshot(self):
        return self.snapshots[-1] if self.snapshots else None

    def set_window_codes(self, window) -> None:
        self.window_codes = window
        self.window_codes_changed.emit(window)

    # ---- sorting and selection ---------------------------------------------------
    def set_sorting(
        self,
        sorting: Sorting | None,
        unit_table: UnitTable | None,
        dictionary: tuple[np.ndarray, np.ndarray | None] | None = None,
    ) -> None:
        """`dictionary`: (filters, initial_filters) when sorting changed the model's
        filters (it merges duplicates and drops idle ones), else None."""
        if dictionary is not None:
            self.filters, self.initial_filters = dictionary
            # Codes computed with the old dictionary would be labelled with the new units.
            self.window_codes = None
        if sorting is not self.sorting:
            # They belonged to the previous sorting; the curation controller opens the new one's.
            self.curation = None
            self.selected_spikes = None
        self.sorting = sorting
        self.unit_table = unit_table
        known = set(unit_table.unit_ids.tolist()) if unit_table is not None else set()
        self.sorting_changed.emit()
        self.select_units(tuple(u for u in self.selected_units if u in known))

    def filter_unit_ids(self, n_filters: int) -> np.ndarray:
        """(n_filters,) int the unit each of the model's filters became, -1 if none.

        While training, filter k is (provisionally) unit k. Sorting merges
        duplicate filters and drops unused ones; it records in
        `sorting.filter_index` the filter each unit came from.
        """
        filter_index = self.sorting.filter_index if self.sorting is not None else None
        if filter_index is None:
            return np.arange(n_filters)
        units = np.full(n_filters, -1)
        for unit, index in enumerate(np.asarray(filter_index).tolist()):
            # A filter split by amplitude has two units; the first (its own number) stands for it.
            if 0 <= index < n_filters and units[index] < 0:
                units[index] = unit
        return units

    def select_units(self, unit_ids) -> None:
        """Select these units. A lasso drawn around the previous selection's spikes is dropped:
        K would otherwise split spikes of units no longer on screen."""
        selection = tuple(int(u) for u in unit_ids)
        if selection != self.selected_units:
            self.selected_units = selection
            self.selection_changed.emit(selection)
            if self.selected_spikes is not None:
                self.select_spikes(None)

    # ---- curation --------------------------------------------------------------
    def set_curation(self, curation, unit_table: UnitTable | None, record=None, selection=None) -> None:
        """A new curation of the sorting (record None), or one action done on it (its ChangeRecord).

        The Units table's rows are the curation's current units, so the table
        comes along. `selection`: the units to select now (default: those
        selected that still exist). A lasso selection does not survive: its
        spikes may belong to other units now.
        """
        self.curation = curation
        self.unit_table = unit_table
        had_lasso = self.selected_spikes is not None
        self.selected_spikes = None
        known = set(unit_table.unit_ids.tolist()) if unit_table is not None else set()
        wanted = self.selected_units if selection is None else selection
        self.selected_units = tuple(int(u) for u in wanted if int(u) in known)
        self.curation_changed.emit(record)
        self.sorting_changed.emit()
        self.selection_changed.emit(self.selected_units)
        if had_lasso:
            self.spikes_selected.emit(None)  # the views erase the lasso's outline

    def set_merge_suggestions(self, suggestions) -> None:
        """The merge suggestions of the curation (None: not computed yet); emitted again after each action."""
        self.merge_suggestions = suggestions
        self.suggestions_changed.emit()

    def select_spikes(self, selection) -> None:
        """selection: app.lasso.SpikeSelection, or None to clear it."""
        self.selected_spikes = selection
        self.spikes_selected.emit(selection)

    def set_training_config(self, config) -> None:
        self.training_config = config
        self.training_config_changed.emit(config)

    # ---- time ------------------------------------------------------------------
    def set_time_window(self, start_s: float, stop_s: float) -> None:
        """The time range on screen; Traces and Codes both follow it."""
        window = (float(start_s), float(stop_s))
        # Views echo the range back after applying it; a tolerance stops the ping-pong.
        if max(abs(window[0] - self.time_window[0]), abs(window[1] - self.time_window[1])) < 1e-9:
            return
        self.time_window = window
        self.time_window_changed.emit(*window)
